"""Stage `package`: `bentoml build` in a private store (the user's store stays untouched), and the Bento as a
file that another store imports and serves, outside this repository, with its own pinned model even when
that store holds a newer one."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from serving import store
from tests.code.test_retrain import candidate
from tests.code.test_service import encode, scene_image, serve

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def bentoml_env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OBJREMOVAL_", "BENTOML_"))}
    return {**clean, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "NO_ALBUMENTATIONS_UPDATE": "1"}


def test_the_bento_file_imports_elsewhere_and_serves_the_model(exported, tmp_path):
    raw = copy.deepcopy(exported[0])
    raw["paths"]["bento"] = str(tmp_path / "bento")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    build = bentoml_env(tmp_path / "build-store")
    subprocess.run([sys.executable, "-m", "pipelines.stages.package", "--params", str(params)], cwd=REPO, env=build,
                   check=True, capture_output=True, timeout=300)
    info = json.loads((tmp_path / "bento" / "bento.json").read_text())
    assert info["bento"].startswith("object-removal:") and info["models_in_bento"] == [info["model"]]
    identity = store.fingerprint(raw["paths"]["onnx"])
    assert info["model"] == f"object-removal:{identity}" and info["fingerprint"] == identity
    assert store.models(tmp_path / "build-store") == [] and store.bentos(tmp_path / "build-store") == []
    model_json = json.loads((Path(raw["paths"]["onnx"]) / "model.json").read_text())
    assert info["model_params_hash"] == model_json["params_hash"]
    assert info["serve"].endswith(f"bentoml serve {info['bento']}")
    archive = tmp_path / "bento" / info["file"]
    assert archive.stat().st_size > 100_000

    other = tmp_path / "other-store"  # another machine: only the file travels
    subprocess.run([sys.executable, "-m", "bentoml", "import", str(archive)], env=bentoml_env(other), check=True,
                   capture_output=True, timeout=120)
    listed = subprocess.run([sys.executable, "-m", "bentoml", "models", "list", "-o", "json"], env=bentoml_env(other),
                            check=True, capture_output=True, text=True, timeout=60).stdout
    assert info["model"] in {m["tag"] for m in json.loads(listed)}
    newer = candidate(exported, tmp_path, "newer", 30.0)[0]  # a newer model in that store: its "latest"
    assert store.import_staged(newer, "newer", other) == "object-removal:newer"
    assert (other / "models" / "object-removal" / "latest").read_text() == "newer"
    image, _ = scene_image(97, 61)
    with serve(None, tmp_path, service=info["bento"], cwd=tmp_path, home=other) as url:
        answer = httpx.post(f"{url}/remove", files={"image": ("a.png", encode(image), "image/png")}, timeout=60)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        described = httpx.get(f"{url}/info", timeout=10).json()
        assert described["model"]["tag"] == info["model"] and described["bento"] == info["bento"]
        assert described["model"]["fingerprint"] == info["fingerprint"] and described["registry"]["version"] is None


def test_the_bento_pins_the_versions_of_the_lock():
    """bentofile.yaml lists what the service imports, pinned; every pin must be the lock's."""
    locked = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            locked[name.lower().replace("_", "-")] = version.strip()
    packages = yaml.safe_load((REPO / "bentofile.yaml").read_text())["python"]["packages"]
    assert packages
    for pin in packages:
        name, version = pin.split("==")
        assert locked.get(name.lower().replace("_", "-")) == version, f"{pin} differs from requirements.lock"
