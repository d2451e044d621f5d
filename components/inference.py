"""Object removal on photos of any size: the one inference path of the Python API, the batch CLI and
the service (the engine behind it, PyTorch or ONNX Runtime, is a `components.backends.Backend`).

    1. validate   `check_inputs`: the image, the target (known classes, points and box inside the
                  image, a user mask of the image's size), the extra dilation
    2. segment    the whole image resized to the working resolution `S`: instances (connected
                  components of the argmax map, split by the offset head's votes so touching
                  objects are separate instances: components.instances) of the removable classes
    3. select     the instances the target names (classes, points, a box), or the user's mask; the
                  selected instances are scaled up to the image
    4. windows    each masked region with context around it (`context` x its larger side on each side,
                  at least `S` pixels), regions whose windows overlap merged: a large photo is never
                  shrunk as a whole, only each window is brought to `S`
    5. refine     each window segmented again at `S` (a finer view of the object than the whole image
                  gave); the mask becomes the same classes' components there that overlap the coarse
                  selection, kept within one coarse cell of it (a user's mask is kept as given)
    6. expand     optional dilation (> 0) or erosion (< 0) by whole pixels of the input image
    7. inpaint    edges (Canny of the window at `S`, as training computed them) and the inpainters, all
                  windows in one batch
    8. composite  each window's result at `S` scaled back to the window and pasted inside the mask only:
                  every pixel outside the mask is the input's, bit for bit

Images are (H, W, 3) uint8 RGB; masks (H, W) bool, True = remove. At an image of exactly `S` x `S` the
windows are the whole image and nothing is resized: the result is the networks' own composite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from components.export_contract import REQUIRED_FIELDS
from components.instances import split_instances
from components.masks import canny_edges, dilate_mask, erode_mask, to_gray

if TYPE_CHECKING:  # annotations only: components.backends imports this module
    from components.backends import Backend

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels, x1 and y1 exclusive
MAX_REGIONS = 256  # more separate regions than this (a speckled user mask) get one window around them all


class TargetError(ValueError):
    """The target does not fit the image or the model: the message names what is wrong."""


@dataclass(frozen=True)
class ModelInfo:
    """What the steps around the networks need to know about them."""

    class_names: tuple[str, ...]  # one per output channel of the segmenter
    removable: tuple[int, ...]  # channels of object ("thing") classes: what a target can name
    default_targets: tuple[int, ...]  # channels that `Target()` removes
    image_size: int  # the working resolution S
    canny_sigma: float = 1.0


def model_info(meta: dict) -> ModelInfo:
    """ModelInfo from the JSON beside a joint checkpoint or an ONNX export (classes, target_classes, ...)."""
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise ValueError(f"model JSON lacks {missing}")
    names = ["background"] * (max(c["index"] for c in meta["classes"]) + 1)  # channel 0: unlabeled
    for c in meta["classes"]:
        names[c["index"]] = c["name"]
    removable = tuple(c["index"] for c in meta["classes"] if c.get("isthing", True))
    return ModelInfo(tuple(names), removable, tuple(meta["target_classes"]), int(meta["image_size"]),
                     float(meta.get("canny_sigma", 1.0)))


@dataclass(frozen=True)
class InferenceConfig:
    min_instance_ratio: float = 0.005  # of S x S: smaller components are noise, unless a point or box picks them
    context: float = 0.5  # window margin on each side, as a fraction of the region's larger side
    point_radius: float = 2.0  # working-resolution pixels: a point this close to an instance selects it
    box_share: float = 0.5  # share of an instance's area inside a box for the box to select it
    refine: bool = True

    def min_area(self, size: int) -> int:
        """The smallest instance (pixels) a class removal takes at working resolution `size`."""
        return max(1, round(self.min_instance_ratio * size**2))


@dataclass(frozen=True)
class Target:
    """What to remove. `Target()` removes every instance of the model's default classes."""

    classes: tuple[str, ...] = ()  # class names; with points or a box, only instances of these classes
    points: tuple[tuple[float, float], ...] = ()  # (x, y) image pixels: the instance under (or next to) each
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1): instances mostly inside it
    mask: np.ndarray | None = None  # (H, W) bool: fill exactly this (alone; expansion still applies)


