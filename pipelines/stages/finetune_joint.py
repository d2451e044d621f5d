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

from pipelines.checkpoints import read_checkpoint, sub_state
from pipelines.common import stage_main
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import Params, ParamsError
from pipelines.training.harness import StageFit, fit_stage
from pipelines.training.inpainter_module import inpainting_config, loss_weights, optim_config
from pipelines.training.joint_module import JointModule, joint_config
from pipelines.training.segmenter_module import segmenter_config

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


def build(params: Params, ablation: bool = False, load_weights: bool = True) -> StageFit:
    """The joint module (the pretrained weights loaded unless `load_weights` is false), its data (with
    `phi` per item when MEL is on) and the fit's settings. `ablation` is the same without MEL, into
    `paths.joint_ablation` (stage `finetune_joint_ablation`): the comparison the evaluation reports."""
    p, nets, pi = params.finetune_joint, params.networks, params.pretrain_inpainter
    stage, folder = STAGE, Path(params.paths.joint)
    if ablation:
        p = p.model_copy(update={"mel": p.mel.model_copy(update={"enabled": False})})
        stage, folder = f"{STAGE}_ablation", Path(params.paths.joint_ablation)
    inherited = {"features": pi.features, "vgg19_weights": pi.vgg19_weights, "canny_sigma": pi.canny_sigma}
    # the ablation reads no MEL param (no phi in its data either), so sweeping alpha does not re-run it
    section = {stage: p.model_dump(mode="json", exclude={"mel"} if ablation else None),
               "networks": nets.model_dump(mode="json"), "trainer": params.trainer.model_dump(mode="json"),
               "seed": params.seed, "pretrain_inpainter": inherited}
    L.seed_everything(params.seed + p.seed, workers=True, verbose=False)
    data_config, categories, targets = pairs_config(params.paths.pairs, nets.image_size, pi.canny_sigma, p.seed,
                                                    p.mel.normalization if p.mel.enabled else None,
                                                    offsets=nets.segmenter.offsets)
    num_classes = len(categories) + 1
    module = JointModule(inpainting_config(nets, num_classes), segmenter_config(nets, num_classes),
                         joint_config(p, targets), loss_weights(p.losses), optim_config(p),
                         features=pi.features, vgg19_weights=pi.vgg19_weights)
    segmenter_ckpt, inpainter_ckpt = pretrained_checkpoints(params)
    inputs = {}
    if load_weights:
        load_pretrained(module, segmenter_ckpt, inpainter_ckpt)
        inputs = {"segmenter": file_digest(segmenter_ckpt), "inpainter": file_digest(inpainter_ckpt)}
    data = PairsDataModule(replace(data_config, background_share=p.background_share), p.batch_size,
                           params.trainer.num_workers)
    return StageFit(stage, section, module, data, params.trainer, p.epochs, p.precision, folder,
                    Path(params.paths.reports), "val/psnr", "joint",
                    {"inpainting": asdict(module.config), "segmenter": asdict(module.segmenter.config),
                     "joint": asdict(module.joint)},
                    {"classes": [{"index": i + 1, **c} for i, c in enumerate(categories)],
                     "target_classes": targets, "image_size": nets.image_size, "canny_sigma": pi.canny_sigma},
                    inputs=inputs, baseline=True,
                    headline={"psnr": "val_psnr", "ssim": "val_ssim", "psnr_mask": "val_psnr_mask",
                              "mask_iou": "val_mask_iou", "coverage": "val_coverage"})


def run(params: Params, experiment: str = "object-removal", ablation: bool = False) -> dict:
    """Fine-tune end to end (`ablation`: without MEL, stage `finetune_joint_ablation`)."""
    fit = build(params, ablation)
    info = fit_stage(fit, experiment)
    log.info("%s: %s", fit.stage, info["metrics"])
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
