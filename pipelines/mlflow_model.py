"""The registered model as an MLflow model: a pyfunc flavour over the ONNX export and the one inference path.

    model = mlflow.pyfunc.load_model("models:/object-removal@champion")
    out = model.predict(pd.DataFrame([{"image": png_bytes, "points": [[412.0, 230.0]]}]))
    out.loc[0, "image"], out.loc[0, "mask"]     # PNG bytes: the result, and what was filled (white)

One row per image. Columns in (the signature; all but `image` optional): `image` (an encoded image file:
PNG, JPEG, ...), `classes` (class names), `points` ([[x, y], ...] in image pixels), `box` ([x0, y0, x1, y1]),
`mask` (an image file of the input's size, white = fill, alone), `expand` (pixels, < 0 erodes): the fields
of `components.inference.Target`. Columns out: `image` and `mask` (PNG bytes), `removed_pixels`. Over
`mlflow models serve`, binary columns travel base64-encoded (MLflow's JSON convention).

The model's artifacts are the export's files (components.export_contract) and `predict` calls
`components.backends.load_onnx_remover(...).remove`, the service's and the command line's path: no model
math here. A bad row fails with the ValueError of the inference path, naming the row and the bad value.

This file is an MLflow "model from code" script: `pipelines.registry` logs it with the version (and a copy of
`components/`, the inference code of that version), MLflow runs it when the model is loaded, and its last
line hands MLflow the model. The project never imports it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd

from components.export_contract import SEGMENTER_FILE
from components.images import DEFAULT_MAX_PIXELS, decode_image, encode_png, mask_png
from components.inference import Target


def _given(value) -> bool:
    """A cell that holds a value (pandas fills the optional columns of other rows with None or NaN)."""
    if value is None:
        return False
    return not (isinstance(value, float) and np.isnan(value))


class RemovalModel(mlflow.pyfunc.PythonModel):
    """`predict`: one removal per row, through the ONNX backend of the export in the model's artifacts."""

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = max_pixels
        self.remover = None

    def load_context(self, context) -> None:
        from components.backends import load_onnx_remover

        self.remover = load_onnx_remover(Path(context.artifacts[SEGMENTER_FILE]).parent)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = []
        for index, row in enumerate(frame.to_dict("records")):
            try:
                rows.append(self._one(row))
            except ValueError as err:  # ImageError and TargetError are ValueErrors that name the value
                raise ValueError(f"row {index}: {err}") from None
        return pd.DataFrame(rows, columns=["image", "mask", "removed_pixels"])

    def _one(self, row: dict) -> dict:
        # 1. decode the image and the target's fields
        image = decode_image(bytes(row["image"]), self.max_pixels, what="image").rgb
        mask = None
        if _given(row.get("mask")):
            mask = decode_image(bytes(row["mask"]), self.max_pixels, what="mask").rgb.mean(axis=2) > 127
        target = Target(classes=tuple(row["classes"]) if _given(row.get("classes")) else (),
                        points=tuple(tuple(p) for p in row["points"]) if _given(row.get("points")) else (),
                        box=tuple(row["box"]) if _given(row.get("box")) else None, mask=mask)
        expand = int(row["expand"]) if _given(row.get("expand")) else 0
        # 2. the one inference path (it validates the target against the image)
        result = self.remover.remove(image, target, expand)
        return {"image": encode_png(result.image), "mask": mask_png(result.mask),
                "removed_pixels": int(result.mask.sum())}


mlflow.models.set_model(RemovalModel())
