"""Plan and render copy-paste pairs from a COCO-format root (the `synthesize` stage's work).

The main process holds only the COCO index. It splits the source images, checks every target
annotation once, and plans each pair as a small `PairSpec` (which object, which background,
target ratio, blending mode, and a per-pair seed). Workers render specs: they read the two
images, paste, and write five PNGs (seven with the instance maps of I and I_G). Specs are fed
through a bounded window, so memory stays flat however many pairs are asked for, and a pair depends
only on its own seed, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from components.buckets import bucket_of
from components.coco import CROWD, DatasetError, SegmentationRecipe, decode_annotation, render_maps
from components.copy_paste import PasteConfig, cut_object, fit_background, paste
from pipelines.common import bounded_map

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# File kinds written per pair: folder name -> what it holds.
PAIR_FILES = {
    "images": "I, the image with the pasted object (RGB PNG)",
    "backgrounds": "I_G, the background before pasting (RGB PNG)",
    "masks": "M_G, the pasted-object mask (0/255 PNG)",
    "segs": "segmentation of I (category ids, uint8 PNG)",
    "bg_segs": "segmentation of I_G (category ids, uint8 PNG)",
    "instances": "thing instances of I, the pasted object the last (1..N, 0 = none, 65535 = crowd; uint16 PNG), "
                 "when the source keeps instances",
    "bg_instances": "thing instances of I_G (as `instances`)",
}


@dataclass(frozen=True)
class SourceObject:
    image_id: int
    file: str
    height: int
    width: int
    annotation_id: int
    category_id: int
    category: str
    segmentation: list | dict
    area: float  # mask pixels in the source image
    extent: float  # longest side of the source bbox, pixels


@dataclass(frozen=True)
class SourceImage:
    image_id: int
    file: str
    height: int
    width: int
    recipe: SegmentationRecipe


@dataclass(frozen=True)
class PairSpec:
    split: str
    index: int
    seed: int
    obj: SourceObject
    background: SourceImage
    target_ratio: float
    mode: str


@dataclass(frozen=True)
class RenderSettings:
    out_dir: str  # the split folder being written
    paste: PasteConfig
    hflip_prob: float
    bucket_edges: tuple[float, ...]
    label_alpha: float = 0.5  # a pasted pixel is the object's in S (and the instance map) where alpha >= this


def plan_pairs(
    split: str,
    count: int,
    objects: list[SourceObject],
    images: list[SourceImage],
    bucket_edges: list[float],
    paste_config: PasteConfig,
    blending: dict[str, float],
    seed: np.random.SeedSequence,
) -> Iterator[PairSpec]:
    """Specs of `count` pairs of one split; target ratios are drawn evenly over the buckets.

    Objects and backgrounds both come from the split's own images, so splits share no source image.
    For a large target ratio, objects that cannot reach it (small, or long and thin, once
    `max_upscale` and the frame cap their scale) are re-drawn a few times, so the top buckets are
    not starved; close-ups of people are what fill them in real photos too.
    """
    rng = np.random.default_rng(seed)
    modes = list(blending)
    weights = np.array([blending[m] for m in modes], float)
    weights /= weights.sum()
    pair_seeds = seed.spawn(count)
    n_buckets = len(bucket_edges) - 1
    size, cap = paste_config.size, paste_config.max_upscale
    for index in range(count):
        lo, hi = bucket_edges[index % n_buckets], bucket_edges[index % n_buckets + 1]
        target = float(rng.uniform(max(lo, paste_config.min_mask_ratio), hi))
        for _ in range(10):
            obj = objects[rng.integers(len(objects))]
            scale = min(cap, size / (1.0 - paste_config.max_outside) / obj.extent)
            if obj.area * scale**2 >= target * size**2:
                break
        background = images[rng.integers(len(images))]
        while background.image_id == obj.image_id:
            background = images[rng.integers(len(images))]
        yield PairSpec(
            split=split,
            index=index,
            seed=int(pair_seeds[index].generate_state(1)[0]),
            obj=obj,
            background=background,
            target_ratio=target,
            mode=str(rng.choice(modes, p=weights)),
        )


def _read_rgb(path: str, height: int, width: int) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"image missing or unreadable: {path}")
    if bgr.shape[:2] != (height, width):
        raise DatasetError(f"image {path} is {bgr.shape[1]}x{bgr.shape[0]}, annotations say {width}x{height}")
    return bgr[..., ::-1]


def render_pair(spec: PairSpec, settings: RenderSettings) -> dict:
    """Render and write one pair; returns its manifest record, or {'dropped': reason}."""
    rng = np.random.default_rng(spec.seed)
    try:
        # 1. the object, cut along its mask
        source = _read_rgb(spec.obj.file, spec.obj.height, spec.obj.width)
        obj_mask = decode_annotation(spec.obj.segmentation, spec.obj.height, spec.obj.width)
        if not obj_mask.any():
            return {"dropped": "object mask is empty"}
        obj, obj_mask = cut_object(source, obj_mask)
        # 2. the background and its segmentation, resized and cropped together
        bg = spec.background
        bg_image = _read_rgb(bg.file, bg.height, bg.width)
        bg_labels, bg_instances = render_maps(bg.recipe, bg.height, bg.width)
    except DatasetError as err:
        return {"dropped": str(err)}
    if bg_instances is None:
        bg_image, bg_labels = fit_background(bg_image, bg_labels, settings.paste.size, settings.hflip_prob, rng)
    else:  # one crop for both maps
        bg_image, maps = fit_background(bg_image, np.dstack([bg_labels.astype(np.uint16), bg_instances]),
                                        settings.paste.size, settings.hflip_prob, rng)
        bg_labels, bg_instances = maps[..., 0].astype(np.uint8), np.ascontiguousarray(maps[..., 1])
    # 3. paste and blend
    pasted = paste(bg_image, obj, obj_mask, spec.target_ratio, spec.mode, settings.paste, rng)
    if pasted is None:
        return {"dropped": "object never reached min_mask_ratio in the frame"}
    labelled = pasted.alpha >= settings.label_alpha
    seg = np.where(labelled, np.uint8(spec.obj.category_id), bg_labels).astype(np.uint8)
    # 4. write the files (five, and the instance map where the source keeps instances)
    name = f"{spec.index:06d}.png"
    out = Path(settings.out_dir)
    arrays = {
        "images": pasted.image[..., ::-1],
        "backgrounds": bg_image[..., ::-1],
        "masks": pasted.mask.astype(np.uint8) * 255,
        "segs": seg,
        "bg_segs": bg_labels.astype(np.uint8),
    }
    if bg_instances is not None:  # the pasted object is one more instance, where it is labelled
        number = int(bg_instances[bg_instances != CROWD].max(initial=0)) + 1
        arrays["instances"] = np.where(labelled, number, bg_instances).astype(np.uint16)
        arrays["bg_instances"] = bg_instances
    for folder, array in arrays.items():
        (out / folder).mkdir(exist_ok=True)
        if not cv2.imwrite(str(out / folder / name), np.ascontiguousarray(array)):
            raise OSError(f"could not write {out / folder / name}")
    ratio = float(pasted.mask.mean())
    return {
        "id": f"{spec.split}/{spec.index:06d}",
        "split": spec.split,
        "files": {folder: f"{folder}/{name}" for folder in arrays},
        "object": {
            "image_id": spec.obj.image_id,
            "file_name": Path(spec.obj.file).name,
            "annotation_id": spec.obj.annotation_id,
            "category_id": spec.obj.category_id,
            "category": spec.obj.category,
        },
        "background": {"image_id": bg.image_id, "file_name": Path(bg.file).name},
        "bbox": pasted.bbox,
        "mask_ratio": round(ratio, 6),
        "target_ratio": round(spec.target_ratio, 6),
        "bucket": bucket_of(ratio, list(settings.bucket_edges)),
        "blend": pasted.mode,  # `none` where the drawn mode hid the object (copy_paste)
        "scale": round(pasted.scale, 4),
    }


def render_split(
    specs: Iterable[PairSpec], count: int, settings: RenderSettings, pool: ProcessPoolExecutor | None, manifest: Path
) -> tuple[Counter, Counter]:
    """Render a split's pairs into `settings.out_dir`, writing the manifest line by line.

    Returns (counts of kept pairs per bucket and blend mode, counts of dropped pairs per reason).
    """
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)  # each pair makes the folders it writes (no instances: none for them)
    kept: Counter = Counter()
    dropped: Counter = Counter()
    with manifest.open("w") as handle:
        results = bounded_map(partial(render_pair, settings=settings), specs, pool, window=32)
        for record in tqdm(results, total=count, desc=f"synthesize {out.name}", unit="pair", mininterval=1.0):
            if "dropped" in record:
                dropped[record["dropped"]] += 1
                continue
            kept[f"bucket:{record['bucket']}"] += 1
            kept[f"blend:{record['blend']}"] += 1
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    return kept, dropped
