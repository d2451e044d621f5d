"""Training and evaluation: a Lightning fast_dev_run per module, the stages end to end on tiny data (MLflow
run, checkpoints, metrics, resume), a 2-process CPU DDP run of a stage, and the evaluate stage's reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import lightning as L
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from components.inpainting import InpaintingConfig
from components.segmenter import SegmenterConfig
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import Params, parse_params
from pipelines.stages import evaluate, evaluate_inpainter, finetune_joint, pretrain_inpainter, pretrain_segmenter
from pipelines.training.harness import resolve_precision
from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig
from pipelines.training.joint_module import JointConfig, JointModule
from pipelines.training.segmenter_module import SegmenterModule
from tests.conftest import REPO


def _data(raw: dict, sdf: str | None = None) -> tuple:
    config, categories, targets = pairs_config(raw["paths"]["pairs"], 32, 1.0, 0, sdf)
    return PairsDataModule(config, batch_size=4, num_workers=0), len(categories) + 1, targets


def _joint(num_classes: int, targets: list[int], **joint) -> JointModule:
    inpainting = InpaintingConfig(num_classes, 8, 1, 2, 8, "smooth", "residual01")
    return JointModule(inpainting, SegmenterConfig(num_classes, 8, 2), JointConfig(tuple(targets), 1e-3, **joint),
                       LossWeights(), OptimConfig(1e-3))


def _changed(module: L.LightningModule, before: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())]


def test_fast_dev_run_segmenter(tiny):
    data, num_classes, targets = _data(tiny[1])
    module = SegmenterModule(SegmenterConfig(num_classes, 8, 2), targets, lr=1e-3, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(module, data)
    assert trainer.global_step == 1
    assert len(_changed(module, before)) == len(before)
    assert "val/mask_iou" in trainer.callback_metrics


def test_fast_dev_run_inpainter(tiny):
    data, num_classes, _ = _data(tiny[1])
    module = InpainterModule(InpaintingConfig(num_classes, 8, 1, 2, 8), LossWeights(), OptimConfig())
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(module, data)
    changed = _changed(module, before)
    assert any(n.startswith("nets.edge") for n in changed) and any(n.startswith("discs.image") for n in changed)
    assert all(n in changed for n in before if n.startswith("nets."))  # every generator weight moved
    metrics = trainer.callback_metrics
    assert {"val/psnr_mask", "val/psnr_mask_telea", "val/ssim"} <= set(metrics)


def test_short_run_joint(tiny):
    data, num_classes, targets = _data(tiny[1], sdf="max_abs")
    module = _joint(num_classes, targets)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    # two steps: the residual image head's output convolution starts at zero, so the first step moves
    # only that layer of the image generator (fast_dev_run=2 would stop after one: under manual
    # optimization every optimizer's step counts)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(module, data)
    changed = _changed(module, before)
    missing = [n for n in before if n.startswith(("segmenter.", "nets.")) and n not in changed]
    assert not missing, missing
    assert {"val/psnr", "val/coverage", "val/mask_ratio", "val/found", "val/mel"} <= set(trainer.callback_metrics)
    assert {"train/mel", "train/coverage", "train/mask_ratio"} <= set(trainer.callback_metrics)


def test_inpainting_losses_reach_the_segmenter(tiny):
    """With L_PS and MEL switched off, the image inpainter's loss alone still moves the segmenter:
    through the straight-through mask the generators see."""
    data, num_classes, targets = _data(tiny[1], sdf="max_abs")
    data.setup()
    batch = next(iter(data.train_dataloader()))
    module = _joint(num_classes, targets, segmentation_weight=0.0, mel_enabled=False)
    logits = module.segmenter(batch["image"])
    from components.selection import training_mask

    mask, _, _ = training_mask(logits, targets, batch["mask"], margin=4)
    fake = module._generate(batch, mask=mask, seg_in=logits.softmax(1).detach())
    module.generator_losses(fake, batch, mask.detach())["loss_image"].backward()
    grads = {n: p.grad for n, p in module.segmenter.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert sum(1 for g in grads.values() if g.abs().sum() > 0) >= 0.9 * len(grads)



def test_with_the_composite_signal_only_the_composite_reaches_the_segmenter(tiny):
    """mask_gradient "composite": L_C moves the segmenter; the inpainters' own losses do not (the
    generators see the mask detached), and L_C leaves the generators to their own losses."""
    data, num_classes, targets = _data(tiny[1], sdf="max_abs")
    data.setup()
    batch = next(iter(data.train_dataloader()))
    module = _joint(num_classes, targets, segmentation_weight=0.0, mel_enabled=False, mask_gradient="composite",
                    composite_weight=1.0)
    step = module.segment_and_inpaint(batch)
    g = module.generator_losses(step.fake, batch, step.mask.detach())
    segmenter = list(module.segmenter.parameters())
    inpainters = [p for p in module.nets.parameters()]
    through_fill = torch.autograd.grad(g["loss_image"] + g["loss_seg"] + g["loss_edge"], segmenter,
                                       retain_graph=True, allow_unused=True)
    assert all(grad is None or not grad.any() for grad in through_fill)
    assert step.loss_c.item() > 0
    from_composite = torch.autograd.grad(step.loss_c, segmenter, retain_graph=True, allow_unused=True)
    assert sum(float(grad.abs().sum()) for grad in from_composite if grad is not None) > 0
    assert all(grad is None for grad in torch.autograd.grad(step.loss_c, inpainters, allow_unused=True))

def test_segmenter_stage_tracks_resumes_and_writes(tiny, mlflow_store):
    tmp, raw = tiny
    info = pretrain_segmenter.run(parse_params(raw))
    folder = Path(raw["paths"]["segmenter"])
    assert (folder / "last.ckpt").is_file() and (folder / "best.ckpt").is_file()
    saved = json.loads((folder / "segmenter.json").read_text())
    assert saved["step"] == info["step"] > 0 and saved["started_at_step"] == 0
    assert saved["classes"][0]["index"] == 1 and saved["target_classes"] == [1]
    metrics = json.loads((Path(raw["paths"]["reports"]) / "pretrain_segmenter.json").read_text())
    assert 0.0 <= metrics["val_mask_iou"] <= 1.0
    curve = json.loads((Path(raw["paths"]["reports"]) / "plots" / "pretrain_segmenter.json").read_text())
    assert [row["epoch"] for row in curve] == [0] and "train_loss" in curve[0]
    # the MLflow run: params, per-epoch metrics, a sample grid, provenance tags
    client = MlflowClient(mlflow_store)
    run = client.get_run(saved["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["pretrain_segmenter.batch_size"] == "4"
    assert run.data.tags["stage"] == "pretrain_segmenter" and "git_revision" in run.data.tags
    assert "val/mask_iou" in run.data.metrics and "train/loss_epoch" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert artifacts == ["samples/segmenter_epoch_000.png"]
    # a finished run again (as DVC re-runs a stage whose plot file is gone): no epoch runs, the rows are back
    plot = Path(raw["paths"]["reports"]) / "plots" / "pretrain_segmenter.json"
    plot.unlink()
    assert pretrain_segmenter.run(parse_params(raw))["step"] == info["step"]
    assert json.loads(plot.read_text()) == curve
    # training longer with the same params resumes from the last checkpoint
    raw2 = json.loads(json.dumps(raw))
    raw2["pretrain_segmenter"]["epochs"] = 2
    again = pretrain_segmenter.run(parse_params(raw2))
    assert again["started_at_step"] == info["step"] > 0 and again["step"] == 2 * info["step"]
    # other params: the old checkpoints are not resumed
    raw2["pretrain_segmenter"]["lr"] = 0.01
    fresh = pretrain_segmenter.run(parse_params(raw2))
    assert fresh["started_at_step"] == 0


def test_inpainter_stage(tiny, mlflow_store):
    tmp, raw = tiny
    info = pretrain_inpainter.run(parse_params(raw))
    folder = Path(raw["paths"]["inpainter"])
    assert (folder / "best.ckpt").is_file() and json.loads((folder / "inpainter.json").read_text())["step"] > 0
    assert {"val_psnr_mask", "val_psnr_mask_telea"} <= set(info["metrics"])
    run = MlflowClient(mlflow_store).get_run(info["mlflow_run_id"])
    assert run.data.params["pretrain_inpainter.losses.image_l1"] == "1.0"
    assert run.data.params["pretrain_inpainter.schedule"] == raw["pretrain_inpainter"]["schedule"]
    # `precision: auto` resolved on this machine, recorded where a user compares runs
    resolved = resolve_precision(raw["pretrain_inpainter"]["precision"], "cpu")
    assert run.data.tags["precision"] == resolved == json.loads((folder / "inpainter.json").read_text())["precision"]


def test_auto_precision_is_bf16_exactly_where_the_cpu_computes_it_natively(monkeypatch):
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert resolve_precision("32-true", "cpu") == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"  # emulated bf16: many times slower, so fp32


def test_random_mask_pretraining_then_object_masks(tiny, mlflow_store):
    tmp, raw = tiny
    raw = json.loads(json.dumps(raw))
    raw["pretrain_inpainter"].update(epochs=2, random_mask_epochs=1)
    raw["paths"]["inpainter"] = str(tmp / "models" / "inpainter_random")
    info = pretrain_inpainter.run(parse_params(raw))
    assert info["epoch"] == 2


def test_joint_stage_from_pretrained(tiny, mlflow_store):
    tmp, raw = tiny
    params = parse_params(raw)
    for stage, folder in ((pretrain_segmenter, "segmenter"), (pretrain_inpainter, "inpainter")):
        if not (Path(raw["paths"][folder]) / "best.ckpt").is_file():
            stage.run(params)
    info = finetune_joint.run(params)
    metrics = info["metrics"]
    assert {"val_psnr", "val_coverage", "val_mask_ratio", "pretrained_val_psnr", "pretrained_val_coverage"} <= set(
        metrics)
    saved = json.loads((Path(raw["paths"]["joint"]) / "joint.json").read_text())
    assert saved["step"] > 0 and saved["config"]["joint"]["mel_alpha"] == 0.03
    run = MlflowClient(mlflow_store).get_run(info["mlflow_run_id"])
    assert run.data.tags["stage"] == "finetune_joint"
    assert run.data.params["finetune_joint.mel.enabled"] == "True"
    assert {"val/coverage", "val/mask_ratio", "train/mel_epoch", "pretrained/psnr"} <= set(run.data.metrics)
    assert json.loads((Path(raw["paths"]["reports"]) / "finetune_joint.json").read_text()) == metrics


def test_joint_stage_refuses_mismatched_or_missing_checkpoints(tiny, tmp_path):
    _, raw = tiny
    raw = json.loads(json.dumps(raw))
    raw["paths"]["joint"] = str(tmp_path / "joint")
    raw["networks"]["inpainter"]["width"] = 16
    with pytest.raises(ValueError, match=r"inpainter/best.ckpt does not match params.networks \(width: checkpoint 8"):
        finetune_joint.run(parse_params(raw))
    raw["paths"]["segmenter"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"not found: .*nowhere/best.ckpt \(run `dvc repro pretrain_segmenter`"):
        finetune_joint.run(parse_params(raw))


@pytest.mark.slow
def test_two_process_cpu_ddp(tiny, tmp_path):
    """The scale-out path for real: Lightning launches a second process, gloo all-reduces gradients."""
    _, raw = tiny
    raw = json.loads(json.dumps(raw))
    raw["trainer"].update(devices=2, strategy="ddp")
    raw["paths"]["segmenter"] = str(tmp_path / "ddp_segmenter")
    raw["paths"]["reports"] = str(tmp_path / "reports")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", NO_ALBUMENTATIONS_UPDATE="1")
    done = subprocess.run([sys.executable, "-m", "pipelines.stages.pretrain_segmenter", "--params", str(params_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout
    saved = json.loads((tmp_path / "ddp_segmenter" / "segmenter.json").read_text())
    assert saved["step"] == 2  # 16 pairs / (batch 4 x 2 processes)
    runs = MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(
        [MlflowClient(env["MLFLOW_TRACKING_URI"]).get_experiment_by_name("object-removal").experiment_id])
    assert len(runs) == 1  # only the launching rank tracks


def test_vgg_option_without_file_is_a_clear_error(tiny):
    _, raw = tiny
    raw = json.loads(json.dumps(raw))
    raw["pretrain_inpainter"].update(features="vgg19", vgg19_weights="/nowhere/vgg19.pth")
    params: Params = parse_params(raw)
    with pytest.raises(FileNotFoundError, match="VGG-19 weights file not found: /nowhere/vgg19.pth"):
        pretrain_inpainter.run(params)


def test_evaluate_stage_writes_every_report(trained, mlflow_store):
    raw = trained
    info = evaluate.run(parse_params(raw))
    reports = Path(raw["paths"]["reports"])
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"joint_mel", "joint_no_mel", "pretrained", "pretrained_dilate", "telea",
                                       "navier_stokes", "oracle"}
    oracle = metrics["methods"]["oracle"]["all"]
    assert oracle["coverage"] == 1.0 and oracle["over_expansion"] == 1.0
    assert oracle["leftover_share"] == 0.0 and oracle["clean"] == 1.0
    assert oracle["iou"] == 1.0 and oracle["n"] == metrics["pairs"] == 4
    pretrained, dilated = metrics["methods"]["pretrained"]["all"], metrics["methods"]["pretrained_dilate"]["all"]
    if pretrained["over_expansion"] is not None and pretrained["over_expansion"] > 0:
        assert dilated["over_expansion"] > pretrained["over_expansion"]
    assert metrics["perceptual"]["lpips"].startswith("skipped") and metrics["fid"] is None
    rows = json.loads((reports / "plots" / "evaluate_buckets.json").read_text())
    assert all("mask_ratio_pct" in r and "joint_mel" in r for r in rows)
    grid = cv2.imread(str(reports / "samples.png"))
    assert grid.shape[0] > 9 * 64 and grid.shape[1] > 5 * 64  # 3 x 3 rows of 5 tiles, 32 px shown at 2x
    report = (reports / "evaluation.md").read_text()
    assert "## Table I" not in report and "| joint_mel |" in report and "![samples](samples.png)" in report
    run = MlflowClient(mlflow_store).get_run(info["mlflow_run_id"])
    assert run.data.tags["stage"] == "evaluate"
    assert run.data.metrics["methods/oracle/all/coverage"] == 1.0
    artifacts = {a.path for a in MlflowClient(mlflow_store).list_artifacts(run.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/metrics.json", "evaluation/evaluation.md", "evaluation/samples.png"}

    # the paper's Table I: the same pretrained inpainters on the true mask, eroded and dilated
    table = evaluate_inpainter.run(parse_params(raw))
    size = raw["networks"]["image_size"]
    assert table["offsets"] == {f"{d:g}": d * size / 256 for d in (-2, 0, 2, 4, 6, 8)}
    assert table["table1"]["0"]["all"]["psnr"] == pytest.approx(oracle["psnr"], abs=1e-3)  # offset 0 = the oracle
    per_pair = table["per_pair"]["psnr"]
    assert all(len(v) == 4 for v in per_pair.values()) and per_pair["0"] != per_pair["8"]  # 2 px at 32
    assert table["telea"]["all"]["n"] == 4 and table["telea"]["all"]["psnr"] != table["table1"]["0"]["all"]["psnr"]
    headline = json.loads((reports / "headline" / "evaluate_inpainter.json").read_text())
    assert headline["psnr"] == table["table1"]["0"]["all"]["psnr"]
    plotted = json.loads((reports / "plots" / "table1.json").read_text())
    assert [r["offset_paper_px"] for r in plotted] == [-2.0, 0.0, 2.0, 4.0, 6.0, 8.0]
    assert MlflowClient(mlflow_store).get_run(table["mlflow_run_id"]).data.tags["stage"] == "evaluate_inpainter"


def test_evaluate_with_local_lpips_and_fid_files(trained, tmp_path, mlflow_store):
    from components.perceptual_metrics import LPIPS
    from tests.code.test_evaluation import TinyInception

    torch.manual_seed(0)
    source = LPIPS()
    torch.save({f"features.{k}": v for k, v in source.features.state_dict().items()}, tmp_path / "vgg16.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand_like(lin.weight) for k, lin in enumerate(source.lins)},
               tmp_path / "heads.pth")
    torch.jit.script(TinyInception()).save(str(tmp_path / "inception.pt"))
    raw = json.loads(json.dumps(trained))
    raw["paths"]["reports"] = str(tmp_path / "reports")
    raw["evaluate"].update(lpips_vgg16_weights=str(tmp_path / "vgg16.pth"), lpips_heads=str(tmp_path / "heads.pth"),
                           fid_inception=str(tmp_path / "inception.pt"))
    metrics = evaluate.run(parse_params(raw))
    assert metrics["perceptual"]["lpips"] == "computed" and metrics["methods"]["oracle"]["all"]["lpips"] >= 0
    assert set(metrics["fid"]) == set(metrics["methods"]) and all(v >= -1e-6 for v in metrics["fid"].values())
    raw["evaluate"]["fid_inception"] = str(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="FID Inception TorchScript file not found"):
        evaluate.run(parse_params(raw))
