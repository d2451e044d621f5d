"""python -m pipelines.stages.pretrain_segmenter [--params params.yaml]

Stage `pretrain_segmenter`: the U-Net segmenter on the synthesized pairs with L_PS (cross entropy),
at its own working resolution `networks.segmenter.image_size` (the inpainters' `networks.image_size`
may be larger: the joint model shrinks the image for it), tracked in MLflow. Writes
`paths.segmenter/{last,best}.ckpt` and `segmenter.json` (config, classes, metrics, provenance),
`reports/pretrain_segmenter.json` (final val metrics) and `reports/plots/pretrain_segmenter.json`
(per-epoch curves). Re-running after a kill resumes from `last.ckpt` when the params are unchanged.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L

from pipelines.common import stage_main
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import Params
from pipelines.training.harness import StageFit, fit_stage
from pipelines.training.segmenter_module import SegmenterModule, segmenter_config

log = logging.getLogger("pretrain_segmenter")
STAGE = "pretrain_segmenter"


def build(params: Params) -> StageFit:
    """The segmenter module, its data and the fit's settings, from params (seeded first: the weights'
    initialization comes from the stage's seed)."""
    p, nets = params.pretrain_segmenter, params.networks
    # the segmenter trains at its own resolution (networks.segmenter.image_size), not the inpainters'
    section = {"pretrain_segmenter": p.model_dump(mode="json"), "networks": {"segmenter": nets.segmenter.model_dump()},
               "trainer": params.trainer.model_dump(mode="json"), "seed": params.seed}
    L.seed_everything(params.seed + p.seed, workers=True, verbose=False)
    data_config, categories, targets = pairs_config(params.paths.pairs, nets.segmenter.image_size, 1.0, p.seed,
                                                    offsets=nets.segmenter.offsets)
    config = segmenter_config(nets, len(categories) + 1)
    module = SegmenterModule(config, targets, lr=p.lr, weight_decay=p.weight_decay, schedule=p.schedule,
                             offset_weight=p.offset_weight, dice_weight=p.dice_weight)
    data = PairsDataModule(replace(data_config, background_share=p.background_share), p.batch_size,
                           params.trainer.num_workers)
    return StageFit(STAGE, section, module, data, params.trainer, p.epochs, p.precision, Path(params.paths.segmenter),
                    Path(params.paths.reports), "val/mask_iou", "segmenter", asdict(config),
                    {"classes": [{"index": i + 1, **c} for i, c in enumerate(categories)],
                     "target_classes": targets, "image_size": nets.segmenter.image_size},
                    headline={"mask_iou": "val_mask_iou", "target_iou": "val_target_iou"})


def run(params: Params, experiment: str = "object-removal") -> dict:
    info = fit_stage(build(params), experiment)
    log.info("segmenter: %s", info["metrics"])
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
