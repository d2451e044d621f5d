"""Stage `export`: the joint model as ONNX graphs that match PyTorch, run by a real ONNX Runtime session."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from components.inference import edges_of
from pipelines.checkpoints import remover_from
from pipelines.params import parse_params
from pipelines.stages import export


def test_graphs_pass_the_checker_and_describe_themselves(exported):
    raw, info = exported
    folder = Path(raw["paths"]["onnx"])
    assert {p.name for p in folder.iterdir()} == {"segmenter.onnx", "inpainter.onnx", "model.json"}
    for name in ("segmenter.onnx", "inpainter.onnx"):
        onnx.checker.check_model(str(folder / name), full_check=True)
        graph = onnx.load(str(folder / name)).graph  # every input and output shares the one dynamic batch axis
        assert {v.type.tensor_type.shape.dim[0].dim_param for v in (*graph.input, *graph.output)} == {"batch"}
    model = json.loads((folder / "model.json").read_text())
    size = raw["networks"]["image_size"]
    assert model["image_size"] == size and model["target_classes"] == info["target_classes"]
    assert model["graphs"]["inpainter.onnx"]["outputs"]["fill"] == ["batch", 3, size, size]
    assert model["parity"]["max_abs_diff"]["fill"] <= raw["export"]["tolerance"]
    assert {"params_hash", "git_revision", "classes", "metrics", "normalization"} <= set(model)
    report = json.loads((Path(raw["paths"]["reports"]) / "export.json").read_text())
    assert report["parity_pairs"] == 4 and report["max_abs_diff_probabilities"] <= raw["export"]["tolerance"]


def test_onnx_runtime_matches_pytorch_at_any_batch(exported):
    raw, _ = exported
    folder = Path(raw["paths"]["onnx"])
    remover = remover_from(Path(raw["paths"]["joint"]) / "best.ckpt")
    nets = remover.backend  # the PyTorch modules
    size, classes = raw["networks"]["image_size"], nets.segmenter.config.num_classes
    segmenter = ort.InferenceSession(str(folder / "segmenter.onnx"), providers=["CPUExecutionProvider"])
    inpainter = ort.InferenceSession(str(folder / "inpainter.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):  # the exporter saw a batch of 2
        image = torch.rand(batch, 3, size, size, generator=generator)
        mask = (torch.rand(batch, 1, size, size, generator=generator) > 0.7).float()
        with torch.no_grad():
            probabilities = nets.segmenter(image).softmax(dim=1)
            edges = torch.from_numpy(edges_of(image.numpy(), 1.0))
            fill = nets.inpainters(image, edges, probabilities, mask).image
        onnx_probabilities = segmenter.run(None, {"image": image.numpy()})[0]
        assert onnx_probabilities.shape == (batch, classes, size, size)
        np.testing.assert_allclose(onnx_probabilities, probabilities.numpy(), atol=1e-4)
        feed = {"image": image, "edges": edges, "probabilities": probabilities, "mask": mask}
        onnx_fill = inpainter.run(None, {k: v.numpy() for k, v in feed.items()})[0]
        np.testing.assert_allclose(onnx_fill, fill.numpy(), atol=1e-4)


def test_a_parity_failure_fails_the_stage_and_keeps_the_old_export(exported):
    raw, _ = exported
    folder = Path(raw["paths"]["onnx"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    strict = copy.deepcopy(raw)
    strict["export"]["tolerance"] = 1e-30  # float32 graphs never agree to that
    with pytest.raises(export.ParityError, match="export.tolerance = 1e-30"):
        export.run(parse_params(strict))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_missing_joint_checkpoint_is_named(exported, tmp_path):
    raw = copy.deepcopy(exported[0])
    raw["paths"].update(joint=str(tmp_path / "nowhere"), onnx=str(tmp_path / "onnx"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nowhere/best.ckpt \(run `dvc repro"):
        export.run(parse_params(raw))
    assert not (tmp_path / "onnx").exists()

