"""python -m pipelines.stages.synthesize [--params params.yaml]

Stage `synthesize`: copy-paste training pairs from the COCO-format root in `dataset` (the
built-in scenes by default, real COCO when params point there). Writes, under `paths.pairs`:
`{train,val,test}/{images,backgrounds,masks,segs,bg_segs}/NNNNNN.png` (and `instances`, `bg_instances`
where the dataset's segmentation keeps instances: not for label maps), a `manifest.jsonl` per split
and `summary.json`; the counts also go to `reports/synthesize.json` (the pair counts per split to the DVC metric
`reports/headline/synthesize.json`). The output
folder is replaced only when the whole stage succeeds.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from components.buckets import bucket_labels
from components.coco import DatasetError
from components.copy_paste import ALPHA_FLOOR, PasteConfig
from pipelines.common import (
    atomic_dir,
    params_hash,
    process_pool,
    stage_main,
    stage_seed,
    write_headline,
    write_json,
)
from pipelines.params import Params
from pipelines.sources import prepare_sources
from pipelines.synthesis import PAIR_FILES, SPLITS, RenderSettings, plan_pairs, render_split

log = logging.getLogger("synthesize")


def run(params: Params) -> dict:
    cfg = params.synthesize
    edges = params.mask_ratio_buckets
    split_seed, *plan_seeds = stage_seed(params.seed, cfg.seed, "synthesize").spawn(1 + len(SPLITS))
    sources = prepare_sources(
        params.dataset, cfg.target_categories, cfg.min_object_area, cfg.splits, cfg.max_bad_fraction,
        np.random.default_rng(split_seed),
    )
    counts = cfg.pairs.model_dump()
    for split in SPLITS:
        if counts[split] and (not sources.objects[split] or len(sources.images[split]) < 2):
            raise DatasetError(
                f"split '{split}' has {len(sources.objects[split])} usable {cfg.target_categories} objects and "
                f"{len(sources.images[split])} images; it needs at least 1 and 2 (more data, or other split fractions)"
            )
    paste_config = PasteConfig(
        size=cfg.image_size, min_mask_ratio=cfg.min_mask_ratio, max_mask_ratio=edges[-1], max_upscale=cfg.max_upscale,
        max_outside=cfg.max_outside, feather_sigma=tuple(cfg.feather_sigma),
        motion_blur_length=tuple(cfg.motion_blur_length), min_visible_share=cfg.min_visible_share,
    )
    summary: dict = {"pairs": {}, "buckets": {}, "blend": {}, "dropped_pairs": {}}
    out = Path(params.paths.pairs)
    with atomic_dir(out) as tmp, process_pool(cfg.workers) as pool:
        for split, seed in zip(SPLITS, plan_seeds):
            specs = plan_pairs(split, counts[split], sources.objects[split], sources.images[split], edges,
                               paste_config, cfg.blending, seed)
            settings = RenderSettings(str(tmp / split), paste_config, cfg.hflip_prob, tuple(edges), cfg.label_alpha)
            kept, dropped = render_split(specs, counts[split], settings, pool, tmp / split / "manifest.jsonl")
            summary["pairs"][split] = sum(v for k, v in kept.items() if k.startswith("blend:"))
            summary["buckets"][split] = {b: kept[f"bucket:{b}"] for b in bucket_labels(edges)}
            summary["blend"][split] = {m: kept[f"blend:{m}"] for m in cfg.blending}
            summary["dropped_pairs"][split] = dict(dropped)
        n_dropped = sum(sum(d.values()) for d in summary["dropped_pairs"].values())
        if n_dropped > cfg.max_bad_fraction * max(1, sum(counts.values())):
            raise DatasetError(f"{n_dropped} pairs could not be rendered: {summary['dropped_pairs']}")
        summary.update(
            source_images={s: len(sources.images[s]) for s in SPLITS},
            source_objects={s: len(sources.objects[s]) for s in SPLITS},
            skipped=dict(sources.skipped),
            skipped_examples=sources.examples,
            categories=sources.categories,
            target_category_ids=sources.target_ids,
            image_size=cfg.image_size,
            bucket_edges=edges,
            label_alpha=cfg.label_alpha,
            labels_cover_mask=cfg.label_alpha <= ALPHA_FLOOR,  # the training data resizes such labels like M_G
            files={k: v for k, v in PAIR_FILES.items() if params.dataset.segmentation != "label_maps"
                   or "instances" not in k},
            params_hash=params_hash(cfg),
            dataset_root=params.dataset.root,
        )
        write_json(tmp / "summary.json", summary)
    metrics = {key: summary[key] for key in ("pairs", "buckets", "blend")}
    metrics["skipped_annotations"] = sum(summary["skipped"].values())
    metrics["dropped_pairs"] = n_dropped
    write_json(Path(params.paths.reports) / "synthesize.json", metrics)
    write_headline(params.paths.reports, "synthesize", {f"pairs_{split}": n for split, n in summary["pairs"].items()})
    log.info("pairs %s; skipped %s", summary["pairs"], dict(Counter(summary["skipped"])))
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
