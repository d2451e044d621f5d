"""python -m pipelines.stages.pretrain_inpainter [--params params.yaml]

Stage `pretrain_inpainter`: the edge, segmentation and image inpainters (EdgeConnect-style, with
PatchGAN discriminators) on the synthesized pairs' true masks `M_G`, optionally on free-form random
masks for the first `random_mask_epochs`. Tracked in MLflow. Writes `paths.inpainter/{last,best}.ckpt`
and `inpainter.json`, `reports/pretrain_inpainter.json` (final val metrics, with the OpenCV Telea
baseline on the same masks) and `reports/plots/pretrain_inpainter.json`. Resumes from `last.ckpt`
after a kill when the params are unchanged.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L

from components.inpainting import InpaintingConfig
from pipelines.common import stage_main
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import Params
from pipelines.training.harness import fit_stage
from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig

log = logging.getLogger("pretrain_inpainter")
STAGE = "pretrain_inpainter"


def run(params: Params, experiment: str = "object-removal") -> dict:
    p, nets, tp = params.pretrain_inpainter, params.networks, params.trainer
    section = {"pretrain_inpainter": p.model_dump(mode="json"), "networks": nets.model_dump(mode="json"),
               "trainer": tp.model_dump(mode="json"), "seed": params.seed}
    L.seed_everything(params.seed + p.seed, workers=True, verbose=False)
    data_config, categories, _ = pairs_config(params.paths.pairs, nets.image_size, p.canny_sigma, p.seed)
    n = nets.inpainter
    config = InpaintingConfig(len(categories) + 1, n.width, n.residual_blocks, n.dilation, n.discriminator_width,
                              n.hole_fill, n.image_head)
    module = InpainterModule(config, LossWeights(**p.losses.model_dump()), OptimConfig(p.lr, p.d_lr_ratio, p.betas),
                             p.features, p.vgg19_weights, p.image_inputs)
    data = PairsDataModule(data_config, p.batch_size, tp.num_workers)
    info = fit_stage(STAGE, experiment, section, module, data, tp, p.epochs, Path(params.paths.inpainter),
                     Path(params.paths.reports), "val/psnr_mask", "inpainter", {**config.__dict__},
                     {"classes": [{"index": i + 1, **c} for i, c in enumerate(categories)],
                      "image_size": nets.image_size, "canny_sigma": p.canny_sigma},
                     random_mask_epochs=p.random_mask_epochs)
    log.info("inpainter: %s", info["metrics"])
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
