"""Instances that touching objects do not merge: connected components cut along a learned contact band.

Two people standing side by side are one connected component of the argmax map's "person" pixels, so
a click on one would select both, and training's "segment overlapping M_G most" would be both. The
segmenter therefore has a second head (components.segmenter, `contact_band` > 0): the probability that a
pixel lies on the *contact band* where two thing objects touch (within `band` px of the other object).

Instances of a class are then found per connected component of its pixels: the component's pixels off
the band are its *cores* (4-connected, so a diagonal step does not bridge the band); cores smaller than
`min_core` pixels (slivers the band cuts off) are dropped; with two or more cores left, every pixel of
the component goes to its nearest core (scipy's exact Euclidean distance transform), so the split runs
along the middle of the band and the instances still cover every pixel of the class. A component with
at most one core stays whole. Without a contact map this is exactly the connected components.

Training target: with the photo's instance map (`instance_contacts`: the pairs keep the thing instances
of I, the pasted object one of them), every thing pixel within `band` px of another instance's pixel,
supervised everywhere but on crowd regions, so the background's own touching people and cars are
examples too. Without one (a label-map dataset, `contact_target`): the pixels of the pasted object `M_G` within
`band` px of another thing's pixel, and the other things' pixels within `band` px of `M_G`, supervised
only near `M_G` (`weight`), since contacts between the background's objects are then unknown rather
than absent.

Written by hand (OpenCV and scipy do the components and distances): no library splits components along
a predicted band.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from components.masks import dilate_mask


def contact_target(mask: np.ndarray, seg: np.ndarray, thing_classes: Sequence[int], band: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight), (H, W) float32 each, for the pasted object `mask` (H, W) bool on a photo whose
    segmentation is `seg` (H, W) int: target 1 on the contact band, weight 1 where it is supervised
    (within `band` + 2 px of the object; all 0 for an empty mask)."""
    if not mask.any() or band <= 0:
        zeros = np.zeros(mask.shape, np.float32)
        return zeros, zeros.copy()
    others = np.isin(seg, list(thing_classes)) & ~mask
    target = (mask & dilate_mask(others, band)) | (others & dilate_mask(mask, band))
    return target.astype(np.float32), dilate_mask(mask, band + 2).astype(np.float32)


def instance_contacts(instances: np.ndarray, band: int, crowd: int) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight), (H, W) float32 each, from an (H, W) instance map (0 = no thing, `crowd` = a crowd
    region, components.coco.CROWD in the pairs): target 1 on every instance's pixels within `band` px of
    another instance's pixel; weight 1 everywhere but on the crowds (many objects under one annotation:
    their own contacts are unknown)."""
    target = np.zeros(instances.shape, bool)
    weight = (instances != crowd).astype(np.float32)
    if band <= 0:
        return target.astype(np.float32), weight
    things = instances > 0
    for number in np.unique(instances[things]):
        mine = instances == number
        target |= mine & dilate_mask(things & ~mine, band)
    return (target & (instances != crowd)).astype(np.float32), weight


def split_instances(labels: np.ndarray, classes: Sequence[int], contact: np.ndarray | None = None,
                    min_area: int = 1, min_core: int = 4) -> list[tuple[int, np.ndarray]]:
    """Instances of each class in `classes` on the (H, W) label map: [(class, (H, W) bool mask)], largest
    first, each at least `min_area` pixels. `contact` (H, W) is the contact head's probability (None:
    plain connected components)."""
    cut = None if contact is None else contact > 0.5
    found = []
    for cls in classes:
        count, components = cv2.connectedComponents((labels == cls).astype(np.uint8), connectivity=8)
        for index in range(1, count):
            region = components == index
            for piece in ([region] if cut is None else _split(region, cut, min_core)):
                if piece.sum() >= min_area:
                    found.append((cls, piece))
    return sorted(found, key=lambda item: -int(item[1].sum()))


def _split(region: np.ndarray, cut: np.ndarray, min_core: int) -> list[np.ndarray]:
    """One connected region split among its cores off the band (see the module docstring)."""
    count, cores, stats, _ = cv2.connectedComponentsWithStats((region & ~cut).astype(np.uint8), connectivity=4)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_core]
    if len(keep) < 2:
        return [region]
    kept = np.where(np.isin(cores, keep), cores, 0)
    _, (rows, cols) = ndimage.distance_transform_edt(kept == 0, return_indices=True)
    nearest = kept[rows, cols]  # (H, W): the label of the nearest kept core pixel
    return [region & (nearest == i) for i in keep]
