"""python -m serving.store [ONNX_DIR] [--name object-removal]

Import the `export` stage's folder (segmenter.onnx, inpainter.onnx, model.json) into the BentoML model
store (`$BENTOML_HOME/models`) as one folder model that the service loads with `BentoModel`. The
metadata repeats what model.json says about provenance and quality, so `bentoml models get` shows it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import bentoml

MODEL_NAME = "object-removal"
FILES = ("segmenter.onnx", "inpainter.onnx", "model.json")
METADATA_KEYS = ("classes", "target_classes", "image_size", "params_hash", "git_revision", "parity", "metrics",
                 "opset", "onnxruntime")


def import_model(onnx_dir: str | Path, name: str = MODEL_NAME, labels: dict[str, str] | None = None) -> bentoml.Tag:
    """Copy the three export files into a new version of model `name`; returns its tag."""
    folder = Path(onnx_dir)
    missing = [str(folder / file) for file in FILES if not (folder / file).is_file()]
    if missing:
        raise FileNotFoundError(f"ONNX export incomplete, missing {missing} (run `dvc repro export`)")
    info = json.loads((folder / "model.json").read_text())
    metadata = {key: info[key] for key in METADATA_KEYS if key in info}
    tags = {"framework": "onnxruntime", "params_hash": str(info.get("params_hash", "")),
            "git_revision": str(info.get("git_revision", ""))[:12], **(labels or {})}
    with bentoml.models.create(name, labels=tags, metadata=metadata) as model:
        for file in FILES:
            shutil.copy2(folder / file, model.path_of(file))
    return model.tag


def build_bento(onnx_dir: str | Path, bentofile: str | Path, labels: dict[str, str] | None = None
                ) -> tuple[bentoml.Bento, bentoml.Tag]:
    """`import_model`, then `bentoml build` of `bentofile` (build context: its folder), both labelled with
    `labels`; the new model version is the newest, so the Bento packs it. Returns (Bento, model tag)."""
    model_tag = import_model(onnx_dir, labels=labels)
    bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(Path(bentofile).resolve().parent),
                                           labels={"model": str(model_tag), **(labels or {})})
    return bento, model_tag


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.store", description=__doc__.split("\n\n")[1])
    parser.add_argument("onnx_dir", nargs="?", default="models/onnx", type=Path)
    parser.add_argument("--name", default=MODEL_NAME)
    args = parser.parse_args(argv)
    print(import_model(args.onnx_dir, args.name))


if __name__ == "__main__":
    main()
