"""The engines that run the networks for inference, behind one interface, and the ONNX one loaded from an
export folder. This module imports no torch: the PyTorch engine is components/torch_backend.py.

Both engines take and return numpy float32 NCHW arrays at the working resolution, so everything around the
networks (components.inference) is one code path whatever the engine:

    segment(image (B, 3, S, S) RGB in [0, 1])    -> ((B, K, S, S) softmax, (B, 2, S, S) offsets to the
                                                     objects' centers in px, or None without the head)
    probabilities(image)                                                 -> the softmax alone
    fill(image, edges (B, 1, S, S), probabilities, mask (B, 1, S, S))    -> (B, 3, S, S) raw image inpainter output

The ONNX graphs and their tensor names are the export contract (components.export_contract); stage
`export`'s parity check holds them to the PyTorch modules within `export.tolerance`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from components.export_contract import (
    INPAINTER_FILE,
    INPAINTER_INPUTS,
    MODEL_JSON,
    SEGMENTER_FILE,
    SEGMENTER_INPUTS,
    missing_files,
)
from components.inference import InferenceConfig, ObjectRemover, model_info


class Backend(Protocol):
    name: str

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def probabilities(self, image: np.ndarray) -> np.ndarray: ...

    def fill(self, image: np.ndarray, edges: np.ndarray, probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


class OnnxBackend:
    """ONNX Runtime sessions of the exported graphs (tensor names from the export contract)."""

    name = "onnx"

    def __init__(self, segmenter, inpainter):  # onnxruntime.InferenceSession each
        self.segmenter, self.inpainter = segmenter, inpainter

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        (name,) = SEGMENTER_INPUTS
        outputs = self.segmenter.run(None, {name: np.ascontiguousarray(image, np.float32)})
        return outputs[0], outputs[1] if len(outputs) > 1 else None  # the graph's "offsets" when it has the head

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        return self.segment(image)[0]

    def fill(self, image: np.ndarray, edges: np.ndarray, probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = dict(zip(INPAINTER_INPUTS, (image, edges, probabilities, mask), strict=True))
        return self.inpainter.run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feed.items()})[0]


def load_onnx_remover(folder: str | Path, config: InferenceConfig | None = None) -> ObjectRemover:
    """An ObjectRemover on ONNX Runtime (CPU) from an export folder; a missing file is named."""
    import onnxruntime as ort

    folder = Path(folder)
    for file in missing_files(folder):
        raise FileNotFoundError(f"ONNX model file not found: {file} (run `dvc repro export`)")
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def session(name: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])

    meta = json.loads((folder / MODEL_JSON).read_text())
    engine = OnnxBackend(session(SEGMENTER_FILE), session(INPAINTER_FILE))
    return ObjectRemover(engine, model_info(meta), config or InferenceConfig())
