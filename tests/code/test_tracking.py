"""Stage runs against a real MLflow SQLite store: params, tags, artifacts, end status, orphans, SIGTERM,
and Lightning metrics landing in the stage's run.

One store serves the whole module (a new SQLite file costs seconds of schema migrations); each test
uses its own experiment, named after the test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import psutil
import pytest
import torch
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from PIL import Image

from pipelines.common import git_revision
from pipelines.tracking import (
    TRUNCATION_MARK,
    StageTerminated,
    artifact_location,
    flatten_params,
    lightning_logger,
    log_image_artifact,
    log_json_artifact,
    params_hash,
    start_stage_run,
    tracking_uri,
)
from tests.conftest import REPO


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def client(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    uri = f"sqlite:///{store_dir}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield MlflowClient(uri)
    while mlflow.active_run() is not None:  # a failing test must not leave its run active for the next
        mlflow.end_run("FAILED")
    mlflow.set_tracking_uri(None)  # mlflow keeps the URI globally (and copies it into the environment)


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return request.node.name


def test_default_store_is_sqlite_in_the_working_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == "sqlite:///mlflow.db"
    assert artifact_location(tracking_uri(), "train model") == (tmp_path / "mlartifacts" / "train_model").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert artifact_location(tracking_uri(), "train") is None
    assert artifact_location("sqlite:////data/runs/m.db?timeout=20", "e") == "file:///data/runs/mlartifacts/e"


def test_flatten_params():
    flat = flatten_params({"train": {"optim": {"lr": 0.001}, "sizes": [64, 128], "name": "unet"},
                           "seed": 3, "empty": {}, "none": None, "long": "x" * (MAX_PARAM_VAL_LENGTH + 10)})
    assert flat["train.optim.lr"] == "0.001"
    assert flat["train.sizes"] == "[64, 128]"
    assert flat["train.name"] == "unet"
    assert flat["seed"] == "3"
    assert flat["empty"] == "{}"
    assert flat["none"] == "None"
    assert len(flat["long"]) == MAX_PARAM_VAL_LENGTH and flat["long"].endswith(TRUNCATION_MARK)
    assert set(flat) == {"train.optim.lr", "train.sizes", "train.name", "seed", "empty", "none", "long"}


def test_run_records_params_tags_and_artifacts(client: MlflowClient, experiment: str, store_dir: Path):
    params = {"train": {"lr": 0.001, "sizes": [1, 2]}, "many": {f"k{i:03d}": i for i in range(150)}}
    image = np.zeros((8, 12, 3), np.uint8)
    image[2:5, 3:9] = (255, 10, 20)
    with start_stage_run(experiment, "train", params, run_name="r1", tags={"kind": "test", "stage": "ignored"}) as run:
        assert mlflow.active_run().info.run_id == run.run_id
        log_json_artifact({"psnr": 30.5, "n": 4}, "metrics/summary.json")
        log_image_artifact(image, "samples/pair.png")
    assert mlflow.active_run() is None

    record = client.get_run(run.run_id)
    assert record.info.status == "FINISHED"
    assert record.info.run_name == "r1"
    assert len(record.data.params) == 152  # logged in two batches (MLflow takes 100 per batch)
    assert record.data.params["train.lr"] == "0.001"
    assert record.data.params["train.sizes"] == "[1, 2]"
    assert record.data.params["many.k149"] == "149"
    tags = record.data.tags
    assert tags["stage"] == "train" and tags["kind"] == "test"
    assert tags["git_revision"] == git_revision() and len(tags["git_revision"]) == 40
    assert tags["git_dirty"] in ("true", "false")
    assert tags["params_hash"] == params_hash(params) and len(tags["params_hash"]) == 16
    assert tags["host"] == socket.gethostname() and tags["pid"] == str(os.getpid())

    assert record.info.artifact_uri.startswith((store_dir / "mlartifacts").as_uri())
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["metrics", "samples"]
    assert [a.path for a in client.list_artifacts(run.run_id, "samples")] == ["samples/pair.png"]
    local = Path(client.download_artifacts(run.run_id, "", dst_path=str(store_dir / "download" / run.run_id)))
    assert json.loads((local / "metrics" / "summary.json").read_text()) == {"psnr": 30.5, "n": 4}
    np.testing.assert_array_equal(np.asarray(Image.open(local / "samples" / "pair.png").convert("RGB")), image)


def test_artifacts_need_an_active_run_and_an_rgb_image(client: MlflowClient):
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_json_artifact({"a": 1}, "a.json")
    with pytest.raises(ValueError, match=r"\(8, 8\) float64"):
        log_image_artifact(np.zeros((8, 8)), "a.png")


def test_a_run_without_a_name_is_named_after_its_stage(client: MlflowClient, experiment: str):
    with start_stage_run(experiment, "pretrain_segmenter", {}) as first:
        pass
    with start_stage_run(experiment, "evaluate", {}) as second:
        pass
    names = [client.get_run(r.run_id).info.run_name for r in (first, second)]
    assert names[0].startswith("pretrain_segmenter-") and names[1].startswith("evaluate-")


def test_exception_marks_the_run_failed(client: MlflowClient, experiment: str):
    with pytest.raises(RuntimeError, match="boom"), start_stage_run(experiment, "train", {}) as run:
        raise RuntimeError("boom")
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_child_run_nests_under_its_parent(client: MlflowClient, experiment: str):
    with start_stage_run(experiment, "flow", {}) as parent:
        with start_stage_run(experiment, "train", {}, parent_run_id=parent.run_id) as child:
            pass
        assert mlflow.active_run().info.run_id == parent.run_id
        assert client.get_run(parent.run_id).info.status == "RUNNING"
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_orphaned_runs_of_the_stage_are_killed(client: MlflowClient, experiment: str, store_dir: Path):
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    assert not psutil.pid_exists(exited.pid)
    me = psutil.Process()
    experiment_id = client.create_experiment(experiment, artifact_location=(store_dir / "orphans").as_uri())
    host = socket.gethostname()

    def running(stage: str, pid: int, run_host: str = host, start_ms: int | None = None) -> str:
        tags = {"stage": stage, "host": run_host, "pid": str(pid)}
        return client.create_run(experiment_id, start_time=start_ms, tags=tags).info.run_id

    dead = running("X", exited.pid)
    alive = running("X", me.pid)
    recycled = running("X", me.pid, start_ms=int(me.create_time() * 1000) - 60_000)  # pid now someone else's
    other_stage = running("Y", exited.pid)
    other_host = running("X", exited.pid, run_host=f"not-{host}")

    with start_stage_run(experiment, "X", {}) as run:
        pass

    status = {run_id: client.get_run(run_id).info.status for run_id in (dead, alive, recycled, other_stage, other_host)}
    assert status == {dead: "KILLED", alive: "RUNNING", recycled: "KILLED", other_stage: "RUNNING",
                      other_host: "RUNNING"}
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_sigterm_handler_is_scoped_to_the_run(client: MlflowClient, experiment: str):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StageTerminated) as raised, start_stage_run(experiment, "train", {}) as run:
        handler = signal.getsignal(signal.SIGTERM)
        assert handler is not before
        handler(signal.SIGTERM, None)  # what the interpreter does on SIGTERM, without signalling pytest
    assert raised.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    assert client.get_run(run.run_id).info.status == "KILLED"


CHILD = textwrap.dedent("""
    import sys, time
    from pipelines.tracking import start_stage_run
    with start_stage_run(sys.argv[1], "train", {"a": 1}) as run:
        print(run.run_id, flush=True)
        time.sleep(60)
