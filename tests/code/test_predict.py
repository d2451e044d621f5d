"""The Python API (`pipelines.predict.remove`) and the batch command line, on the tiny exported model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from components.images import decode_image
from components.inference import Target
from pipelines.predict import load_remover, main, remove

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(exported) -> str:
    return exported[0]["paths"]["onnx"]


def picture(width: int, height: int, seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def test_remove_takes_a_file_or_an_array_and_leaves_the_rest_untouched(model_dir, tmp_path):
    image = picture(301, 199, 0)
    Image.fromarray(image).save(tmp_path / "in.png")
    mask = np.zeros((199, 301), bool)
    mask[50:90, 100:160] = True
    from_file = remove(tmp_path / "in.png", Target(mask=mask), model=model_dir)
    from_array = remove(image, Target(mask=mask), model=model_dir)
    np.testing.assert_array_equal(from_file.image, from_array.image)
    np.testing.assert_array_equal(from_file.mask, mask)
    np.testing.assert_array_equal(from_file.image[~mask], image[~mask])
    assert from_file.bbox == (100, 50, 160, 90)
    assert remove(image, "person", model=model_dir).image.shape == image.shape  # a class name is a target


def test_a_missing_model_and_a_bad_backend_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ONNX model file not found: .*nowhere/segmenter.onnx"):
        load_remover(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="backend must be 'onnx' or 'torch', got 'tf'"):
        load_remover(tmp_path, "tf")


def test_the_batch_command_writes_results_and_masks_and_names_what_it_skipped(model_dir, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    Image.fromarray(picture(97, 61, 1)).save(inputs / "a.png")
    Image.fromarray(picture(640, 480, 2)).save(inputs / "b.jpg", quality=95)
    rgba = np.dstack([picture(50, 40, 3), np.full((40, 50), 77, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(inputs / "c.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (inputs / "notes.txt").write_text("not an image, not picked up")
    run = subprocess.run([sys.executable, "-m", "pipelines.predict", str(inputs), str(outputs), "--model", model_dir,
                          "--expand", "2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "broken.png" in run.stderr and "removing" in run.stderr  # the skip is named; tqdm's bar
    lines = [json.loads(line) for line in (outputs / "summary.jsonl").read_text().splitlines()]
    assert [Path(line["input"]).name for line in lines] == ["a.png", "b.jpg", "c.png"]
    for line in lines:
        result = decode_image(Path(line["output"]).read_bytes(), 10**7)
        assert result.rgb.shape == (line["height"], line["width"], 3)
        mask = np.asarray(Image.open(Path(line["output"]).with_suffix(".mask.png")))
        assert mask.shape == (line["height"], line["width"]) and set(np.unique(mask)) <= {0, 255}
        assert int((mask == 255).sum()) == line["removed_pixels"]
    transparent = decode_image((outputs / "c.png").read_bytes(), 10**7)
    assert transparent.alpha is not None and np.all(transparent.alpha == 77)  # the input's transparency kept


def test_the_batch_command_refuses_an_unknown_class_before_reading_images(model_dir, tmp_path):
    assert main([str(tmp_path), str(tmp_path / "out"), "--model", model_dir, "--classes", "unicorn"]) == 2
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "missing"), str(tmp_path / "out"), "--model", model_dir]) == 2


def object_scene(exported, model_dir: str) -> tuple[np.ndarray, object]:
    """A test pair of the tiny pipeline (96 x 96) in which the exported model finds an object: (image, the
    largest Segment). Other tests select it by a point or a box, so what they check is not an empty mask."""
    remover = load_remover(model_dir)
    pairs = Path(exported[0]["paths"]["pairs"]) / "test"
    for line in (pairs / "manifest.jsonl").read_text().splitlines():
        image = np.asarray(Image.open(pairs / json.loads(line)["files"]["images"]).convert("RGB"))
        image = cv2.resize(image, (96, 96), interpolation=cv2.INTER_NEAREST)
        segments = [s for s in remover.segment(image) if s.mask.sum() >= 20]
        if segments:
            return image, max(segments, key=lambda s: s.mask.sum())
    raise AssertionError("the tiny model finds no object in any test pair")


def test_the_batch_command_takes_points_a_box_and_a_mask_file(exported, model_dir, tmp_path, capsys):
    """--points, --box and --mask reach the inference path as the API's Target does (same masks, bit for bit),
    on a test pair of the tiny model where it finds an object; bad values are named."""
    image, segment = object_scene(exported, model_dir)
    ys, xs = np.nonzero(segment.mask)
    inside = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    point = (int(xs[inside]), int(ys[inside]))
    x0, y0, x1, y1 = segment.bbox
    Image.fromarray(image).save(tmp_path / "scene.png")
    user_mask = np.zeros(image.shape[:2], bool)
    user_mask[10:30, 40:70] = True
    Image.fromarray(user_mask.astype(np.uint8) * 255).save(tmp_path / "user.png")

    def cli(name: str, *flags: str) -> np.ndarray:
        out = tmp_path / name
        assert main([str(tmp_path / "scene.png"), str(out), "--model", model_dir, *flags]) == 0
        return np.asarray(Image.open(out / "scene.mask.png")) == 255

    by_point = cli("point", "--points", f"{point[0]},{point[1]}")
    np.testing.assert_array_equal(by_point, remove(image, Target(points=(point,)), model=model_dir).mask)
    assert (by_point & segment.mask).sum() >= 20  # that object (its window's refinement may move the outline)
    by_box = cli("box", "--box", f"{x0},{y0},{x1},{y1}")
    np.testing.assert_array_equal(by_box, remove(image, Target(box=(x0, y0, x1, y1)), model=model_dir).mask)
    assert (by_box & segment.mask).sum() >= 20  # that object, refined in its window (where the split may differ)
    by_mask = cli("mask", "--mask", str(tmp_path / "user.png"))
    np.testing.assert_array_equal(by_mask, user_mask)  # exactly the mask file's white pixels
    result = np.asarray(Image.open(tmp_path / "mask" / "scene.png").convert("RGB"))
    np.testing.assert_array_equal(result[~user_mask], image[~user_mask])

    def fails(*flags: str) -> str:  # in this process: the exit status, and what went to stderr
        capsys.readouterr()
        try:
            status = main([str(tmp_path / "scene.png"), str(tmp_path / "bad"), "--model", model_dir, *flags])
        except SystemExit as exit:  # argparse's refusal of a flag's value
            status = exit.code
        assert status in (1, 2)
        return capsys.readouterr().err

    assert "--points takes X,Y (2 numbers), got '12'" in fails("--points", "12")
    assert "--box takes X0,Y0,X1,Y1 (4 numbers), got '1,2,3'" in fails("--box", "1,2,3")
    assert "--mask fills exactly the mask: it cannot be combined with" in fails("--mask", str(tmp_path / "user.png"),
                                                                              "--box", "1,2,30,40")
    assert f"--mask: image file not found: {tmp_path / 'none.png'}" in fails("--mask", str(tmp_path / "none.png"))
    assert "point (500, 5) is outside the 96x96 image (the selection given)" in fails("--points", "500,5")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "small.png")
    small = fails("--mask", str(tmp_path / "small.png"))
    assert "mask is 12x10 but the image is 96x96 (the --mask file given)" in small
