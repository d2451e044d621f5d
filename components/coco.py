"""Reading and writing COCO-format annotations, on top of pycocotools.

Any COCO-style root works: the built-in scenes or real COCO 2017. The per-pixel segmentation of
an image (needed as `S` by the method) comes from one of four sources, chosen by the caller:
thing instances alone, COCO-Stuff annotations painted under the instances, a COCO panoptic PNG,
or a folder of label-map PNGs. Label maps hold COCO category ids (0 = unlabeled) as uint8.

Annotations are checked structurally before use (`annotation_problem`) so that a malformed one is
skipped with a reason instead of crashing a worker; pycocotools does the decoding (polygons and
RLE, compressed or not). This module only reads files; writing is left to the pipeline stages.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

SegmentationSource = Literal["instances", "stuff", "panoptic", "label_maps"]


class DatasetError(ValueError):
    """A COCO root, annotations file or category is missing or malformed."""


def read_json(path: Path, what: str) -> Any:
    """Load a JSON file; errors name the file, what it was for, and where parsing stopped."""
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise DatasetError(f"{what} {path} is not valid JSON: {err.msg} at {where}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{what} {path} is not UTF-8 JSON: {err}") from None


def load_coco(path: Path, what: str = "COCO annotations file") -> COCO:
    """A pycocotools index of one COCO json, after checking its top-level structure."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise DatasetError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{what} {path} has no '{key}' list")
    for key, fields in (("images", ("id", "file_name", "height", "width")), ("categories", ("id", "name"))):
        for entry in data[key]:
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise DatasetError(f"{what} {path}: an entry of '{key}' lacks {missing}: {str(entry)[:120]}")
    for key in ("images", "annotations", "categories"):
        counts = Counter(entry.get("id") for entry in data[key] if isinstance(entry, dict))
        duplicates = [entry_id for entry_id, n in counts.items() if n > 1]
        if duplicates:
            raise DatasetError(f"{what} {path}: '{key}' ids are not unique, e.g. {duplicates[:5]}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def category_ids(coco: COCO, names: list[str]) -> list[int]:
    """Ids of the named categories; an unknown name is an error that lists the known ones."""
    by_name = {cat["name"]: cat["id"] for cat in coco.dataset["categories"]}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise DatasetError(f"unknown target categories {unknown}; the dataset has: {sorted(by_name)}")
    return [by_name[name] for name in names]


def annotation_problem(ann: dict, image: dict) -> str | None:
    """Why `ann` cannot be decoded into a mask of `image`, or None when it looks sound."""
    seg = ann.get("segmentation")
    height, width = image["height"], image["width"]
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "polygon with fewer than 3 points or an odd number of coordinates"
            try:
                coords = np.asarray(poly, dtype=np.float64)
            except (TypeError, ValueError):
                return "polygon with non-numeric coordinates"
            if coords.ndim != 1 or not np.isfinite(coords).all():
                return "polygon with non-numeric coordinates"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if size != [height, width]:
            return f"RLE size {size} does not match the image's [{height}, {width}]"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                return "uncompressed RLE counts do not add up to the image area"
            return None
        if isinstance(counts, str):
            return None
        return "RLE without 'counts'"
    return "missing or unreadable 'segmentation'"


def annotation_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """Compressed RLE of a polygon list or (un)compressed RLE, as pycocotools' `annToRLE` does."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


def decode_annotation(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one annotation's segmentation."""
    return mask_utils.decode(annotation_rle(segmentation, height, width)).astype(bool)


CROWD = np.iinfo(np.uint16).max  # an instance map's value on a crowd region (many objects under one annotation)


@dataclass(frozen=True)
class Layer:
    """One region painted into a label map: a category over a COCO segmentation."""

    category_id: int
    segmentation: list | dict
    instance: bool = False  # a thing annotation: one instance of the instance map
    crowd: bool = False  # an `iscrowd` thing annotation: CROWD in the instance map


@dataclass(frozen=True)
class SegmentationRecipe:
    """How to build the label map (and the instance map) of one image, without holding the COCO index.

    `layers` are painted in order (stuff first, then things from large to small); `png` is a panoptic
    PNG (with `segments` mapping segment id -> category id) or a label-map PNG.
    """

    kind: SegmentationSource
    layers: tuple[Layer, ...] = ()
    png: str | None = None
    segments: tuple[tuple[int, int], ...] = ()
    thing_segments: tuple[tuple[int, bool], ...] = ()  # panoptic: (segment id, iscrowd) of thing segments


def segmentation_recipe(
    image: dict,
    instances: COCO,
    kind: SegmentationSource,
    stuff: COCO | None = None,
    panoptic: dict[int, dict] | None = None,
    panoptic_dir: Path | None = None,
    label_dir: Path | None = None,
) -> SegmentationRecipe:
    """The recipe for `image`'s label map from the chosen source."""
    image_id = image["id"]
    if kind == "label_maps":
        return SegmentationRecipe(kind, png=str(label_dir / (Path(image["file_name"]).stem + ".png")))
    if kind == "panoptic":
        entry = panoptic.get(image_id)
        if entry is None:
            return SegmentationRecipe(kind)
        segments = tuple((seg["id"], seg["category_id"]) for seg in entry["segments_info"])
        things = set(instances.getCatIds())
        return SegmentationRecipe(kind, png=str(panoptic_dir / entry["file_name"]), segments=segments,
                                  thing_segments=tuple((seg["id"], bool(seg.get("iscrowd", 0)))
                                                       for seg in entry["segments_info"]
                                                       if seg["category_id"] in things))
    layers: list[Layer] = []
    if kind == "stuff" and stuff is not None:
        layers += [Layer(a["category_id"], a["segmentation"]) for a in stuff.imgToAnns.get(image_id, [])]
    things = sorted(instances.imgToAnns.get(image_id, []), key=lambda a: -float(a.get("area", 0)))
    layers += [Layer(a["category_id"], a["segmentation"], instance=True, crowd=bool(a.get("iscrowd", 0)))
               for a in things]
    return SegmentationRecipe(kind, layers=tuple(layers))


def _panoptic_ids(png: str) -> np.ndarray:
    """(H, W) int64 segment ids of a COCO panoptic PNG (id = R + 256 G + 256^2 B)."""
    bgr = cv2.imread(png, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"panoptic PNG not found or unreadable: {png}")
    rgb = bgr[..., ::-1].astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def render_maps(recipe: SegmentationRecipe, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The image's (H, W) uint8 label map of COCO category ids (0 where nothing is labeled) and its (H, W)
    uint16 instance map: the thing instances 1..N (0: no thing, CROWD on crowd regions), painted together,
    so a thing pixel of the label map belongs to the instance on top there. The instance map is None for
    label-map sources, which keep no instances."""
    labels = np.zeros((height, width), np.uint8)
    if recipe.kind == "label_maps":
        loaded = cv2.imread(recipe.png, cv2.IMREAD_UNCHANGED)
        if loaded is None:
            raise DatasetError(f"label map not found or unreadable: {recipe.png}")
        if loaded.shape[:2] != (height, width):
            found = f"{loaded.shape[1]}x{loaded.shape[0]}"
            raise DatasetError(f"label map {recipe.png} is {found}, the image is {width}x{height}")
        return (loaded.astype(np.uint8) if loaded.ndim == 2 else loaded[..., 0].astype(np.uint8)), None
    instances = np.zeros((height, width), np.uint16)
    if recipe.kind == "panoptic":
        if recipe.png is None:
            return labels, instances
        segment_ids = _panoptic_ids(recipe.png)
        for segment_id, category_id in recipe.segments:
            labels[segment_ids == segment_id] = category_id
        for number, (segment_id, crowd) in enumerate(recipe.thing_segments, start=1):
            instances[segment_ids == segment_id] = CROWD if crowd else number
        return labels, instances
    image, number = {"height": height, "width": width}, 0
    for layer in recipe.layers:  # a malformed region is left out (the target annotations are checked earlier)
        if annotation_problem({"segmentation": layer.segmentation}, image) is None:
            region = decode_annotation(layer.segmentation, height, width)
            labels[region] = layer.category_id
            number += layer.instance and not layer.crowd
            instances[region] = (CROWD if layer.crowd else number) if layer.instance else 0
    return labels, instances


def render_label_map(recipe: SegmentationRecipe, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 label map of COCO category ids, 0 where nothing is labeled (render_maps)."""
    return render_maps(recipe, height, width)[0]


# ----------------------------------------------------------------------------- writing helpers


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO bbox [x, y, w, h] of the True pixels of a (H, W) mask (all zeros when empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed RLE (counts as str, JSON-ready) of a (H, W) bool mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, as used for `iscrowd` annotations.

    pycocotools only writes the compressed form, so this is done here: run lengths of the
    column-major flattening, starting with a run of zeros.
    """
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_to_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """Outer contours of a mask as COCO polygons, or None when polygons cannot represent it (holes).

    Contours are traced on a 2x nearest-upsampled mask and mapped back with pycocotools' pixel-corner
    convention (pixel i spans [i, i+1]): the polygon runs a quarter pixel inside the mask's edge, so
    `decode_annotation` gives back the same pixels even for one-pixel-wide limbs (a contour through
    pixel centres, as plain findContours gives, loses half a pixel all round).
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None or (hierarchy[0][:, 3] >= 0).any():  # a contour with a parent is a hole
        return None
    polygons = [((c.reshape(-1, 2) + 0.5) / 2).reshape(-1).tolist() for c in contours if len(c) >= 3]
    return polygons or None
