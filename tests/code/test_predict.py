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
