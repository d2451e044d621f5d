"""Instances that touching objects do not merge: every thing pixel votes for its object's center.

Two people standing side by side are one connected component of the argmax map's "person" pixels, so
a click on one would select both, and training's "segment overlapping M_G most" would be both (measured
on the test pairs: a selection that merges the pasted person with the people it touches accounts for a
quarter of the whole-image error, README). The segmenter therefore has a second head
(components.segmenter, `offsets`): per pixel, the offset (dy, dx) in pixels from the pixel to the
center of mass of the object it belongs to, as Panoptic-DeepLab's offset branch.

Instances of a class are then found per connected component of its pixels: each pixel's *vote*
(its position plus its offset) lands near its object's center; the votes are accumulated into a density
map (rounded to the pixel grid, Gaussian-smoothed), the density's local maxima above `rel` x its peak are
the component's centers, and every pixel goes to the center nearest its vote. A component whose votes
have one center stays whole; pieces with fewer than `min_core` pixels are not centers of their own.
Without offsets this is exactly the connected components. The instances still cover every pixel of the
class. (Panoptic-DeepLab finds the centers with a third, heatmap head; here the votes' own density
does it, one head fewer, and measured on the validation pairs the better split: README.)

The sizes scale with the working resolution (`scale` = size / 64): the density's smoothing is 1 px and the
maxima are taken over 7 px at 64 px. The offsets are learned in units of size / 16 (`offset_unit`), so
the head's outputs are of order 1 at any resolution.

Training target (`center_offsets`): with the photo's instance map (the pairs keep the thing instances of
I, the pasted object one of them), every thing pixel's offset to its instance's center, supervised on
every thing pixel but crowd regions (many objects under one annotation). Without one (a label-map
dataset, `pasted_offsets`): the pasted object's own pixels only, since the other objects' instances are
then unknown.

Written by hand (NumPy, OpenCV and scipy do the components, the density and its maxima): no library
groups a segmenter's pixels by predicted offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

UNITS_PER_IMAGE = 16  # offsets are learned in units of size / 16 px


def offset_unit(size: int) -> float:
    """Pixels per unit of the offset head's raw output at working size `size`."""
    return size / UNITS_PER_IMAGE


def _offsets_to_centers(instances: np.ndarray, numbers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (2, H, W) float32, supervised (H, W) bool): for each instance number, its pixels' offsets
    (dy, dx) to its center of mass."""
    height, width = instances.shape
    offsets = np.zeros((2, height, width), np.float32)
    supervised = np.zeros((height, width), bool)
    for number in numbers:
        ys, xs = np.nonzero(instances == number)
        if len(ys):
            offsets[0, ys, xs] = ys.mean() - ys
            offsets[1, ys, xs] = xs.mean() - xs
            supervised[ys, xs] = True
    return offsets, supervised


def center_offsets(instances: np.ndarray, crowd: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (2, H, W) float32 in px, weight (H, W) float32) from an (H, W) instance map (0 = no thing,
    `crowd` = a crowd region, components.coco.CROWD in the pairs): every thing pixel's offset to the
    center of its instance, weight 1 on every thing pixel but the crowds."""
    numbers = [int(n) for n in np.unique(instances) if n not in (0, crowd)]
    offsets, supervised = _offsets_to_centers(instances, numbers)
    return offsets, supervised.astype(np.float32)


def pasted_offsets(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, weight) as `center_offsets` for the pasted object `mask` (H, W) bool alone."""
    offsets, supervised = _offsets_to_centers(mask.astype(np.uint8), [1])
    return offsets, supervised.astype(np.float32)


def split_instances(labels: np.ndarray, classes: Sequence[int], offsets: np.ndarray | None = None,
                    min_area: int = 1, min_core: int = 4, rel: float = 0.2) -> list[tuple[int, np.ndarray]]:
    """Instances of each class in `classes` on the (H, W) label map: [(class, (H, W) bool mask)], largest
    first, each at least `min_area` pixels. `offsets` (2, H, W): the offset head's (dy, dx) in px (None:
    plain connected components)."""
    found = []
    for cls in classes:
        count, components = cv2.connectedComponents((labels == cls).astype(np.uint8), connectivity=8)
        for index in range(1, count):
            region = components == index
            for piece in ([region] if offsets is None else _split(region, offsets, min_core, rel)):
                if piece.sum() >= min_area:
                    found.append((cls, piece))
    return sorted(found, key=lambda item: -int(item[1].sum()))


def _split(region: np.ndarray, offsets: np.ndarray, min_core: int, rel: float) -> list[np.ndarray]:
    """One connected region split among the centers its pixels vote for (see the module docstring)."""
    ys, xs = np.nonzero(region)
    if len(ys) < 2 * min_core:
        return [region]
    height, width = region.shape
    scale = max(height, width) / 64
    vy, vx = ys + offsets[0, ys, xs], xs + offsets[1, ys, xs]
    density = np.zeros((height, width), np.float32)
    rows, cols = np.clip(np.rint(vy), 0, height - 1).astype(int), np.clip(np.rint(vx), 0, width - 1).astype(int)
    np.add.at(density, (rows, cols), 1.0)
    density = ndimage.gaussian_filter(density, 1.0 * scale)
    window = 2 * round(3 * scale) + 1
    peaks = np.argwhere((density == ndimage.maximum_filter(density, size=window, mode="constant"))
                        & (density >= rel * density.max()))
    if len(peaks) < 2:
        return [region]
    distance = (vy[:, None] - peaks[None, :, 0]) ** 2 + (vx[:, None] - peaks[None, :, 1]) ** 2  # (pixels, peaks)
    keep = np.flatnonzero(np.bincount(distance.argmin(1), minlength=len(peaks)) >= min_core)
    if len(keep) < 2:
        return [region]
    nearest = keep[distance[:, keep].argmin(1)]
    return [_piece(region.shape, ys[nearest == k], xs[nearest == k]) for k in keep]


def _piece(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    piece = np.zeros(shape, bool)
    piece[ys, xs] = True
    return piece
