"""python -m pipelines.stages.finetune_joint [--params params.yaml]

Stage `finetune_joint`: the pretrained segmenter connected to the three pretrained inpainters and
trained end to end with L_SN = L_PS + L_E + L_S + L_I + lambda_X * L_X (the mask expansion loss; off
with `finetune_joint.mel.enabled: false`, the ablation). Starts from `paths.segmenter/best.ckpt` and
`paths.inpainter/best.ckpt`; their networks must match `networks` in params. Before training, the
pretrained pair is validated the same way, so `reports/finetune_joint.json` holds both `val_*` (joint)
and `pretrained_val_*` (segmenter + inpainter as pretrained). Writes `paths.joint/{last,best}.ckpt`
and `joint.json`; per-epoch curves in `reports/plots/finetune_joint.json`; tracked in MLflow.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L

from components.inpainting import InpaintingConfig
from components.segmenter import SegmenterConfig
from pipelines.checkpoints import read_checkpoint, sub_state
from pipelines.common import stage_main
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import FinetuneJointParams, Params, ParamsError
from pipelines.training.harness import fit_stage
from pipelines.training.inpainter_module import LossWeights, OptimConfig
from pipelines.training.joint_module import JointConfig, JointModule

log = logging.getLogger("finetune_joint")
STAGE = "finetune_joint"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_pretrained(module: JointModule, segmenter_ckpt: Path, inpainter_ckpt: Path) -> None:
    """Copy the pretrained weights into `module`, after checking that their networks match its own."""
    segmenter = read_checkpoint(segmenter_ckpt, "pretrain_segmenter")
    inpainter = read_checkpoint(inpainter_ckpt, "pretrain_inpainter")
    expected = {segmenter_ckpt: (segmenter["hyper_parameters"]["config"], asdict(module.segmenter.config)),
                inpainter_ckpt: (inpainter["hyper_parameters"]["config"], asdict(module.config))}
    for path, (found, wanted) in expected.items():
        differ = sorted(k for k in wanted if found.get(k) != wanted[k])
        if differ:
            pairs = ", ".join(f"{k}: checkpoint {found.get(k)!r} vs params {wanted[k]!r}" for k in differ)
            raise ParamsError(f"{path} does not match params.networks ({pairs}); re-run its pretraining stage")
    module.segmenter.load_state_dict(sub_state(segmenter["state_dict"], "net."))
    module.nets.load_state_dict(sub_state(inpainter["state_dict"], "nets."))
    module.discs.load_state_dict(sub_state(inpainter["state_dict"], "discs."))


def pretrained_checkpoints(params: Params) -> tuple[Path, Path]:
    """The checkpoints joint training starts from: the pretrained segmenter's and inpainters' best."""
    return Path(params.paths.segmenter) / "best.ckpt", Path(params.paths.inpainter) / "best.ckpt"


def build(
    params: Params, section: FinetuneJointParams, signed_distance: bool = True
) -> tuple[JointModule, PairsDataModule, list[dict], list[int]]:
    """The joint module with the pretrained weights loaded, its data (with `phi` per item when
    `signed_distance`), the categories and the target classes, for one `finetune_joint`-shaped
    `section` of params (the ablation passes its own)."""
    p, nets, pi = section, params.networks, params.pretrain_inpainter
    data_config, categories, targets = pairs_config(params.paths.pairs, nets.image_size, pi.canny_sigma, p.seed,
                                                    p.mel.normalization if signed_distance else None)
    n, s = nets.inpainter, nets.segmenter
    inpainting = InpaintingConfig(len(categories) + 1, n.width, n.residual_blocks, n.dilation,
                                  n.discriminator_width, n.hole_fill, n.image_head)
    segmenter = SegmenterConfig(len(categories) + 1, s.width, s.depth)
    joint = JointConfig(tuple(targets), p.segmenter_lr, p.segmentation_weight, p.selection_margin, p.mel.enabled,
                        p.mel.alpha, p.mel.weight, p.mel.reduction)
    module = JointModule(inpainting, segmenter, joint, LossWeights(**p.losses.model_dump()),
                         OptimConfig(p.lr, p.d_lr_ratio, p.betas, p.schedule), pi.features, pi.vgg19_weights)
    load_pretrained(module, *pretrained_checkpoints(params))
    data = PairsDataModule(replace(data_config, background_share=p.background_share), p.batch_size,
                           params.trainer.num_workers)
    return module, data, categories, targets


def run(params: Params, experiment: str = "object-removal", ablation: bool = False) -> dict:
    """Fine-tune end to end; `ablation` trains the same thing without MEL into `paths.joint_ablation`
    (stage `finetune_joint_ablation`), the comparison the evaluation reports."""
    p, nets, tp, pi = params.finetune_joint, params.networks, params.trainer, params.pretrain_inpainter
    stage, folder = STAGE, Path(params.paths.joint)
    if ablation:
        p = p.model_copy(update={"mel": p.mel.model_copy(update={"enabled": False})})
        stage, folder = f"{STAGE}_ablation", Path(params.paths.joint_ablation)
    inherited = {"features": pi.features, "vgg19_weights": pi.vgg19_weights, "canny_sigma": pi.canny_sigma}
    # the ablation reads no MEL param (no phi in its data either), so sweeping alpha does not re-run it
    section = {stage: p.model_dump(mode="json", exclude={"mel"} if ablation else None),
               "networks": nets.model_dump(mode="json"), "trainer": tp.model_dump(mode="json"), "seed": params.seed,
               "pretrain_inpainter": inherited}
    L.seed_everything(params.seed + p.seed, workers=True, verbose=False)
    module, data, categories, targets = build(params, p, signed_distance=not ablation)
    segmenter_ckpt, inpainter_ckpt = pretrained_checkpoints(params)
    info = fit_stage(stage, experiment, section, module, data, tp, p.epochs, folder,
                     Path(params.paths.reports), "val/psnr", "joint",
                     {"inpainting": asdict(module.config), "segmenter": asdict(module.segmenter.config),
                      "joint": asdict(module.joint)},
                     {"classes": [{"index": i + 1, **c} for i, c in enumerate(categories)],
                      "target_classes": targets, "image_size": nets.image_size, "canny_sigma": pi.canny_sigma},
                     inputs={"segmenter": file_digest(segmenter_ckpt), "inpainter": file_digest(inpainter_ckpt)},
                     baseline=True)
    log.info("%s: %s", stage, info["metrics"])
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
