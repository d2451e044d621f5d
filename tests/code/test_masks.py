"""Free-form masks (seeded, non-empty, inside the requested ratio bucket), Canny edges, grey, morphology."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.feature import canny

from components.buckets import bucket_of
from components.masks import (
    canny_edges,
    dilate_mask,
    erode_mask,
    free_form_mask,
    offset_mask,
    resize_mask,
    to_gray,
)

BUCKETS = [0.0, 0.1, 0.2, 0.3, 0.4]


def test_free_form_mask_is_seeded_bool_and_not_empty():
    a = free_form_mask(np.random.default_rng(7), 96)
    b = free_form_mask(np.random.default_rng(7), 96)
    c = free_form_mask(np.random.default_rng(8), 96)
    assert a.shape == (96, 96) and a.dtype == bool
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    for seed in range(50):
        mask = free_form_mask(np.random.default_rng(seed), 64, max_rectangles=2)
        assert 0 < mask.mean() < 1


def test_free_form_mask_scales_with_size():
    """The same seed covers about the same share at 64 and 256 px (sizes are fractions of the frame)."""
    small = np.mean([free_form_mask(np.random.default_rng(s), 64).mean() for s in range(40)])
    large = np.mean([free_form_mask(np.random.default_rng(s), 256).mean() for s in range(40)])
    assert 0.05 < large < 0.5
    assert abs(small - large) < 0.03


@pytest.mark.parametrize("lo, hi", list(zip(BUCKETS, BUCKETS[1:])))
@pytest.mark.parametrize("size", [48, 128])
def test_free_form_mask_lands_in_ratio_bucket(lo, hi, size):
    ratios = np.array([free_form_mask(np.random.default_rng(seed), size, target_ratio=(lo, hi), max_rectangles=1)
                       .mean() for seed in range(40)])
    assert np.all((ratios >= lo) & (ratios < hi) & (ratios > 0))
    assert {bucket_of(float(r), BUCKETS) for r in ratios} == {f"{round(lo * 100)}-{round(hi * 100)}"}
    assert ratios.max() - ratios.min() > 0.4 * (hi - lo)  # spread over the bucket, not piled on one edge


def test_free_form_mask_rejects_bad_target():
    with pytest.raises(ValueError, match="target_ratio"):
        free_form_mask(np.random.default_rng(0), 32, target_ratio=(0.3, 0.2))


def _square_image(size: int = 64, lo: int = 16, hi: int = 48) -> np.ndarray:
    image = np.zeros((size, size), np.uint8)
    image[lo:hi, lo:hi] = 255
    return image


def test_canny_white_square_edges_lie_on_its_border():
    image = _square_image()
    edges = canny_edges(image, sigma=2.0)
    assert edges.dtype == np.float32 and set(np.unique(edges)) == {0.0, 1.0}
    square = np.zeros((64, 64), np.uint8)
    square[16:48, 16:48] = 1
    boundary = square - cv2.erode(square, np.ones((3, 3), np.uint8))  # inner one-pixel ring
    distance = cv2.distanceTransform(1 - boundary, cv2.DIST_L2, 5)  # distance to the square's boundary
    assert edges.sum() > 4 * 32 * 0.9  # the whole outline is found
    assert distance[edges > 0].max() <= 2.0
    assert edges[:10].sum() == 0 and edges[24:40, 24:40].sum() == 0  # flat regions stay empty


def test_canny_float_and_uint8_agree_and_flat_image_has_no_edges():
    image = _square_image()
    assert np.array_equal(canny_edges(image), canny_edges(image.astype(np.float32) / 255))
    assert canny_edges(np.full((32, 32), 128, np.uint8)).sum() == 0
    assert canny_edges(np.full((32, 32), 0.7, np.float32), sigma=0).sum() == 0


def test_canny_matches_skimage_defaults_to_a_pixel():
    """Same blur, Sobel and thresholds as skimage's canny(sigma=2): edge maps agree within one pixel."""
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.random((16, 16)).astype(np.float32), (128, 128), interpolation=cv2.INTER_CUBIC)
    image = image.clip(0, 1)
    ours, ref = canny_edges(image, sigma=2.0), canny(image, sigma=2.0).astype(np.float32)
    near = np.ones((3, 3), np.uint8)
    precision = (ours * cv2.dilate(ref, near)).sum() / ours.sum()
    recall = (ref * cv2.dilate(ours, near)).sum() / ref.sum()
    assert precision > 0.95 and recall > 0.95
    assert 0.9 < ours.sum() / ref.sum() < 1.1


