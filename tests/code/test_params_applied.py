"""Every param a training stage lists in `dvc.yaml` reaches what the stage builds, and no other does.

Each training stage's `build(params)` returns the `StageFit` that `fit_stage` runs: the Lightning
module, the data module and the Trainer's settings. For every leaf param of the sections the training
stages read, the test changes that one value, builds again, and compares what was built (the module's
hyperparameters and configs, the optimizers it creates, the data config and loader settings, the
Trainer's arguments, the seed, the output folder): it must differ exactly when `dvc.yaml` lists the
param for that stage. A param that is validated and logged but not applied (the old positional build
that dropped `pretrain_inpainter.schedule`) fails the first direction; a param the stage reads but DVC
does not know of (so changing it would not re-run the stage) fails the second.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from pipelines.params import ParamsError, parse_params
from pipelines.stages import finetune_joint, pretrain_inpainter, pretrain_segmenter
from pipelines.training import inpainter_module
from tests.conftest import REPO

TRAINING_STAGES = ("pretrain_segmenter", "pretrain_inpainter", "finetune_joint", "finetune_joint_ablation")
READ_SECTIONS = ("seed", "networks", "trainer", "pretrain_segmenter", "pretrain_inpainter", "finetune_joint")
# other valid values of the string params (a leaf not here and not a number, bool or list is a path)
ALTERNATIVES = {"schedule": {"cosine": "constant", "constant": "cosine"},
                "normalize_by": {"image": "batch", "batch": "image"},
                "image_inputs": {"predicted": "ground_truth"}, "image_head": {"residual01": "tanh01"},
                "hole_fill": {"smooth": "white"}, "precision": {"32-true": "bf16-mixed", "auto": "16-mixed"},
                "strategy": {"auto": "ddp"}, "accelerator": {"cpu": "gpu"},
                "normalization": {"max_abs": "diagonal"}, "reduction": {"mean": "sum"},
                "features": {"discriminator": "vgg19"}, "channels_last": {"segmenter": "inpainter"},
                "mask_gradient": {"inputs": "composite", "composite": "inputs"}}
# a change that is only valid together with another one: both are applied to the base as well
COMPANIONS = {"networks.inpainter.hole_fill": {"networks.inpainter.image_head": "tanh01"},
              "pretrain_inpainter.features": {"pretrain_inpainter.vgg19_weights": "/weights/vgg19.pth"}}
OUTPUT = {"pretrain_segmenter": "segmenter", "pretrain_inpainter": "inpainter", "finetune_joint": "joint",
          "finetune_joint_ablation": "joint_ablation"}
BUILDERS = {"pretrain_segmenter": pretrain_segmenter.build, "pretrain_inpainter": pretrain_inpainter.build,
            "finetune_joint": lambda p: finetune_joint.build(p, load_weights=False),
            "finetune_joint_ablation": lambda p: finetune_joint.build(p, ablation=True, load_weights=False)}


def _listed(stage: str) -> list[str]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["params"]


def _leaves(tree, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    return [prefix[:-1]]


def _get(raw: dict, key: str):
    for part in key.split("."):
        raw = raw[part]
    return raw


def _set(raw: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        raw = raw[part]
    raw[last] = value


def _changed(key: str, value):
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, bool):
        return not value
    if key == "networks.image_size":
        return 2 * value  # a multiple of 8 that the segmenter's size still divides
    if key == "networks.segmenter.image_size":
        return value // 2  # still a multiple of 2**depth that divides networks.image_size
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value > 0 else 0.125
    if isinstance(value, list):
        return [_changed(key, value[0]), *value[1:]]
    if key == "pretrain_inpainter.object_pairs":
        return 4  # the first 4 training pairs
    if value is None:
        return "/weights/other.pth"
    if name in ALTERNATIVES:
        return ALTERNATIVES[name][value]
    return f"{value}_changed"


def _observe(fit) -> str:
    """What a stage built, as text: everything `fit_stage` hands Lightning, and the optimizers' settings."""
    module, data = fit.module, fit.data
    # the inpainting modules' Adam settings as built (the segmenter's AdamW reads its hparams directly)
    optimizers = module.build_optimizers() if hasattr(module, "build_optimizers") else []
    groups = [{k: v for k, v in group.items() if k != "params"} for opt in optimizers for group in opt.param_groups]
    seen = {"hparams": dict(module.hparams), "data": asdict(data.config), "batch_size": data.batch_size,
            "num_workers": data.num_workers, "mask_source": data.mask_source,
            "object_pairs": getattr(data, "object_pairs", None), "trainer": fit.trainer_arguments(),
            "random_mask_epochs": fit.random_mask_epochs, "folder": str(fit.folder), "seed": torch.initial_seed(),
            "optimizers": groups, "channels_last": sorted(
                name for name, p in module.named_parameters()
                if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last))}
    return json.dumps(seen, sort_keys=True, default=repr)


