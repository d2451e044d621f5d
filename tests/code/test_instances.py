"""Instances split by the offset head's votes (components.instances): touching objects become separate
instances that still cover every pixel of their class; the targets point every pixel at its instance's
center."""

from __future__ import annotations

import numpy as np

from components.coco import CROWD
from components.instances import center_offsets, pasted_offsets, split_instances


def _two_touching(height: int = 40, width: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.zeros((height, width), np.int64)
    labels[8:32, 10:24] = 1  # left person
    labels[8:32, 24:38] = 1  # right person, touching it along x = 23 | 24
    left = np.zeros(labels.shape, bool)
    left[8:32, 10:24] = True
    return labels, left, (labels == 1) & ~left


def _ideal(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offsets a perfect head would give: each pixel to its own person's center."""
    instances = np.zeros(left.shape, np.uint16)
    instances[left], instances[right] = 1, 2
    return center_offsets(instances, CROWD)[0]


def _by_column(instances: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
    return sorted((m for _, m in instances), key=lambda m: np.nonzero(m)[1].mean())


def test_without_offsets_touching_objects_are_one_component():
    labels, left, right = _two_touching()
    instances = split_instances(labels, [1])
    assert len(instances) == 1 and (instances[0][1] == (left | right)).all()


def test_votes_for_two_centers_split_them_and_every_pixel_stays_covered():
    labels, left, right = _two_touching()
    rng = np.random.default_rng(0)
    offsets = _ideal(left, right) + rng.normal(0, 1.0, (2, *labels.shape)).astype(np.float32)  # a noisy head
    masks = _by_column(split_instances(labels, [1], offsets))
    assert len(masks) == 2
    assert (masks[0] | masks[1]).sum() == (left | right).sum() and not (masks[0] & masks[1]).any()
    for mask, truth in zip(masks, (left, right), strict=True):
        assert (mask & truth).sum() / (mask | truth).sum() > 0.9


def test_votes_for_one_center_keep_an_object_whole():
    """Two touching people whose pixels all point at one center (a head that sees one object) stay one
    instance, even with noisy votes; a region of fewer than 2 x min_core pixels is never split."""
    labels, left, right = _two_touching()
    whole = (labels == 1).astype(np.uint16)
    offsets = center_offsets(whole, CROWD)[0] + np.random.default_rng(1).normal(0, 1.0, (2, *labels.shape))
    assert len(split_instances(labels, [1], offsets.astype(np.float32))) == 1
    small = np.zeros(labels.shape, np.int64)
    small[20:22, 20:22] = 1
    assert len(split_instances(small, [1], _ideal(left, right))) == 1


def test_min_area_drops_small_pieces_and_classes_stay_apart():
    labels, left, right = _two_touching()
    labels[0:2, 0:2] = 2  # a 4-px ball
    instances = split_instances(labels, [1, 2], _ideal(left, right), min_area=5)
    assert [cls for cls, _ in instances] == [1, 1]
    assert len(split_instances(labels, [2], None)) == 1


def test_center_offsets_point_every_thing_pixel_at_its_instance_center():
    labels, left, right = _two_touching()
    instances = np.zeros(labels.shape, np.uint16)
    instances[left], instances[right] = 1, 2
    instances[0:2, 0:4] = CROWD  # a crowd: not supervised
    offsets, weight = center_offsets(instances, CROWD)
    ys, xs = np.mgrid[0:labels.shape[0], 0:labels.shape[1]]
    for truth in (left, right):
        votes = np.stack([ys + offsets[0], xs + offsets[1]])[:, truth]
        center = np.array([ys[truth].mean(), xs[truth].mean()])
        assert np.allclose(votes, center[:, None], atol=1e-4)
    assert np.array_equal(weight > 0, left | right)  # every thing pixel but the crowd
    assert not offsets[:, instances == 0].any()
    offsets, weight = pasted_offsets(left)
    assert np.array_equal(weight > 0, left) and not offsets[:, right].any()
