"""python -m pipelines.stages.pretrain_inpainter [--params params.yaml]

Stage `pretrain_inpainter`: the edge, segmentation and image inpainters (EdgeConnect-style, with
PatchGAN discriminators) on the synthesized pairs' true masks `M_G`, optionally on free-form random
masks for the first `random_mask_epochs`, and then on the first `object_pairs` training pairs only
when that is set (the paper's Tables II and III: `make paper`). Tracked in MLflow. Writes
`paths.inpainter/{last,best}.ckpt` and `inpainter.json`, `reports/pretrain_inpainter.json` (final val
metrics, with the OpenCV Telea baseline on the same masks) and `reports/plots/pretrain_inpainter.json`.
Resumes from `last.ckpt` after a kill when the params are unchanged.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path

import lightning as L

from pipelines.common import stage_main
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import Params
from pipelines.training.harness import StageFit, fit_stage
from pipelines.training.inpainter_module import InpainterModule, inpainting_config, loss_weights, optim_config

log = logging.getLogger("pretrain_inpainter")
STAGE = "pretrain_inpainter"


def build(params: Params) -> StageFit:
    """The three inpainters with their discriminators, their data and the fit's settings, from params."""
    p, nets = params.pretrain_inpainter, params.networks
    section = {"pretrain_inpainter": p.model_dump(mode="json"), "networks": nets.model_dump(mode="json"),
               "trainer": params.trainer.model_dump(mode="json"), "seed": params.seed}
    L.seed_everything(params.seed + p.seed, workers=True, verbose=False)
    data_config, categories, _ = pairs_config(params.paths.pairs, nets.image_size, p.canny_sigma, p.seed)
    config = inpainting_config(nets, len(categories) + 1)
    module = InpainterModule(config, loss_weights(p.losses), optim_config(p), features=p.features,
                             vgg19_weights=p.vgg19_weights, image_inputs=p.image_inputs)
    data = PairsDataModule(data_config, p.batch_size, params.trainer.num_workers, object_pairs=p.object_pairs)
    return StageFit(STAGE, section, module, data, params.trainer, p.epochs, p.precision, Path(params.paths.inpainter),
                    Path(params.paths.reports), "val/psnr_mask", "inpainter", asdict(config),
                    {"classes": [{"index": i + 1, **c} for i, c in enumerate(categories)],
                     "image_size": nets.image_size, "canny_sigma": p.canny_sigma},
                    random_mask_epochs=p.random_mask_epochs,
                    headline={"psnr": "val_psnr", "ssim": "val_ssim", "psnr_mask": "val_psnr_mask"})


def run(params: Params, experiment: str = "object-removal") -> dict:
    info = fit_stage(build(params), experiment)
    log.info("inpainter: %s", info["metrics"])
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
