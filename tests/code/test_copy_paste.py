"""Blending modes and placement: `I == I_G` outside `M_G` for every mode, and each mode looks like itself."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from components.buckets import bucket_labels, bucket_of
from components.coco import mask_bbox
from components.copy_paste import BLEND_MODES, PasteConfig, blend, cut_object, fit_background, paste, visible_share

SIZE = 64
CONFIG = PasteConfig(size=SIZE, min_mask_ratio=0.005, max_mask_ratio=0.4, max_upscale=4.0, max_outside=0.3,
                     feather_sigma=(1.0, 1.5), motion_blur_length=(5, 7))


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    source = np.full((40, 30, 3), (30, 60, 90), np.uint8)
    source[10:30, 8:22] = (250, 20, 20)
    mask = np.zeros((40, 30), bool)
    mask[10:30, 8:22] = True
    return background, source, mask


def test_cut_object_crops_to_the_mask(scene):
    _, source, mask = scene
    obj, obj_mask = cut_object(source, mask)
    assert obj.shape == (20, 14, 3) and obj_mask.all()
    assert (obj == (250, 20, 20)).all()


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_outside_the_mask_is_untouched(scene, mode):
    background, source, mask = scene
    obj, obj_mask = cut_object(source, mask)
    pasted = paste(background, obj, obj_mask, 0.15, mode, CONFIG, np.random.default_rng(1))
    assert pasted is not None
    outside = ~pasted.mask
    assert np.array_equal(pasted.image[outside], background[outside])
    assert (pasted.image[pasted.mask] != background[pasted.mask]).any(axis=-1).mean() > 0.5
    assert pasted.bbox == mask_bbox(pasted.mask)
    assert (pasted.alpha[pasted.mask] >= 0.1).all() and (pasted.alpha[outside] == 0).all()


def _hard(background, source, mask, mode, seed=3):
    canvas = np.zeros((SIZE, SIZE, 3), np.float32)
    coverage = np.zeros((SIZE, SIZE), np.float32)
    canvas[20:40, 20:34] = source[10:30, 8:22]
    coverage[20:40, 20:34] = 1.0
    return blend(background, canvas, coverage, mode, CONFIG, np.random.default_rng(seed)), coverage > 0


def test_none_is_a_hard_paste(scene):
    (image, mask, alpha), hard = _hard(*scene, "none")
    assert np.array_equal(mask, hard)
    assert (image[hard] == (250, 20, 20)).all()
    assert set(np.unique(alpha)) == {0.0, 1.0}


def test_gaussian_feathers_both_sides_of_the_edge(scene):
    (image, mask, alpha), hard = _hard(*scene, "gaussian")
    assert mask.sum() > hard.sum()  # the halo outside the silhouette is in M_G
    edge = alpha[(alpha > 0) & (alpha < 1)]
    assert edge.size > 40
    assert alpha[30, 27] > 0.99  # deep inside stays opaque


def test_motion_blur_smears_along_a_line(scene):
    (image, mask, alpha), hard = _hard(*scene, "motion_blur")
    assert mask.sum() > hard.sum()
    assert ((alpha > 0) & (alpha < 1)).sum() > 40
    ys, xs = np.nonzero(mask)
    assert (np.ptp(xs) + 1) * (np.ptp(ys) + 1) > 20 * 14  # the footprint grew


def test_poisson_adapts_colours_inside_the_mask(scene):
    background, source, mask = scene
    (image, pmask, _), hard = _hard(background, source, mask, "poisson")
    (plain, _, _), _ = _hard(background, source, mask, "none")
    assert np.array_equal(pmask, hard)
    diff = np.abs(image[hard].astype(int) - plain[hard].astype(int)).mean()
    assert diff > 5  # seamlessClone shifted the colours towards the background


def test_ratio_follows_the_target(scene):
    background, source, mask = scene
    obj, obj_mask = cut_object(source, mask)
    for target in (0.02, 0.08, 0.2):
        ratios = []
        for seed in range(5):
            pasted = paste(background, obj, obj_mask, target, "none", CONFIG, np.random.default_rng(seed))
            ratios.append(pasted.mask.mean())
        # off-frame placement only ever loses area
        assert max(ratios) == pytest.approx(target, rel=0.15)
        assert all(r <= target * 1.15 for r in ratios)


def test_blur_halo_never_exceeds_the_largest_ratio(scene):
    background, source, mask = scene
    obj, obj_mask = cut_object(source, mask)
    ratios = [paste(background, obj, obj_mask, 0.399, "gaussian", CONFIG, np.random.default_rng(seed)).mask.mean()
              for seed in range(10)]
    assert max(ratios) <= 0.4 and max(ratios) > 0.35


def test_paste_is_deterministic(scene):
    background, source, mask = scene
    obj, obj_mask = cut_object(source, mask)
    a = paste(background, obj, obj_mask, 0.1, "motion_blur", CONFIG, np.random.default_rng(7))
    b = paste(background, obj, obj_mask, 0.1, "motion_blur", CONFIG, np.random.default_rng(7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_unknown_mode_is_rejected(scene):
    with pytest.raises(ValueError, match="unknown blending mode 'cubist'"):
        _hard(*scene, "cubist")


def test_fit_background_keeps_labels_aligned():
    labels = (np.arange(64 * 90) % 251).astype(np.uint8).reshape(64, 90)
    image = np.stack([labels, labels // 2, 255 - labels], -1)
    flips = 0
    for seed in range(8):
        out, out_labels = fit_background(image, labels, 64, 0.5, np.random.default_rng(seed))
        assert out.shape == (64, 64, 3) and out_labels.shape == (64, 64)
        assert np.array_equal(out[..., 0], out_labels)  # same crop, same flip
        flips += bool(out_labels[0, 0] > out_labels[0, 1])
    assert 0 < flips < 8
    big, big_labels = fit_background(image, labels, 32, 0.0, np.random.default_rng(0))
    assert big.shape == (32, 32, 3) and set(np.unique(big_labels)) <= set(np.unique(labels))


def test_buckets():
    edges = [0.0, 0.1, 0.2, 0.3, 0.4]
    assert bucket_labels(edges) == ["0-10", "10-20", "20-30", "30-40"]
    assert bucket_of(0.0, edges) == "0-10"
    assert bucket_of(0.1, edges) == "10-20"
    assert bucket_of(0.4, edges) == "30-40"
    assert bucket_of(0.41, edges) is None


@pytest.mark.parametrize("width", [1, 2])
def test_poisson_on_a_sliver_pastes_it_as_it_is(width):
    """OpenCV 5's seamlessClone asserts on masks under 3 px wide; such slivers are pasted unblended."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
    canvas = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
    coverage = np.zeros((40, 40), np.float32)
    coverage[5:35, 20:20 + width] = 1.0
    image, mask, alpha = blend(background, canvas, coverage, "poisson", CONFIG, rng)
    assert mask.sum() == 30 * width
    np.testing.assert_array_equal(image[mask], np.round(canvas[mask]).astype(np.uint8))
    np.testing.assert_array_equal(image[~mask], background[~mask])


