"""python -m pipelines.stages.scenes [--params params.yaml]

Stage `scenes`: write the built-in dataset, a COCO-format root generated offline, to `paths.scenes`:

    images/NNNNNN.jpg               RGB scenes (JPEG, as COCO ships them)
    labels/NNNNNN.png               label maps: COCO category id per pixel (uint8)
    annotations/instances.json      thing instances: polygons, or RLE where a mask has holes;
                                    crowd groups as uncompressed RLE with iscrowd=1
    annotations/stuff.json          stuff regions as compressed RLE (the COCO-Stuff layout)

Scene i depends only on its own seed (spawned from the stage seed), so the output is
byte-identical for any number of workers.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from components.coco import encode_rle, encode_uncompressed_rle, mask_bbox, mask_to_polygons
from components.scenes import CATEGORIES, SceneConfig, generate_scene
from pipelines.common import (
    atomic_dir,
    bounded_map,
    params_hash,
    process_pool,
    stage_main,
    stage_seed,
    write_headline,
    write_json,
)
from pipelines.params import Params

log = logging.getLogger("scenes")


def _annotation(mask: np.ndarray, category_id: int, iscrowd: bool = False, polygons: bool = True) -> dict:
    """A COCO annotation without ids: crowd -> uncompressed RLE; else polygons unless the mask has holes."""
    if iscrowd:
        segmentation = encode_uncompressed_rle(mask)
    else:
        segmentation = (polygons and mask_to_polygons(mask)) or encode_rle(mask)
    return {
        "category_id": category_id,
        "segmentation": segmentation,
        "area": int(mask.sum()),
        "bbox": mask_bbox(mask),
        "iscrowd": int(iscrowd),
    }


def render_scene(job: tuple[int, int], config: SceneConfig, out_dir: str, quality: int) -> tuple[dict, list, list]:
    """Generate and write scene `index`; returns (image entry, instance anns, stuff anns) without ids."""
    index, seed = job
    scene = generate_scene(np.random.default_rng(seed), config)
    name = f"{index:06d}"
    out = Path(out_dir)
    ok = cv2.imwrite(str(out / "images" / f"{name}.jpg"), scene.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    ok &= cv2.imwrite(str(out / "labels" / f"{name}.png"), scene.labels)
    if not ok:
        raise OSError(f"could not write scene {name} under {out}")
    height, width = scene.labels.shape
    image = {"id": index + 1, "file_name": f"{name}.jpg", "height": height, "width": width}
    things = [_annotation(inst.mask, inst.category_id, inst.iscrowd) for inst in scene.instances]
    stuff = [
        _annotation(scene.labels == cat.id, cat.id, polygons=False)
        for cat in CATEGORIES
        if not cat.isthing and (scene.labels == cat.id).any()
    ]
    return image, things, stuff


def run(params: Params) -> dict:
    cfg = params.scenes
    config = SceneConfig(
        size=cfg.size, min_things=cfg.min_things, max_things=cfg.max_things, person_prob=cfg.person_prob,
        occlusion_prob=cfg.occlusion_prob, crowd_prob=cfg.crowd_prob,
    )
    seeds = stage_seed(params.seed, cfg.seed, "scenes").generate_state(cfg.num_images)
    categories = [
        {"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": int(c.isthing)} for c in CATEGORIES
    ]
    out = Path(params.paths.scenes)
    with atomic_dir(out) as tmp, process_pool(cfg.workers) as pool:
        for folder in ("images", "labels", "annotations"):
            (tmp / folder).mkdir()
        images, things, stuff = [], [], []
        render = partial(render_scene, config=config, out_dir=str(tmp), quality=cfg.jpeg_quality)
        jobs = ((i, int(seed)) for i, seed in enumerate(seeds))
        for image, image_things, image_stuff in tqdm(
            bounded_map(render, jobs, pool, window=32 * cfg.workers), total=cfg.num_images, desc="scenes", unit="img",
            mininterval=1.0,
        ):
            images.append(image)
            for target, anns in ((things, image_things), (stuff, image_stuff)):
                start = len(target) + 1
                target += [{"id": start + k, "image_id": image["id"], **ann} for k, ann in enumerate(anns)]
        # no git revision here: the data must be the same bytes for the same params at any commit (dvc.lock,
        # MLflow and the checkpoints' JSON record the revision)
        info = {"description": "built-in synthetic scenes", "params_hash": params_hash(cfg)}
        thing_cats = [c for c in categories if c["isthing"]]
        stuff_cats = [c for c in categories if not c["isthing"]]
        write_json(tmp / "annotations" / "instances.json",
                   {"info": info, "images": images, "annotations": things, "categories": thing_cats})
        write_json(tmp / "annotations" / "stuff.json",
                   {"info": info, "images": images, "annotations": stuff, "categories": stuff_cats})
    per_category = {c["name"]: sum(a["category_id"] == c["id"] for a in things) for c in thing_cats}
    metrics = {"images": len(images), "instances": per_category, "crowd": sum(a["iscrowd"] for a in things)}
    write_json(Path(params.paths.reports) / "scenes.json", metrics)
    write_headline(params.paths.reports, "scenes", {"images": len(images), "objects": len(things)})
    log.info("wrote %d scenes to %s: %s", len(images), out, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
