"""python -m pipelines.stages.package [--params params.yaml]

Stage `package`: the ONNX export (`paths.onnx`, stage `export`) becomes a deployable Bento.

    1. model   a new version of `object-removal` in the BentoML model store ($BENTOML_HOME, default
               ~/bentoml): the three export files, with model.json's provenance and metrics as metadata
               (serving.store.import_model); being the newest version, it is what the service loads
    2. bento   `bentoml build` of `package.bentofile`: the service (serving/), the code it runs, the model,
               and the image definition with the locked dependencies (requirements.lock)
    3. file    the Bento exported to `paths.bento/<bento name>.bento`, so DVC tracks what was built and
               another machine takes it with `bentoml import`; `paths.bento/bento.json` names the
               Bento and model tags, the model's metrics, params hash and git revision

Then `bentoml serve <bento tag>` serves it and `bentoml containerize <bento tag>` makes an OCI image
(needs Docker or another builder; none on this machine).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pipelines.common import atomic_dir, git_revision, params_hash, stage_main, write_json
from pipelines.params import Params

log = logging.getLogger("package")
STAGE = "package"


def run(params: Params) -> dict:
    import bentoml

    from serving.store import build_bento

    onnx_dir, bentofile = Path(params.paths.onnx), Path(params.package.bentofile)
    if not bentofile.is_file():
        raise FileNotFoundError(f"bentofile not found: {bentofile} (package.bentofile)")
    # 1. the model into the store, 2. the Bento
    bento, model_tag = build_bento(onnx_dir, bentofile)
    log.info("built %s with %s (store: %s)", bento.tag, model_tag, bentoml.models.get(model_tag).path)
    model_info = json.loads((onnx_dir / "model.json").read_text())
    section = {"package": params.package.model_dump(mode="json"), "paths.onnx": str(onnx_dir)}
    info = {
        "bento": str(bento.tag), "model": str(model_tag),
        "models_in_bento": sorted({str(m.tag) for service in bento.info.services for m in service.models}),
        "file": f"{bento.tag.name}.bento",
        "metrics": model_info.get("metrics", {}), "parity": model_info.get("parity", {}),
        "model_params_hash": model_info.get("params_hash"), "params_hash": params_hash(section),
        "git_revision": git_revision(),
        "serve": f"bentoml serve {bento.tag}", "containerize": f"bentoml containerize {bento.tag}",
    }
    # 3. the Bento as a file DVC tracks
    with atomic_dir(Path(params.paths.bento)) as out:
        # absolute: BentoML reads a relative path as one under the root of a file-system URL
        bentoml.bentos.export_bento(bento.tag, str((out / info["file"]).resolve()))
        write_json(out / "bento.json", info)
    log.info("package: %s with %s -> %s", bento.tag, model_tag, Path(params.paths.bento) / info["file"])
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
