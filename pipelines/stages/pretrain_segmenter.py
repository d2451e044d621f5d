"""python -m pipelines.stages.pretrain_segmenter [--params params.yaml]

Stage `pretrain_segmenter`: the U-Net segmenter on the synthesized pairs with L_PS (cross entropy),
tracked in MLflow. Writes `paths.segmenter/{last,best}.ckpt` and `segmenter.json` (config, classes,
metrics, provenance), `reports/pretrain_segmenter.json` (final val metrics) and
`reports/plots/pretrain_segmenter.json` (per-epoch curves). Re-running after a kill resumes from
`last.ckpt` when the params are unchanged.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L

from components.segmenter import SegmenterConfig
from pipelines.common import stage_main
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import Params
from pipelines.training.harness import fit_stage
from pipelines.training.segmenter_module import SegmenterModule

log = logging.getLogger("pretrain_segmenter")
STAGE = "pretrain_segmenter"


def run(params: Params, experiment: str = "object-removal") -> dict:
    p, nets, tp = params.pretrain_segmenter, params.networks, params.trainer
    section = {"pretrain_segmenter": p.model_dump(mode="json"), "networks": nets.model_dump(mode="json"),
               "trainer": tp.model_dump(mode="json"), "seed": params.seed}
    L.seed_everything(params.seed + p.seed, workers=True, verbose=False)
    data_config, categories, targets = pairs_config(params.paths.pairs, nets.image_size, 1.0, p.seed)
    config = SegmenterConfig(len(categories) + 1, nets.segmenter.width, nets.segmenter.depth)
    module = SegmenterModule(config, targets, p.lr, p.weight_decay, p.schedule)
    data = PairsDataModule(replace(data_config, background_share=p.background_share), p.batch_size, tp.num_workers)
    info = fit_stage(STAGE, experiment, section, module, data, tp, p.epochs, Path(params.paths.segmenter),
                     Path(params.paths.reports), "val/mask_iou", "segmenter", {**config.__dict__},
                     {"classes": [{"index": i + 1, **c} for i, c in enumerate(categories)],
                      "target_classes": targets, "image_size": nets.image_size})
    log.info("segmenter: %s", info["metrics"])
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