def test_to_gray_uses_601_weights_for_arrays_and_tensors():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]]], np.uint8)  # (1, 4, 3)
    expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gray = to_gray(rgb)
    assert gray.shape == (1, 4) and gray.dtype == np.uint8
    assert np.abs(gray - expected).max() <= 0.5 + 1e-6
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255  # (1, 3, 1, 4)
    gray_t = to_gray(tensor)
    assert gray_t.shape == (1, 1, 1, 4)
    assert torch.allclose(gray_t[0, 0], torch.from_numpy(expected / 255).float(), atol=1e-6)


def _disk_mask(radius: int, size: int = 81) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), radius, 1, -1)
    return mask.astype(bool)


def _radius(mask: np.ndarray) -> float:
    return float(np.sqrt(mask.sum() / np.pi))


@pytest.mark.parametrize("k", [1, 3, 6])
def test_dilate_and_erode_change_a_disks_radius_by_k(k):
    disk = _disk_mask(20)
    assert abs(_radius(dilate_mask(disk, k)) - _radius(disk) - k) < 0.75
    assert abs(_radius(disk) - _radius(erode_mask(disk, k)) - k) < 0.75


def test_zero_pixels_is_identity():
    disk = _disk_mask(10)
    assert np.array_equal(dilate_mask(disk, 0), disk) and np.array_equal(erode_mask(disk, 0), disk)
    assert dilate_mask(disk.astype(np.uint8), 0).dtype == bool


def test_resize_mask_round_trips_integer_scales():
    mask = np.random.default_rng(0).random((12, 10)) > 0.5
    up = resize_mask(mask, (24, 20))
    assert up.shape == (24, 20) and up.dtype == bool
    assert np.array_equal(up, np.kron(mask, np.ones((2, 2), bool)))
    assert np.array_equal(resize_mask(up, (12, 10)), mask)


def test_offset_mask_grows_and_shrinks_by_fractional_pixels_through_the_distance_map():
    square = np.zeros((21, 21), bool)
    square[8:13, 8:13] = True  # 5 x 5
    assert (offset_mask(square, 0) == square).all()
    ring4 = offset_mask(square, 0.5)  # the 4-connected ring: the sides, not the corners
    assert ring4.sum() == 25 + 4 * 5 and not ring4[7, 7] and ring4[7, 8]
    ring8 = offset_mask(square, 1)  # the 8-connected ring: the corners too (sqrt 2 <= 1.5)
    assert ring8.sum() == 49 and ring8[7, 7]
    assert offset_mask(square, 1.5).sum() == 49 + 4 * 5  # 2 away in a row (2 <= 2.0); diagonal 2.24 not yet
    peeled = offset_mask(square, -0.5)  # the outer ring of the square: 3 x 3 left
    assert peeled.sum() == 9 and peeled[9:12, 9:12].all()
    assert offset_mask(square, -2.5).sum() == 0
    grown = [offset_mask(square, r).sum() for r in (0, 0.5, 1, 1.5, 2, 2.5)]
    assert grown == sorted(grown) and len(set(grown)) == len(grown)  # every fractional step changes the mask
    assert not offset_mask(np.zeros((5, 5)), 3).any()  # nothing to grow from
    disk = _disk_mask(20)
    for r in (1.5, 2.5, 4.0):  # a disk's radius (from its area) moves by r, to half a pixel
        assert abs(_radius(offset_mask(disk, r)) - _radius(disk) - r) < 0.5, r
        assert abs(_radius(disk) - _radius(offset_mask(disk, -r)) - r) < 0.5, r
