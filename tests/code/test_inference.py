"""The inference path at any image size (components.inference): target selection, windows around the
masked regions, paste-back that leaves every other pixel bit-identical, and the two backends agreeing.

`PaintedBackend` stands in for the networks where a test needs to know what they output: its
"segmenter" labels pure red pixels person and pure blue ones car, its "inpainter" fills mid-grey. The
backend tests use the tiny model the pipeline trains and exports (conftest `exported`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from components.inference import (
    InferenceConfig,
    ModelInfo,
    ObjectRemover,
    Target,
    TargetError,
    context_windows,
    edges_of,
)
from components.masks import erode_mask
from pipelines.checkpoints import remover_from
from pipelines.predict import load_remover

INFO = ModelInfo(("background", "person", "car", "sky"), removable=(1, 2), default_targets=(1,), image_size=32)
RED, BLUE = (230, 20, 20), (20, 20, 230)


class PaintedBackend:
    """Person = red, car = blue: the stand-in segmenter; its offset head points each person or car pixel at
    the center of its patch of one exact colour (so two touching people painted in two reds are two)."""

    name = "painted"

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        probabilities = self.probabilities(image)
        offsets = np.zeros((len(image), 2, *image.shape[-2:]), np.float32)
        for b, picture in enumerate(image):
            things = probabilities[b, 1] + probabilities[b, 2] > 0
            codes = np.where(things, np.round(picture[0] * 255) * 65536 + np.round(picture[2] * 255), -1)
            for code in np.unique(codes[things]):
                count, patches = cv2.connectedComponents((codes == code).astype(np.uint8))
                for index in range(1, count):
                    ys, xs = np.nonzero(patches == index)
                    offsets[b, 0, ys, xs], offsets[b, 1, ys, xs] = ys.mean() - ys, xs.mean() - xs
        return probabilities, offsets

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        r, g, b = image[:, 0], image[:, 1], image[:, 2]
        person = (r > 0.6) & (g < 0.4) & (b < 0.4)
        car = (b > 0.6) & (r < 0.4) & (g < 0.4)
        return np.stack([~(person | car), person, car, np.zeros_like(car)], axis=1).astype(np.float32)

    def fill(self, image, edges, probabilities, mask) -> np.ndarray:
        return np.full_like(image, 0.5)


def painted(config: InferenceConfig | None = None) -> ObjectRemover:
    return ObjectRemover(PaintedBackend(), INFO, config or InferenceConfig())


def scene(width: int = 641, height: int = 479, seed: int = 0) -> np.ndarray:
    """Grey noise with two red people (left, right) and a blue car (bottom middle)."""
    image = np.random.default_rng(seed).integers(90, 160, (height, width, 3)).astype(np.uint8)
    cv2.rectangle(image, (60, 80), (160, 300), RED, -1)
    cv2.rectangle(image, (480, 60), (560, 260), RED, -1)
    cv2.rectangle(image, (260, 330), (420, 430), BLUE, -1)
    return image


def coloured(image: np.ndarray, colour) -> np.ndarray:
    return np.all(image == colour, axis=-1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_outside_the_mask_every_pixel_is_the_input_at_an_odd_size():
    image = scene()
    result = painted().remove(image)
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    np.testing.assert_array_equal(result.image[~result.mask], image[~result.mask])
    inner = erode_mask(result.mask, 25)  # a working-resolution cell is ~20 px: the fill blends in at the edge
    assert inner.sum() > 10_000 and np.all(result.image[inner] == 128)  # the fill, mid-grey
    red = coloured(image, RED)
    assert result.mask[red].mean() > 0.97 and not result.mask[coloured(image, BLUE)].any()
    assert result.bbox is not None and result.bbox[0] <= 60 and result.bbox[2] >= 561


def test_a_point_picks_the_instance_under_it_of_any_removable_class():
    image = scene()
    car = painted().remove(image, Target(points=((340, 380),)))
    assert iou(car.mask, coloured(image, BLUE)) > 0.9 and not car.mask[coloured(image, RED)].any()
    person = painted().remove(image, Target(points=((100, 200),)))
    assert person.mask[80:300, 60:160].mean() > 0.95 and not person.mask[:, 400:].any()
    nothing = painted().remove(image, Target(points=((320, 20),)))  # sky, far from every object
    assert nothing.bbox is None and not nothing.mask.any()
    np.testing.assert_array_equal(nothing.image, image)


def test_a_box_picks_the_instances_mostly_inside_it_and_classes_filter():
    image = scene()
    right = painted().remove(image, Target(box=(450, 40, 600, 280)))
    assert right.mask[60:260, 480:560].mean() > 0.95 and not right.mask[:, :400].any()
    cars = painted().remove(image, Target(classes=("car",)))
    assert iou(cars.mask, coloured(image, BLUE)) > 0.9
    only_people = painted().remove(image, Target(classes=("person",), points=((340, 380),)))
    assert not only_people.mask.any()  # the point is on a car


def test_a_user_mask_is_filled_as_given_and_expanded_or_eroded():
    image = scene(seed=1)
    mask = np.zeros(image.shape[:2], bool)
    mask[200:240, 300:333] = True
    mask[10:13, 630:641] = True
    exact = painted().remove(image, Target(mask=mask))
    np.testing.assert_array_equal(exact.mask, mask)
    np.testing.assert_array_equal(exact.image[~mask], image[~mask])
    grown = painted().remove(image, Target(mask=mask), expand_px=3)
    assert grown.mask.sum() > mask.sum() and grown.mask[mask].all() and grown.mask[197, 310]
    shrunk = painted().remove(image, Target(mask=mask), expand_px=-2)
    assert shrunk.mask.sum() < mask.sum() and not shrunk.mask[~mask].any()


def test_a_large_photo_is_cropped_around_the_object_and_the_mask_refined_there():
    image = np.full((1500, 2000, 3), 120, np.uint8)
    cv2.ellipse(image, (1400, 900), (150, 200), 0, 0, 360, RED, -1)
    red = coloured(image, RED)
    refined = painted().remove(image)
    coarse = painted(InferenceConfig(refine=False)).remove(image)
    (x0, y0, x1, y1), = refined.windows
    assert 800 <= x1 - x0 == y1 - y0 <= 900  # the coarse mask's ~400 px + 2 x 200 px context, not the photo
    assert x0 <= 1250 and x1 >= 1550 and y0 <= 700 and y1 >= 1100
    assert iou(refined.mask, red) > 0.93 and iou(coarse.mask, red) < 0.9  # 26 px vs 47 px cells
    np.testing.assert_array_equal(refined.image[~refined.mask], image[~refined.mask])


def test_windows_hold_every_region_and_merge_only_when_they_overlap():
    mask = np.zeros((1000, 3000), bool)
    mask[100:150, 100:150] = True
    mask[100:150, 2800:2850] = True
    mask[120:130, 180:190] = True  # near the first: shares its window
    windows = context_windows(mask, context=0.5, min_side=64)
    assert len(windows) == 2
    covered = np.zeros_like(mask)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= 3000 and 0 <= y0 < y1 <= 1000 and x1 - x0 >= 64
        assert not covered[y0:y1, x0:x1].any()  # disjoint
        covered[y0:y1, x0:x1] = True
    assert covered[mask].all()
    assert context_windows(np.ones((20, 30), bool), 0.5, 64) == [(0, 0, 30, 20)]  # small image: all of it


def test_tiny_and_single_pixel_images_work():
    for shape in ((13, 20, 3), (1, 1, 3)):
        image = np.zeros(shape, np.uint8)
        image[..., 0] = 230
        result = painted().remove(image)
        assert result.mask.all() and np.all(result.image == 128)


@pytest.mark.parametrize(("target", "message"), [
    (Target(classes=("unicorn",)), r"unknown class 'unicorn'; removable classes: car, person"),
    (Target(classes=("sky",)), r"unknown class 'sky'"),
    (Target(points=((641, 10),)), r"point \(641, 10\) is outside the 641x479 image"),
    (Target(points=((float("nan"), 1),)), r"point must be 2 finite numbers"),
    (Target(box=(10, 10, 5, 20)), r"box \(10, 10, 5, 20\) must satisfy"),
    (Target(mask=np.zeros((479, 640), bool)), r"mask is 640x479 but the image is 641x479"),
    (Target(mask=np.zeros((479, 641), bool), classes=("car",)), r"cannot be combined"),
])
def test_a_bad_target_is_named(target, message):
    with pytest.raises(TargetError, match=message):
        painted().remove(scene(), target)


def test_a_bad_image_is_named():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB array, got an array of shape \(10, 10\)"):
        painted().remove(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        painted().remove(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="expand_px must be a whole number"):
        painted().remove(scene(), expand_px=1.5)


@pytest.fixture(scope="module")
def backends(exported) -> dict[str, ObjectRemover]:
    raw, _ = exported
    return {"onnx": load_remover(raw["paths"]["onnx"], "onnx"), "torch": load_remover(raw["paths"]["joint"], "torch")}


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random picture with a few blobs: something for the tiny model to segment and fill."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(3):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (max(1, width // 10), max(1, height // 6))
        cv2.ellipse(image, centre, axes, 0, 0, 360, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return image


@pytest.mark.parametrize(("width", "height"), [(641, 479), (37, 23), (1000, 300), (32, 32)])
def test_onnx_runtime_and_pytorch_give_the_same_removal(backends, width, height):
    image = photo(width, height, seed=width)
    mask = np.zeros((height, width), bool)
    mask[height // 4: height // 2, width // 3: width // 2 + 1] = True
    for target in (Target(), Target(points=((width / 2, height / 2),)), Target(mask=mask)):
        onnx, torch_ = (backends[name].remove(image, target, expand_px=1) for name in ("onnx", "torch"))
        np.testing.assert_array_equal(onnx.mask, torch_.mask)
        assert np.abs(onnx.image.astype(int) - torch_.image.astype(int)).max() <= 1
        for result in (onnx, torch_):
            np.testing.assert_array_equal(result.image[~result.mask], image[~result.mask])
    segments = [backends[name].segment(image) for name in ("onnx", "torch")]
    assert [s.label for s in segments[0]] == [s.label for s in segments[1]]


def test_at_the_working_resolution_the_result_is_the_networks_own_composite(exported, backends):
    """The full-resolution path adds nothing at S x S: the result is the inpainters' composite (what
    evaluation scores), on the uint8 grid."""
    raw, _ = exported
    size = raw["networks"]["image_size"]
    image = photo(size, size, seed=3)
    mask = np.zeros((size, size), bool)
    mask[8:20, 10:22] = True
    result = backends["torch"].remove(image, Target(mask=mask))
    nets = remover_from(Path(raw["paths"]["joint"]) / "best.ckpt").backend
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    hole = torch.from_numpy(mask)[None, None].float()
    with torch.no_grad():
        probabilities = nets.segmenter(tensor).softmax(dim=1)
        edges = torch.from_numpy(edges_of(tensor.numpy(), 1.0))
        reference = nets.inpainters(tensor, edges, probabilities, hole).composite
    expected = (reference[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    assert np.abs(result.image.astype(int) - expected).max() <= 1


def test_a_click_on_one_of_two_touching_people_selects_that_one():
    """Two people side by side are one red component (two reds: the stand-in's offset head points each at its
    own center), so their votes split it and a click on the left one removes it alone."""
    image = np.random.default_rng(3).integers(90, 160, (240, 320, 3)).astype(np.uint8)
    cv2.rectangle(image, (100, 60), (159, 200), RED, -1)
    cv2.rectangle(image, (160, 60), (219, 200), (200, 20, 20), -1)
    left = np.zeros((240, 320), bool)
    left[60:201, 100:160] = True
    right = np.zeros((240, 320), bool)
    right[60:201, 160:220] = True
    result = painted(InferenceConfig(refine=False)).remove(image, Target(points=((120, 130),)))
    iou = (result.mask & left).sum() / (result.mask | left).sum()
    assert iou > 0.9 and (result.mask & right).sum() < 0.1 * right.sum()
    both = painted(InferenceConfig(refine=False)).remove(image, Target(box=(90, 50, 230, 210)))
    assert (both.mask & (left | right)).sum() >= 0.95 * (left | right).sum()
    assert len(painted().segment(image)) == 2
    refined = painted().remove(image, Target(points=((120, 130),)))  # the windows split them again
    assert (refined.mask & right).sum() < 0.1 * right.sum()


