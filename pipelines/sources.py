"""Open a COCO-format root, check it, and split its images into train/val/test sources.

Everything that can be checked before rendering is checked here, once, in the main process:
the root and its files exist, the JSON is well formed, the target categories exist, every image
file is present and every target annotation can be decoded. Bad images and annotations are
skipped and counted by reason; more than `max_bad_fraction` of them fails the stage with
examples, so a broken dataset is never silently turned into a small one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from components.coco import (
    DatasetError,
    annotation_problem,
    annotation_rle,
    category_ids,
    load_coco,
    read_json,
    segmentation_recipe,
)
from pipelines.params import DatasetParams, SplitFractions
from pipelines.synthesis import SPLITS, SourceImage, SourceObject


@dataclass
class Sources:
    objects: dict[str, list[SourceObject]]  # split -> candidate objects to cut
    images: dict[str, list[SourceImage]]  # split -> images usable as backgrounds
    categories: list[dict]  # every category (things and stuff): id, name, isthing, supercategory
    target_ids: list[int]
    skipped: Counter = field(default_factory=Counter)  # reason -> number of annotations or images
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few offenders


def _require(path: Path, what: str, is_dir: bool = False) -> Path:
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DatasetError(f"{what} not found: {path}")
    return path


def _split_ids(ids: list[int], fractions: SplitFractions, rng: np.random.Generator) -> dict[int, str]:
    order = rng.permutation(len(ids))
    bounds = np.round(np.cumsum([fractions.train, fractions.val]) * len(ids)).astype(int)
    owner = {}
    for rank, position in enumerate(order):
        owner[ids[position]] = "train" if rank < bounds[0] else "val" if rank < bounds[1] else "test"
    return owner


def prepare_sources(
    dataset: DatasetParams,
    targets: list[str],
    min_object_area: int,
    fractions: SplitFractions,
    max_bad_fraction: float,
    rng: np.random.Generator,
) -> Sources:
    root = _require(Path(dataset.root), "dataset root (dataset.root)", is_dir=True)
    images_dir = _require(root / dataset.images, "image folder (dataset.images)", is_dir=True)
    instances = load_coco(_require(root / dataset.instances, "instances file (dataset.instances)"), "instances file")
    target_ids = category_ids(instances, targets)

    stuff = panoptic = panoptic_dir = label_dir = None
    categories = {c["id"]: {**c, "isthing": bool(c.get("isthing", True))} for c in instances.dataset["categories"]}
    if dataset.segmentation == "stuff":
        stuff = load_coco(_require(root / dataset.stuff, "stuff file (dataset.stuff)"), "stuff file")
        categories.update({c["id"]: {**c, "isthing": False} for c in stuff.dataset["categories"]})
    elif dataset.segmentation == "panoptic":
        data = read_json(_require(root / dataset.panoptic, "panoptic file (dataset.panoptic)"), "panoptic file")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise DatasetError(f"panoptic file {root / dataset.panoptic} has no 'annotations' list")
        panoptic = {entry["image_id"]: entry for entry in data["annotations"]}
        categories.update({c["id"]: {**c, "isthing": bool(c.get("isthing", True))} for c in data.get("categories", [])})
        panoptic_dir = _require(root / dataset.panoptic_masks, "panoptic PNG folder (dataset.panoptic_masks)", True)
    elif dataset.segmentation == "label_maps":
        label_dir = _require(root / dataset.label_maps, "label map folder (dataset.label_maps)", is_dir=True)
    too_large = [cid for cid in categories if not 0 < cid < 256]
    if too_large:
        raise DatasetError(f"category ids must be in 1..255 to fit uint8 label maps, got {too_large[:5]}")

    all_categories = sorted(categories.values(), key=lambda c: c["id"])
    sources = Sources({s: [] for s in SPLITS}, {s: [] for s in SPLITS}, all_categories, target_ids)

    def skip(reason: str, example: str) -> None:
        sources.skipped[reason] += 1
        sources.examples.setdefault(reason, [])
        if len(sources.examples[reason]) < 5:
            sources.examples[reason].append(example)

    # 1. images: present on disk, else skipped
    present: dict[int, dict] = {}
    for image in instances.dataset["images"]:
        if (images_dir / image["file_name"]).is_file():
            present[image["id"]] = image
        else:
            skip("image file missing", str(images_dir / image["file_name"]))
    n_images = len(instances.dataset["images"])
    missing = sources.skipped["image file missing"]
    if n_images == 0 or missing > max_bad_fraction * n_images:
        raise DatasetError(
            f"{missing} of {n_images} images listed in {root / dataset.instances} are missing from {images_dir} "
            f"(allowed: synthesize.max_bad_fraction={max_bad_fraction}); "
            f"e.g. {sources.examples.get('image file missing', [])}"
        )
    owner = _split_ids(sorted(present), fractions, rng)
    for image_id in sorted(present):
        image = present[image_id]
        recipe = segmentation_recipe(image, instances, dataset.segmentation, stuff, panoptic, panoptic_dir, label_dir)
        sources.images[owner[image_id]].append(
            SourceImage(image_id, str(images_dir / image["file_name"]), image["height"], image["width"], recipe)
        )

    # 2. target annotations: decodable, not crowd, large enough, image present
    names = {c["id"]: c["name"] for c in sources.categories}
    target_anns = instances.loadAnns(instances.getAnnIds(catIds=target_ids))
    bad = 0
    for ann in target_anns:
        label = f"annotation {ann.get('id')} of image {ann.get('image_id')}"
        image = present.get(ann.get("image_id"))
        if image is None:
            bad += 1
            known = ann.get("image_id") in instances.imgs
            skip("annotation on a missing image" if known else "unknown image_id", label)
            continue
        problem = annotation_problem(ann, image)
        if problem is not None:
            bad += 1
            skip(f"malformed: {problem}", label)
            continue
        if ann.get("iscrowd", 0):
            skip("crowd annotation", label)
            continue
        rle = annotation_rle(ann["segmentation"], image["height"], image["width"])
        area = float(mask_utils.area(rle))
        if area < min_object_area:
            skip("smaller than min_object_area", label)
            continue
        sources.objects[owner[image["id"]]].append(
            SourceObject(image["id"], str(images_dir / image["file_name"]), image["height"], image["width"],
                         ann["id"], ann["category_id"], names[ann["category_id"]], ann["segmentation"],
                         area, float(max(mask_utils.toBbox(rle)[2:])))
        )
    if target_anns and bad > max_bad_fraction * len(target_anns):
        bad_kinds = ("malformed", "annotation on", "unknown")
        reasons = {r: sources.examples[r] for r in sources.skipped if r.startswith(bad_kinds)}
        raise DatasetError(
            f"{bad} of {len(target_anns)} target annotations are unusable "
            f"(allowed: synthesize.max_bad_fraction={max_bad_fraction}): {reasons}"
        )
    return sources
