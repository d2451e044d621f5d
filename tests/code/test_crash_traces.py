"""Crashes leave no traces: a real process is killed (SIGKILL) at the bad moment, then the work is re-run.

- MLflow: a registration killed while its `register` run is open leaves it RUNNING with `host` and `pid`;
  the next registration marks it KILLED and completes (real SQLite store in tmp_path).
- BentoML: `python -m serving.store` killed while the model's files are being copied leaves nothing in the
  store (`bentoml models list` works and is empty); the next import cleans the staging leftovers and
  imports the whole model (real BentoML store under tmp_path).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from pipelines import registry
from pipelines.tracking import kill_orphaned_runs
from serving import store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NAME, METRIC = "object-removal", "methods.joint_mel.all.psnr"


def fake_export(folder: Path, graph_bytes: int = 1000, label: str = "a") -> Path:
    """The export's three files with arbitrary content (the registry and the store only copy and hash them)."""
    folder.mkdir(parents=True)
    for name in ("segmenter.onnx", "inpainter.onnx"):
        with (folder / name).open("wb") as out:
            out.truncate(graph_bytes)  # sparse: a large file is written in no time
            out.write(name.encode() + label.encode())
    (folder / "model.json").write_text(json.dumps({"params_hash": label, "metrics": {}}))
    return folder


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended (exit {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.005)


REGISTER_STALLS = """
import sys, time
from pathlib import Path
import mlflow
from mlflow import MlflowClient
from pipelines import registry

uri, folder, metrics, marker = sys.argv[1:]
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
def stall(*args, **kwargs):  # the bad moment: the register run is open, the version not yet created
    Path(marker).write_text(mlflow.active_run().info.run_id)
    time.sleep(600)
mlflow.log_artifact = stall
registry.register(client, "object-removal", client.get_experiment_by_name("object-removal").experiment_id,
                  Path(folder), Path(metrics), "methods.joint_mel.all.psnr", {})
"""


def test_a_registration_killed_with_its_run_open_is_marked_killed_by_the_next(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment(NAME, artifact_location=(tmp_path / "artifacts").as_uri())
    folder = fake_export(tmp_path / "onnx")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"methods": {"joint_mel": {"all": {"psnr": 25.0}}}}))
    marker = tmp_path / "run-open"
    process = subprocess.Popen([sys.executable, "-c", REGISTER_STALLS, uri, str(folder), str(metrics), str(marker)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(marker.exists, process, "open register run")
    finally:
        process.kill()  # SIGKILL: nothing in the process can end its run
        process.wait(30)
    orphan = client.get_run(marker.read_text())
    assert orphan.info.status == "RUNNING" and orphan.data.tags["stage"] == "register"
    assert orphan.data.tags["host"] == socket.gethostname() and orphan.data.tags["pid"] == str(process.pid)
    assert client.search_model_versions(f"name='{NAME}'") == []  # killed before the version was created

    version = registry.register(client, NAME, experiment, folder, metrics, METRIC, {})  # the re-run
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert version.tags["complete"] == "true" and registry.files_present(version)
    assert client.get_run(version.run_id).info.status == "FINISHED"
    assert client.get_run(version.run_id).data.tags["pid"] == str(os.getpid())


def test_the_flows_start_closes_orphans_of_every_stage_and_spares_live_ones(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment(NAME, artifact_location=(tmp_path / "artifacts").as_uri())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    orphans = [client.create_run(experiment, tags={"stage": s, "host": host, "pid": dead.stdout.strip()}).info.run_id
               for s in ("register", "evaluate")]
    live = client.create_run(experiment, tags={"stage": "register", "host": host, "pid": str(os.getpid())}).info.run_id
    assert sorted(kill_orphaned_runs(client, experiment, None)) == sorted(orphans)
    assert [client.get_run(r).info.status for r in orphans] == ["KILLED", "KILLED"]
    assert client.get_run(live).info.status == "RUNNING"


def bentoml_env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OBJREMOVAL_", "BENTOML_"))}
    return {**clean, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}


def listed_models(home: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "bentoml", "models", "list", "-o", "json"], env=bentoml_env(home),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]  # a half-copied version makes this fail
    return sorted(m["tag"] for m in json.loads(done.stdout))


def test_a_store_import_killed_mid_copy_leaves_nothing_and_the_rerun_imports_it_whole(tmp_path):
    home = tmp_path / "bentoml"
    folder = fake_export(tmp_path / "onnx", graph_bytes=400 * 2**20)  # long enough a copy to be killed in
    command = [sys.executable, "-m", "serving.store", str(folder), "--version", "v1"]
    process = subprocess.Popen(command, cwd=REPO, env=bentoml_env(home), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    copying = lambda: any((home / store.STAGING).glob("*/models/object-removal/v1/*.onnx"))  # noqa: E731
    try:
        wait_for(copying, process, "copy into the staging store")
        children = psutil.Process(process.pid).children(recursive=True)  # the subprocess filling the staging store
        for child in children:
            child.suspend()  # so it cannot finish the copy on its own: only its parent's death can end it
    finally:
        process.kill()
        process.wait(30)
    _, orphans = psutil.wait_procs(children, timeout=10)
    for orphan in orphans:
        orphan.kill()
    assert children and orphans == []  # it died with its parent
    assert any((home / store.STAGING).glob("*/models/object-removal/v1"))  # killed mid-import, in staging
    assert store.models(home) == [] and listed_models(home) == []

    done = subprocess.run(command, cwd=REPO, env=bentoml_env(home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "object-removal:v1" and listed_models(home) == ["object-removal:v1"]
    assert list((home / store.STAGING).glob("*")) == []  # the dead process's staging folder is gone
    stored = home / "models" / "object-removal" / "v1"
    assert all((stored / f).stat().st_size == (folder / f).stat().st_size for f in store.FILES)


def test_clean_deletes_versions_left_half_copied_by_other_tools(tmp_path):
    home = tmp_path / "bentoml"
    store.import_staged(fake_export(tmp_path / "onnx"), "whole", home)
    whole = home / "models" / "object-removal" / "whole"
    half = whole.parent / "half"  # as BentoML's own copy leaves it when killed: a manifest, a short file
    half.mkdir()
    (half / "model.yaml").write_text((whole / "model.yaml").read_text())
    (half / "segmenter.onnx").write_bytes(b"cut")
    no_manifest = whole.parent / "bare"
    no_manifest.mkdir()
    assert sorted(Path(p).name for p in store.clean(home)) == ["bare", "half"]
    assert store.models(home) == ["object-removal:whole"] and listed_models(home) == ["object-removal:whole"]
