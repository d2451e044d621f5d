"""python -m pipelines.stages.package [--params params.yaml]

Stage `package`: the ONNX export (`paths.onnx`, stage `export`) becomes a Bento *file*, built in a private,
temporary BentoML store, so the user's store (`$BENTOML_HOME`, default ~/bentoml) is not touched:
what goes into that store and is served is only what the registry promotes (the retraining flow's
`build_champion_bento`, pipelines/retrain.py), never a challenger that may lose.

    1. build   `python -m serving.store build` in the temporary store: the export as model
               `object-removal:<fingerprint>`, and `bentoml build` of `package.bentofile` with that tag
               pinned as the Bento argument `model` (the service never resolves "latest")
    2. file    the Bento exported to `paths.bento/object-removal.bento` (it holds the model), so DVC tracks
               what was built and another machine takes it with `bentoml import`; `paths.bento/bento.json`
               names the Bento and model tags, the fingerprint, the model's metrics, params hash, git revision

Then `bentoml import models/bento/object-removal.bento && bentoml serve <bento tag>` serves it anywhere.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

from pipelines.common import atomic_dir, git_revision, params_hash, stage_main, write_json
from pipelines.params import Params

log = logging.getLogger("package")
STAGE = "package"


def run(params: Params) -> dict:
    from serving.store import fingerprint, in_store

    onnx_dir, bentofile = Path(params.paths.onnx), Path(params.package.bentofile)
    if not bentofile.is_file():
        raise FileNotFoundError(f"bentofile not found: {bentofile} (package.bentofile)")
    identity = fingerprint(onnx_dir)
    model_info = json.loads((onnx_dir / "model.json").read_text())
    section = {"package": params.package.model_dump(mode="json"), "paths.onnx": str(onnx_dir)}
    with atomic_dir(Path(params.paths.bento)) as out, tempfile.TemporaryDirectory(prefix="package-store-") as store:
        file = out / "object-removal.bento"
        # 1. model and Bento in the private store, 2. the Bento as a file DVC tracks (absolute: BentoML reads a
        # relative path as one under the root of a file-system URL)
        built = in_store(Path(store), ["build", str(onnx_dir), str(bentofile), "--version", identity,
                                       "--export", str(file.resolve())])
        info = {
            "bento": built["bento"], "model": built["model"], "models_in_bento": built["models_in_bento"],
            "fingerprint": identity, "file": file.name,
            "metrics": model_info.get("metrics", {}), "parity": model_info.get("parity", {}),
            "model_params_hash": model_info.get("params_hash"), "params_hash": params_hash(section),
            "git_revision": git_revision(),
            "serve": f"bentoml import {Path(params.paths.bento) / file.name} && bentoml serve {built['bento']}",
        }
        write_json(out / "bento.json", info)
    log.info("package: %s with %s -> %s", info["bento"], info["model"], Path(params.paths.bento) / file.name)
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