def test_a_flat_poisson_paste_on_flat_ground_vanishes_and_is_redrawn():
    """seamlessClone keeps only the object's gradients: a flat object on a flat background comes out as the
    background. With min_visible_share such a placement is re-drawn; where none can show (here), the object is
    pasted hard and the pair says so."""
    background = np.full((SIZE, SIZE, 3), 120, np.uint8)
    obj, obj_mask = np.full((20, 8, 3), 250, np.uint8), np.ones((20, 8), bool)
    vanished = paste(background, obj, obj_mask, 0.05, "poisson", CONFIG, np.random.default_rng(0))
    assert vanished.mode == "poisson" and visible_share(vanished.image, background, vanished.mask) < 0.1
    shown = paste(background, obj, obj_mask, 0.05, "poisson", replace(CONFIG, min_visible_share=0.5),
                  np.random.default_rng(0))
    assert shown.mode == "none" and visible_share(shown.image, background, shown.mask) == 1.0
    assert (shown.image != background).any(axis=-1).sum() == shown.mask.sum()  # I == I_G outside M_G still


def test_a_poisson_paste_that_shows_keeps_its_mode():
    rng = np.random.default_rng(1)
    background = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)  # texture: the clone smooths it away
    obj, obj_mask = np.full((20, 8, 3), 250, np.uint8), np.ones((20, 8), bool)
    pasted = paste(background, obj, obj_mask, 0.05, "poisson", replace(CONFIG, min_visible_share=0.5), rng)
    assert pasted.mode == "poisson" and visible_share(pasted.image, background, pasted.mask) >= 0.5