@dataclass
class RemovalResult:
    image: np.ndarray  # (H, W, 3) uint8: the input outside `mask`, the fill inside
    mask: np.ndarray  # (H, W) bool: what was filled
    bbox: Box | None  # of `mask`; None when nothing was removed
    windows: list[Box] = field(default_factory=list)  # the crops the networks saw


@dataclass
class Segment:
    label: str
    score: float  # mean probability of `label` over the instance (working resolution)
    mask: np.ndarray  # (H, W) bool
    bbox: Box


def check_inputs(image: np.ndarray, target: Target, expand_px: int, info: ModelInfo) -> None:
    """Raise ValueError (TargetError for the target) naming the first bad value."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {_describe(image)}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image is empty ({width}x{height})")
    if isinstance(expand_px, bool) or not isinstance(expand_px, int | np.integer):
        raise ValueError(f"expand_px must be a whole number of pixels, got {expand_px!r}")
    names = {info.class_names[c] for c in info.removable}
    for name in target.classes:
        if name not in names:
            raise TargetError(f"unknown class {name!r}; removable classes: {', '.join(sorted(names))}")
    for point in target.points:
        x, y = _numbers(point, 2, "point")
        if not (0 <= x < width and 0 <= y < height):
            raise TargetError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
    if target.box is not None:
        x0, y0, x1, y1 = _numbers(target.box, 4, "box")
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise TargetError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must satisfy 0 <= x0 < x1 <= {width} and "
                              f"0 <= y0 < y1 <= {height} (the image is {width}x{height})")
    if target.mask is not None:
        if target.classes or target.points or target.box is not None:
            raise TargetError("a mask cannot be combined with classes, points or a box")
        mask = target.mask
        if not isinstance(mask, np.ndarray) or mask.ndim != 2:
            raise TargetError(f"mask must be an (H, W) array, got {_describe(mask)}")
        if mask.shape != (height, width):
            raise TargetError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}")


def _numbers(values, count: int, what: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TargetError(f"{what} must be {count} numbers, got {values!r}") from None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise TargetError(f"{what} must be {count} finite numbers, got {values!r}")
    return numbers


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def edges_of(images: np.ndarray, sigma: float) -> np.ndarray:
    """Canny edges (N, 1, S, S) float32 in {0, 1} of images (N, 3, S, S) in [0, 1], computed on the uint8
    grid as the training data computes them (components.masks.canny_edges)."""
    out = []
    for image in images:
        rgb = np.ascontiguousarray(np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8))
        out.append(canny_edges(to_gray(rgb), sigma))
    return np.stack(out)[:, None].astype(np.float32)


def inpaint(backend: Backend, images: np.ndarray, probabilities: np.ndarray, holes: np.ndarray,
            canny_sigma: float) -> np.ndarray:
    """At the working resolution: edges, the inpainters, and the composite (N, 3, S, S): the fill inside
    `holes` (N, 1, S, S), 1 = fill, the images exactly elsewhere. Evaluation scores this, the removal
    below pastes it back."""
    fill = backend.fill(images, edges_of(images, canny_sigma), probabilities, holes)
    return np.where(holes > 0.5, fill, images)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 or float image resize: area when shrinking, bicubic when enlarging (as the training data)."""
    if image.shape[:2] == (height, width):
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, width: int, height: int, any_weight: bool = False) -> np.ndarray:
    """(H, W) bool to (height, width): kept where covered >= 1/2, or wherever it has weight (`any_weight`:
    a hole at `S` then covers every pixel of the mask it came from)."""
    if mask.shape == (height, width):
        return mask.copy()
    resized = resize_image(mask.astype(np.float32), width, height)
    return resized > 0 if any_weight else resized >= 0.5


