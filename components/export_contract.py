"""The export contract: what stage `export` writes and everything downstream reads (the ONNX backend, the
MLflow registry, the BentoML model store). Defined here once; no import beyond the standard library, so
the registry and the store can use it without numpy, torch or ONNX Runtime.

    segmenter.onnx   image (B, 3, S, S)                              -> probabilities (B, K, S, S)
                                                                        [, offsets (B, 2, S, S)]
    inpainter.onnx   image, edges (B, 1, S, S), probabilities, mask  -> fill (B, 3, S, S)
    model.json       the fields below: classes, target classes, working resolution S, Canny sigma, ...

All tensors float32 NCHW, RGB in [0, 1], mask 1 = fill, edges in {0, 1}. `offsets` (dy, dx in pixels of S,
from each pixel to its object's center) is an output only when the segmenter has the offset head.
"""

from __future__ import annotations

from pathlib import Path

SEGMENTER_FILE = "segmenter.onnx"
INPAINTER_FILE = "inpainter.onnx"
MODEL_JSON = "model.json"
GRAPH_FILES = (SEGMENTER_FILE, INPAINTER_FILE)
FILES = (*GRAPH_FILES, MODEL_JSON)  # an export folder is exactly these

SEGMENTER_INPUTS = ("image",)
SEGMENTER_OUTPUTS = ("probabilities", "offsets")  # "offsets" only with the offset head
INPAINTER_INPUTS = ("image", "edges", "probabilities", "mask")
INPAINTER_OUTPUTS = ("fill",)

# model.json: what inference needs (components.inference.model_info reads these) ...
REQUIRED_FIELDS = ("classes", "target_classes", "image_size")
# ... and what the model store copies into a BentoML model's metadata (served by /info)
METADATA_FIELDS = ("classes", "target_classes", "image_size", "params_hash", "git_revision", "parity", "metrics",
                   "opset", "onnxruntime")


def missing_files(folder: str | Path) -> list[Path]:
    """The files of the contract that `folder` lacks (empty when it is a complete export)."""
    return [Path(folder) / name for name in FILES if not (Path(folder) / name).is_file()]