@pytest.fixture
def build(tiny, monkeypatch):
    """build(stage, raw) -> what the stage builds; the local VGG-19 file is stood in for by a stub
    network (features: vgg19 then needs no weights file; the real loader's tests are in test_training.py)."""
    monkeypatch.setattr(inpainter_module, "load_vgg19", lambda path: nn.Identity())

    def run(stage: str, raw: dict) -> str:
        return _observe(BUILDERS[stage](parse_params(raw)))

    return run


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_each_listed_param_changes_the_build_and_no_other(stage, tiny, build):
    _, raw = tiny
    listed = _listed(stage)
    candidates = ["seed", f"paths.{OUTPUT[stage]}",
                  *(leaf for section in READ_SECTIONS[1:] for leaf in _leaves(raw[section], f"{section}."))]
    missing, unlisted = [], []
    unchanged = build(stage, raw)  # the base of every key without companion changes: built once
    for key in candidates:
        base_raw = copy.deepcopy(raw)
        for other, value in COMPANIONS.get(key, {}).items():
            _set(base_raw, other, value)
        changed_raw = copy.deepcopy(base_raw)
        _set(changed_raw, key, _changed(key, _get(base_raw, key)))
        try:
            base = build(stage, base_raw) if key in COMPANIONS else unchanged
            differs = base != build(stage, changed_raw)
        except ParamsError as err:  # not a valid change on its own: say which, so a companion is added
            pytest.fail(f"{key}: the changed value is invalid ({err}); add a companion change")
        is_listed = any(key == item or key.startswith(f"{item}.") for item in listed)
        if is_listed and not differs:
            missing.append(key)
        if differs and not is_listed:
            unlisted.append(key)
    assert not missing, f"{stage}: params listed in dvc.yaml that change nothing it builds: {missing}"
    assert not unlisted, f"{stage}: params it applies that dvc.yaml does not list: {unlisted}"


def test_configs_equal_their_params_sections(tiny, build):
    """The component configs carry the params' values field by field (the schedule included)."""
    _, raw = tiny
    params = parse_params(raw)
    fit = pretrain_inpainter.build(params)
    p = params.pretrain_inpainter
    assert asdict(fit.module.optim_config) == {"lr": p.lr, "d_lr_ratio": p.d_lr_ratio, "betas": tuple(p.betas),
                                               "schedule": p.schedule}
    assert asdict(fit.module.w) == p.losses.model_dump()
    config = asdict(fit.module.config)
    assert {k: config[k] for k in params.networks.inpainter.model_dump()} == params.networks.inpainter.model_dump()
    joint = finetune_joint.build(params, load_weights=False)
    j, mel = params.finetune_joint, params.finetune_joint.mel
    assert asdict(joint.module.joint) == {
        "target_classes": joint.module.joint.target_classes, "segmenter_lr": j.segmenter_lr,
        "segmentation_weight": j.segmentation_weight, "margin": j.selection_margin, "mel_enabled": mel.enabled,
        "mel_alpha": mel.alpha, "mel_weight": mel.weight, "mel_reduction": mel.reduction,
        "offset_weight": j.offset_weight, "dice_weight": j.dice_weight, "map_gradient": j.map_gradient,
        "mask_gradient": j.mask_gradient, "composite_weight": j.composite_weight, "spare_others": j.spare_others}
    assert asdict(joint.module.optim_config)["schedule"] == j.schedule
    assert joint.data.config.sdf_normalization == mel.normalization
    assert joint.data.config.offsets is params.networks.segmenter.offsets is True
    segmenter = pretrain_segmenter.build(params)
    assert segmenter.module.net.offsets is not None and segmenter.data.config.offsets
    assert segmenter.module.hparams["offset_weight"] == params.pretrain_segmenter.offset_weight
    assert segmenter.module.hparams["dice_weight"] == params.pretrain_segmenter.dice_weight


def test_a_training_set_smaller_than_one_batch_is_an_error(tiny):
    _, raw = tiny
    raw = copy.deepcopy(raw)
    raw["pretrain_segmenter"]["batch_size"] = 17  # the tiny train split has 16 pairs
    fit = pretrain_segmenter.build(parse_params(raw))
    with pytest.raises(ValueError, match=r"train split of .* has 16 pairs, fewer than one batch \(batch_size 17\)"):
        fit.data.setup("fit")


def test_the_cosine_schedule_is_applied_step_by_step(trained):
    """The learning rate of every training stage's run, logged per step to MLflow, follows its schedule:
    the cosine decays at every step, the constant does not move."""
    from mlflow.tracking import MlflowClient

    raw = trained
    uri = f"sqlite:///{Path(raw['paths']['reports']).parent}/mlflow.db"
    client = MlflowClient(uri)
    for stage, folder, name in (("pretrain_segmenter", "segmenter", "segmenter"),
                                ("pretrain_inpainter", "inpainter", "inpainter"),
                                ("finetune_joint", "joint", "joint")):
        info = json.loads((Path(raw["paths"][folder]) / f"{name}.json").read_text())
        history = sorted(client.get_metric_history(info["mlflow_run_id"], "lr/0"), key=lambda m: m.step)
        rates = [m.value for m in history]
        assert len(rates) >= 3, f"{stage}: lr logged {len(rates)} times"
        assert raw[stage]["schedule"] == "cosine"
        assert all(b < a for a, b in zip(rates, rates[1:])), f"{stage}: lr not decaying step by step: {rates}"
        assert rates[0] < raw[stage]["lr"]  # logged after the first scheduler step
