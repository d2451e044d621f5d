"""Behaviour of a trained object-removal model (STYLE.md's `tests/model`).

The model is the pipeline's joint model when `dvc repro` has produced `models/joint` in this checkout;
otherwise a small one is trained from scratch (tests/model/small_model.py: scenes -> pairs -> segmenter ->
inpainters -> joint, 48 px), in the background from the start of the session. The inputs are made for the
occasion by the scene generator: stuff-only scenes (sky or wall over textured ground, no objects), with and
without a person standing on them.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from components import scene_figures as figs
from components import scenes
from components.inference import ObjectRemover, Target
from components.metrics import coverage, psnr
from pipelines.checkpoints import remover_from
from tests.conftest import REPO, small_model_checkpoint

COVERAGE_FLOOR = 0.9  # of every pixel the person touches (alpha >= 0.1 at 2x), after a 1-px expansion
PSNR_FLOOR = 26.0  # dB, whole image, after removing one person from a plain texture (the tests' small model)
PIPELINE_PSNR_FLOOR = 32.0  # the same for the pipeline's 128-px model (it reaches 33.2-36.9 dB on these scenes)
PSNR_GAIN = 6.0  # dB above the input with the person still in it
TOUCHING_IOU_FLOOR = 0.8  # a click on one of two touching people: IoU of the removal with that person
TOUCHING_OTHER_CEILING = 0.05  # and at most this share of the other person removed with it


PIPELINE_CHECKPOINT = REPO / "models" / "joint" / "best.ckpt"


@pytest.fixture(scope="module")
def model(request) -> tuple[ObjectRemover, int]:
    """(remover, working resolution): the pipeline's joint model, else the small one the session trains in
    the background (tests/conftest.py)."""
    checkpoint = PIPELINE_CHECKPOINT
    if not checkpoint.is_file():
        checkpoint = small_model_checkpoint(request.config)
    size = json.loads((checkpoint.parent / "joint.json").read_text())["image_size"]
    return remover_from(checkpoint), size


def _to_working(planes: np.ndarray, size: int) -> np.ndarray:
    """(3, 2s, 2s) float planes -> (s, s, 3) uint8, area-downsampled as the pairs are."""
    rgb = (np.clip(planes.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [0, 1]; (H, W) bool -> (1, 1, H, W) {0, 1}."""
    if array.ndim == 2:
        return torch.from_numpy(array).float()[None, None]
    return torch.from_numpy(array).permute(2, 0, 1).float()[None] / 255


def plain_background(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene with stuff only (sky or wall over grass, road, water or sand; real textures, no objects),
    rendered at twice `size` like the built-in scenes and downsampled: (planes at 2x, (s, s, 3) uint8)."""
    planes = scenes.layout_stuff(np.random.default_rng(seed), 2 * size).rgb
    return planes, _to_working(planes, size)


def _paste(image: np.ndarray, rng: np.random.Generator, cx: float, size: int) -> np.ndarray:
    """A standing person drawn over the 2x `image` planes (in place), centred on column `cx` (fraction of
    the width); returns its (2s, 2s) float mask of every pixel it touches (alpha >= 0.1)."""
    big = 2 * size
    sprite = figs.draw_person(rng, big * cx, 0.93 * big, 0.6 * big, big, 2, 0.5)
    h, w = sprite.alpha.shape
    region = image[:, sprite.y0:sprite.y0 + h, sprite.x0:sprite.x0 + w]
    region *= 1 - sprite.alpha
    region += sprite.premult
    mask = np.zeros((big, big), np.float32)
    mask[sprite.y0:sprite.y0 + h, sprite.x0:sprite.x0 + w] = sprite.alpha >= 0.1
    return mask


def _small(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA) > 0


def with_person(planes: np.ndarray, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A standing person pasted on the 2x background, downsampled, and the person's mask (s, s) bool
    (every pixel the person touches, as the training pairs' masks)."""
    image = planes.copy()
    mask = _paste(image, np.random.default_rng(seed), 0.5, size)
    return _to_working(image, size), _small(mask, size)


def two_touching_people(planes: np.ndarray, seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two people side by side, the right one drawn first and the left one over it where they meet:
    (image (s, s, 3), left (s, s) bool, right (s, s) bool: its visible pixels), touching at the working size."""
    rng = np.random.default_rng(seed)
    image = planes.copy()
    right = _paste(image, rng, 0.58, size)
    left = _paste(image, rng, 0.44, size)
    left_small, right_small = _small(left, size), _small(right * (left == 0), size)
    return _to_working(image, size), left_small, right_small & ~left_small


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixels_outside_the_mask_are_unchanged(model, seed):
    remover, size = model
    image, person = with_person(plain_background(seed, size)[0], seed, size)
    for removal in (remover.remove(image), remover.remove(image, expand_px=2),
                    remover.remove(image, Target(mask=person))):
        np.testing.assert_array_equal(removal.image[~removal.mask], image[~removal.mask])
    np.testing.assert_array_equal(remover.remove(image, Target(mask=person)).mask, person)


@pytest.mark.parametrize("seed", [10, 11, 12, 13])
def test_no_target_object_gives_an_empty_mask_and_the_same_image(model, seed):
    remover, size = model
    image = plain_background(seed, size)[1]
    removal = remover.remove(image)
    assert removal.mask.sum() == 0 and removal.bbox is None
    np.testing.assert_array_equal(removal.image, image)


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_a_person_on_a_plain_background_is_removed(model, seed):
    remover, size = model
    planes, background = plain_background(seed, size)
    image, person = with_person(planes, seed, size)
    removal = remover.remove(image, expand_px=1)
    assert coverage(_tensor(removal.mask), _tensor(person)).item() >= COVERAGE_FLOOR
    before = psnr(_tensor(image), _tensor(background)).item()
    after = psnr(_tensor(removal.image), _tensor(background)).item()
    floor = PIPELINE_PSNR_FLOOR if PIPELINE_CHECKPOINT.is_file() else PSNR_FLOOR
    assert after >= floor and after >= before + PSNR_GAIN, (before, after)


@pytest.mark.xfail(strict=True, reason="known gap (issue 13, item 4): the tests' small model has no offset head "
                   "(tests/model/small_model.py); the pipeline's, at 128 px with its segmenter at 128 (depth 4), "
                   "splits the two people on 9 of 10 scenes but its mask of the clicked one stays just below the "
                   "bar on 8 of them (README: mean IoU 0.73, 1 of 10 scenes passes); the splitting itself is "
                   "tested with a stand-in backend in tests/code/test_inference.py. strict: the suite fails once a "
                   "model passes, so this mark goes")
@pytest.mark.parametrize("seed", [30, 31, 32])
def test_a_click_on_one_of_two_touching_people_removes_that_one(model, seed):
    """The offset head should split the two touching people into two instances, so that a click on the
    left one removes it and leaves the right one."""
    remover, size = model
    image, left, right = two_touching_people(plain_background(seed, size)[0], seed, size)
    grown = cv2.dilate(left.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert (grown & right).any(), "the scene must show two people touching"
    distance = cv2.distanceTransform(left.astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)  # the middle of the left person's torso
    removal = remover.remove(image, Target(points=((x + 0.5, y + 0.5),)))
    iou = (removal.mask & left).sum() / (removal.mask | left).sum()
    other = (removal.mask & right).sum() / right.sum()
    assert iou >= TOUCHING_IOU_FLOOR and other <= TOUCHING_OTHER_CEILING, (round(float(iou), 3), round(float(other), 3))