""")


@pytest.mark.timeout(90)
def test_sigterm_in_a_stage_process_marks_its_run_killed(client: MlflowClient, experiment: str):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, experiment], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = child.stdout.readline().strip()
        assert run_id, child.stderr.read()
        assert client.get_run(run_id).info.status == "RUNNING"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM, child.stderr.read()
    finally:
        child.kill()
        child.wait()
    record = client.get_run(run_id)
    assert record.info.status == "KILLED"
    assert record.info.end_time is not None


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_metrics_go_to_the_stage_run(client: MlflowClient, experiment: str, tmp_path: Path):
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)
    data = torch.utils.data.TensorDataset(inputs, targets)
    with start_stage_run(experiment, "train", {"epochs": 2}) as run:
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=lightning_logger(run.run_id),
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            log_every_n_steps=1, default_root_dir=tmp_path)
        trainer.fit(TinyModule(), torch.utils.data.DataLoader(data, batch_size=8))
        # Lightning's own MLFlowLogger would have marked the run FINISHED here, mid-stage.
        assert client.get_run(run.run_id).info.status == "RUNNING"
    history = client.get_metric_history(run.run_id, "train/loss")
    assert len(history) == 2
    assert history[0].step < history[1].step
    assert all(math.isfinite(m.value) and m.value > 0 for m in history)
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_the_default_store_is_the_dvc_repositorys_also_inside_a_queued_experiment(tmp_path, monkeypatch):
    """DVC sets DVC_ROOT for every stage command, to the repository also when a queued experiment runs in
    `.dvc/tmp/exps/...`: the stage's runs land in the repository's mlflow.db, tagged with the experiment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    uri = tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("DVC_EXP_NAME", "paper-t2-random")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0" * 40)
    monkeypatch.chdir(tmp_path)
    with start_stage_run("exp-test", "evaluate", {"a": 1}) as run:
        pass
    tags = MlflowClient(uri).get_run(run.run_id).data.tags
    assert tags["dvc_experiment"] == "paper-t2-random" and tags["dvc_baseline"] == "0" * 40
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert tracking_uri() == "sqlite:////elsewhere/mlflow.db"  # an explicit store wins