def bounding_box(mask: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def context_windows(mask: np.ndarray, context: float, min_side: int) -> list[Box]:
    """Disjoint windows that hold every masked pixel with context around it: a region's window is its
    box grown by `context` x its larger side on each side (a square of at least `min_side` where the image
    allows), moved inside the image; regions whose windows overlap share one window."""
    height, width = mask.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in stats[1:]]
    if len(boxes) > MAX_REGIONS:
        boxes = [bounding_box(mask)]
    windows = [_window(b, context, min_side, width, height) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(windows)):
            for j in range(i + 1, len(windows)):
                if _overlap(windows[i], windows[j]):
                    a, b = boxes[i], boxes[j]
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    windows[i] = _window(boxes[i], context, min_side, width, height)
                    del boxes[j], windows[j]
                    merged = True
                    break
            if merged:
                break
    return windows


def _window(box: Box, context: float, min_side: int, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    larger = max(x1 - x0, y1 - y0)
    side = max(larger + 2 * math.ceil(context * larger), min_side)
    w, h = min(side, width), min(side, height)
    left = int(min(max(round((x0 + x1 - w) / 2), 0), width - w))
    top = int(min(max(round((y0 + y1 - h) / 2), 0), height - h))
    return left, top, left + w, top + h


def _first(offsets: np.ndarray | None) -> np.ndarray | None:
    """The first image's (2, S, S) offsets of a backend's (N, 2, S, S) output (None stays None)."""
    return None if offsets is None else offsets[0]


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class ObjectRemover:
    """A backend and what the steps around it need: `remove` and `segment` on uint8 RGB photos."""

    def __init__(self, backend: Backend, info: ModelInfo, config: InferenceConfig = InferenceConfig()):
        self.backend, self.info, self.config = backend, info, config

    @property
    def classes(self) -> list[str]:
        return [self.info.class_names[c] for c in self.info.removable]

    @property
    def default_classes(self) -> list[str]:
        return [self.info.class_names[c] for c in self.info.default_targets]

    @property
    def image_size(self) -> int:
        return self.info.image_size

    def remove(self, image: np.ndarray, target: Target = Target(), expand_px: int = 0) -> RemovalResult:
        # 1. validate
        check_inputs(image, target, expand_px, self.info)
        height, width = image.shape[:2]
        size, config = self.info.image_size, self.config
        # 2. segment, 3. select
        whole = None  # (batch, probabilities, offsets) of the whole photo at S, when segmented
        if target.mask is not None:
            coarse, classes = target.mask.astype(bool), None
        else:
            batch = self._batch([image])
            whole = (batch, *self.backend.segment(batch))
            coarse, classes = self._select(whole[1][0], _first(whole[2]), target, width, height)
        reach = coarse if expand_px <= 0 else dilate_mask(coarse, expand_px)
        if not reach.any():
            return RemovalResult(image.copy(), np.zeros((height, width), bool), None)
        # 4. windows around the regions
        windows = context_windows(reach, config.context, size)
        if whole is not None and windows == [(0, 0, width, height)]:
            batch, probabilities, offsets = whole  # the one window is the whole photo: its segmentation is known
        else:
            batch = self._batch([image[y0:y1, x0:x1] for x0, y0, x1, y1 in windows])
            probabilities, offsets = self.backend.segment(batch)  # (N, K, S, S), (N, 2, S, S) or None
        masks = []
        for index, (window, probs) in enumerate(zip(windows, probabilities)):
            x0, y0, x1, y1 = window
            mask = coarse[y0:y1, x0:x1]
            # 5. refine, 6. expand
            if classes is not None and config.refine and (x1 - x0, y1 - y0) != (width, height):
                votes = None if offsets is None else offsets[index]
                mask = self._refine(mask, probs, votes, classes, cell=max(width, height) / size)
            if expand_px:
                mask = dilate_mask(mask, expand_px) if expand_px > 0 else erode_mask(mask, -expand_px)
            masks.append(mask)
        # 7. inpaint
        holes = np.stack([resize_mask(m, size, size, any_weight=True) for m in masks])[:, None].astype(np.float32)
        composites = inpaint(self.backend, batch, probabilities, holes, self.info.canny_sigma)
        # 8. composite: inside the mask only
        result, full_mask = image.copy(), np.zeros((height, width), bool)
        for window, mask, composite in zip(windows, masks, composites):
            x0, y0, x1, y1 = window
            scaled = resize_image(np.ascontiguousarray(composite.transpose(1, 2, 0)), x1 - x0, y1 - y0)
            pixels = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
            result[y0:y1, x0:x1][mask] = pixels[mask]
            full_mask[y0:y1, x0:x1] |= mask
        return RemovalResult(result, full_mask, bounding_box(full_mask), windows)

    def segment(self, image: np.ndarray) -> list[Segment]:
        """The instances of removable classes in `image`, largest first, masks at the image's size."""
        check_inputs(image, Target(), 0, self.info)
        height, width = image.shape[:2]
        probabilities, offsets = self.backend.segment(self._batch([image]))
        probabilities, offsets = probabilities[0], _first(offsets)
        segments = []
        for cls, instance in self._instances(probabilities, offsets, self.info.removable, self._min_area()):
            mask = resize_mask(instance, width, height)
            box = bounding_box(mask)
            if box is not None:
                score = float(probabilities[cls][instance].mean())
                segments.append(Segment(self.info.class_names[cls], score, mask, box))
        return segments

    def _batch(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 (H, W, 3) images -> (N, 3, S, S) float32 in [0, 1], resized on the uint8 grid."""
        size = self.info.image_size
        small = [resize_image(i, size, size) for i in images]
        return np.stack(small).transpose(0, 3, 1, 2).astype(np.float32) / 255

    def _min_area(self) -> int:
        return self.config.min_area(self.info.image_size)

    def _instances(self, probabilities: np.ndarray, offsets: np.ndarray | None, classes, min_area: int
                   ) -> list[tuple[int, np.ndarray]]:
        """Instances at S from (K, S, S) probabilities and the (2, S, S) offsets (None: no head)."""
        return split_instances(probabilities.argmax(axis=0), list(classes), offsets, min_area=min_area)

    def _select(self, probabilities: np.ndarray, offsets: np.ndarray | None, target: Target, width: int, height: int
                ) -> tuple[np.ndarray, set[int]]:
        """The target's instances at the image's size, and their classes."""
        info, size = self.info, self.info.image_size
        named = tuple(info.class_names.index(n) for n in target.classes)
        picking = bool(target.points) or target.box is not None
        allowed = named or (info.removable if picking else info.default_targets)
        instances = self._instances(probabilities, offsets, allowed, 1 if picking else self._min_area())
        chosen: dict[int, tuple[int, np.ndarray]] = {}
        if not picking:
            chosen = dict(enumerate(instances))
        scale_x, scale_y = size / width, size / height
        for x, y in target.points:
            px, py = min(int(x * scale_x), size - 1), min(int(y * scale_y), size - 1)
            best, best_distance = None, self.config.point_radius
            for index, (_, instance) in enumerate(instances):
                ys, xs = np.nonzero(instance)
                distance = float(np.sqrt((xs - px) ** 2 + (ys - py) ** 2).min())
                if distance <= best_distance:
                    best, best_distance = index, distance
            if best is not None:
                chosen[best] = instances[best]
        if target.box is not None:
            x0, y0, x1, y1 = target.box
            inside = np.zeros((size, size), bool)
            inside[int(y0 * scale_y):math.ceil(y1 * scale_y), int(x0 * scale_x):math.ceil(x1 * scale_x)] = True
            for index, (_, instance) in enumerate(instances):
                if (instance & inside).sum() >= self.config.box_share * instance.sum():
                    chosen[index] = instances[index]
        union = np.zeros((size, size), bool)
        for _, instance in chosen.values():
            union |= instance
        return resize_mask(union, width, height), {cls for cls, _ in chosen.values()}

    def _refine(self, coarse: np.ndarray, probabilities: np.ndarray, offsets: np.ndarray | None, classes: set[int],
                cell: float) -> np.ndarray:
        """The window's own instances of `classes` that overlap `coarse` (at S), within one coarse cell of it."""
        height, width = coarse.shape
        size = self.info.image_size
        seed = resize_mask(coarse, size, size, any_weight=True)
        union = np.zeros((size, size), bool)
        for _, instance in self._instances(probabilities, offsets, sorted(classes), 1):
            if (instance & seed).any():
                union |= instance
        refined = resize_mask(union, width, height) & dilate_mask(coarse, max(1, math.ceil(cell)))
        return refined if refined.any() else coarse
