"""The champion's Bento serves the champion: a real MLflow registry (SQLite in tmp_path), a real BentoML store
(BENTOML_HOME in tmp_path) that also holds never-promoted versions of the model, the flow's real
`build_champion_bento` task, and a real `bentoml serve` of the Bento on 127.0.0.1; `make serve` too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from pipelines import registry
from pipelines.retrain import build_champion_bento
from serving import store
from tests.code.test_retrain import candidate
from tests.code.test_service import free_port, serve

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NAME = "object-removal"
METRIC = "methods.joint_mel.all.psnr"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """An empty BentoML store and an MLflow store whose champion is version 1 (the export as model "a")."""
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment(NAME, artifact_location=(tmp_path / "artifacts").as_uri())
    return home, uri, client, experiment


def test_the_champions_bento_serves_the_champion_whatever_else_the_store_holds(world, exported, tmp_path):
    home, uri, client, experiment = world
    champion_dir, metrics = candidate(exported, tmp_path, "a", 25.0)
    registry.register(client, NAME, experiment, champion_dir, metrics, METRIC, {})
    assert registry.promote(client, NAME, True, 0.0).champion == "1"
    loser_dir, loser_metrics = candidate(exported, tmp_path, "b", 20.0)  # registered, never promoted
    registry.register(client, NAME, experiment, loser_dir, loser_metrics, METRIC, {})
    assert not registry.promote(client, NAME, True, 0.0).promoted
    older = store.import_staged(loser_dir, store.fingerprint(loser_dir))  # in the store before the build

    out = tmp_path / "champion.json"
    info = build_champion_bento.fn(uri, NAME, str(REPO / "bentofile.yaml"), str(out))
    identity = client.get_model_version(NAME, "1").tags["fingerprint"]
    assert info["model"] == f"{NAME}:{identity}" and info["mlflow_version"] == "1" and info["fingerprint"] == identity
    assert json.loads(out.read_text())["bento"] == info["bento"]
    newest_dir, _ = candidate(exported, tmp_path, "c", 30.0)  # a newer model after the build: "latest"
    newest = store.import_staged(newest_dir, store.fingerprint(newest_dir))
    assert (home / "models" / NAME / "latest").read_text() == newest.split(":")[1]  # latest is not the champion
    assert store.models(home) == sorted([older, newest, info["model"]])
    [bento] = store.bentos(home)  # the one Bento: the champion's, its model pinned by tag
    assert bento["tag"] == info["bento"] and bento["models"] == [info["model"]]
    assert bento["args"]["model"] == info["model"] and bento["labels"]["mlflow_version"] == "1"
    assert client.get_model_version(NAME, "1").tags["bento"] == info["bento"]

    with serve(None, tmp_path, service=info["bento"], cwd=tmp_path, home=home) as url:
        answer = httpx.get(f"{url}/info", timeout=30).json()
    assert answer["model"]["tag"] == info["model"] and answer["model"]["fingerprint"] == identity
    assert answer["bento"] == info["bento"] and answer["registry"] == {"model": NAME, "version": "1"}

    again = build_champion_bento.fn(uri, NAME, str(REPO / "bentofile.yaml"), str(out))
    assert again["bento"] == info["bento"] and len(store.bentos(home)) == 1  # one Bento per champion


def test_make_serve_serves_the_champion_named_in_champion_json(world, exported, tmp_path):
    home, uri, client, experiment = world
    champion_dir, metrics = candidate(exported, tmp_path, "a", 25.0)
    registry.register(client, NAME, experiment, champion_dir, metrics, METRIC, {})
    registry.promote(client, NAME, True, 0.0)
    champion_file = tmp_path / "champion.json"
    info = build_champion_bento.fn(uri, NAME, str(REPO / "bentofile.yaml"), str(champion_file))
    other_dir, _ = candidate(exported, tmp_path, "z", 1.0)
    store.import_staged(other_dir, store.fingerprint(other_dir))  # newest in the store, never promoted
    port, log = free_port(), tmp_path / "make-serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBJREMOVAL_", "MAKE"))}
    with log.open("wb") as sink:
        process = subprocess.Popen(["make", "--no-print-directory", "serve", f"CHAMPION_FILE={champion_file}",
                                    f"PORT={port}", f"VENV={Path(sys.executable).parent.parent}"],
                                   cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/info", timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert answer.json()["model"]["tag"] == info["model"] and answer.json()["bento"] == info["bento"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the session this test started for make and the server
        process.wait(30)


def test_make_serve_without_a_champion_says_so(tmp_path):
    done = subprocess.run(["make", "--no-print-directory", "serve", f"CHAMPION_FILE={tmp_path}/none.json"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no champion yet" in done.stderr and "make run" in done.stderr


def test_a_bento_argument_without_a_version_is_refused(tmp_path):
    """The service never serves "latest": a model argument must name its version."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    code = ("import sys; from bentoml._internal.utils.args import set_arguments\n"
            "set_arguments({'model': 'object-removal:v1'})  # as a Bento sets it before importing the service\n"
            "from serving.service import ARGS, BentoArgs, pinned_model\n"
            "assert pinned_model(ARGS) == 'object-removal:v1'\n"
            "for arg in (BentoArgs(model='object-removal'), BentoArgs(model='object-removal:latest'), BentoArgs()):\n"
            "    try: pinned_model(arg); sys.exit('accepted ' + repr(arg))\n"
            "    except ValueError as err: print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert "must name a version" in lines[0] and "must name a version" in lines[1]
    assert "0 versions of object-removal in the store" in lines[2] and "--arg model=" in lines[2]
