"""The retraining flow (pipelines/retrain.py) under Prefect's test harness, with a real MLflow SQLite store
and a real BentoML store in temporary folders, on a temporary copy of the repository with tiny params;
and the registry's promotion rules (pipelines/registry.py) on real registered versions of the tiny
exported model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from pipelines import registry
from pipelines.retrain import Ports, next_steps, retrain, stage_order
from serving import store as bento_store
from tests.conftest import flow_environment

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NAME = "object-removal"


@pytest.fixture(scope="module")
def harness(prefect_server):
    """Prefect's test server (the session's): its API URL."""
    return prefect_server


@pytest.fixture(scope="module")
def repo(flow_run) -> Path:
    """The tiny repository the session's retraining flow ran in (tests.conftest.flow_run), in the flow's
    environment: its own MLflow store and BentoML store."""
    repo = flow_run[0]
    with flow_environment(repo):
        yield repo


def client_of(repo: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{repo}/mlflow.db")


def task_names(state) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        runs = client.read_task_runs(flow_run_filter=flow_run, sort=TaskRunSort.EXPECTED_START_TIME_ASC)
    return [run.name for run in sorted(runs, key=lambda r: r.start_time)]


@pytest.fixture(scope="module")
def first_run(flow_run):
    return flow_run[1]


def test_the_flow_runs_every_stage_in_order_then_registers_promotes_and_packages(repo, first_run):
    assert first_run.is_completed(), first_run.message
    summary = first_run.result()
    stages = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    order = stage_order(repo)
    assert sorted(order) == sorted(stages)  # the flow's tasks are exactly dvc.yaml's stages
    for before, after in [("scenes", "synthesize"), ("synthesize", "pretrain_segmenter"),
                          ("pretrain_inpainter", "finetune_joint"), ("finetune_joint", "export"), ("export", "package"),
                          ("finetune_joint_ablation", "evaluate")]:
        assert order.index(before) < order.index(after)
    names = task_names(first_run)
    assert names == [f"dvc repro {s}" for s in order] + ["register", "promote", "build_champion_bento"]
    assert all(result == "ran" for result in summary["stages"].values())

    client = client_of(repo)
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == summary["champion_version"] == summary["registered_version"] == "1"
    assert registry.files_present(champion) and champion.tags["complete"] == "true"
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert float(champion.tags["metric_value"]) == metrics["methods"]["joint_mel"]["all"]["psnr"]
    dvc_status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, capture_output=True, text=True)
    assert "up to date" in dvc_status.stdout  # dvc.lock records what the flow ran

    # one pipeline execution = one group in MLflow: the stage runs and the registration are children of the flow's
    parent = summary["mlflow_run"]
    flow_run_tags = client.get_run(parent).data.tags  # in the repository's store, though pytest works elsewhere
    assert flow_run_tags["stage"] == "pipeline" and flow_run_tags["registered_version"] == "1"
    children = client.search_runs([client.get_experiment_by_name(NAME).experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.data.tags["stage"] for r in children} >= {"pretrain_segmenter", "pretrain_inpainter", "finetune_joint",
                                                       "finetune_joint_ablation", "evaluate", "evaluate_inpainter",
                                                       "register"}
    assert all(r.data.tags["pipeline_run"] == parent for r in children)

    info = json.loads((repo / "models" / "champion" / "champion.json").read_text())
    assert info["mlflow_version"] == "1" and info["bento"] == summary["bento"]
    assert info["model"] == f"{NAME}:{champion.tags['fingerprint']}" == f"{NAME}:{info['fingerprint']}"
    # the BentoML store holds the champion's Bento and model only: stage package built its file privately
    home = repo.parent / "bentoml"
    [bento] = bento_store.bentos(home)
    assert bento["tag"] == info["bento"] and bento["models"] == [info["model"]]
    assert bento_store.models(home) == [info["model"]]
    assert bento["labels"]["mlflow_version"] == "1" and bento["args"]["model"] == info["model"]
    packaged = json.loads((repo / "models" / "bento" / "bento.json").read_text())
    assert packaged["fingerprint"] == info["fingerprint"] and packaged["model"] == info["model"]


def flow_logs(state) -> list[str]:
    """The messages of the flow run's log (its tasks' too), as the Prefect UI shows them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    flow_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while True:  # pages of the server's limit (200)
            page = client.read_logs(flow_run, limit=200, offset=len(messages))
            messages += [log.message for log in page]
            if len(page) < 200:
                return messages


def test_the_flows_log_shows_training_progress_and_no_third_party_noise_then_next_steps_that_run(repo, first_run):
    messages = flow_logs(first_run)
    for stage in ("pretrain_segmenter", "pretrain_inpainter", "finetune_joint", "finetune_joint_ablation"):
        line = next((m for m in messages if f"{stage}: epoch 1/1 done: step " in m), None)
        assert line is not None and "ETA 0 s" in line and "s/epoch" in line, stage  # harness.ProgressLog
    assert any("export: " in m for m in messages)  # the export stage's own lines are there
    for noise in ("Use `dvc push`", "To track the changes with git", "autostage", "torchvision is not installed",
                  "INFO onnxscript", "INFO onnx_ir",
                  "💡 Tip", "LeafSpec", "will not be used, since it shares", "Add type hints"):
        assert not any(noise in m for m in messages), noise
    # the printed next steps run as printed: make targets of this Makefile with the ports given, executables
    text = next_steps(first_run.result(), Ports(serve=3123, ui=5123))
    commands = [line.split("#")[0].split() for line in text.splitlines() if line.startswith("  ")]
    assert ["make", "serve", "PORT=3123"] in commands and ["make", "ui", "UI_PORT=5123"] in commands
    assert ["make", "prefect-ui"] in commands
    for command in commands:
        if command[0] == "make":  # what make would run, from the repository the flow ran in
            dry = subprocess.run(["make", "-n", *command[1:]], cwd=repo, capture_output=True, text=True)
            assert dry.returncode == 0, dry.stderr
            assert {"serve": "--port 3123", "ui": "--port 5123", "prefect-ui": "--port 4200"}[command[1]] in dry.stdout
        else:
            assert Path(command[0]).is_absolute() and os.access(command[0], os.X_OK), command
    assert "--port 3123" in text and first_run.result()["bento"] in text


def test_make_ui_opens_the_store_mlflow_tracking_uri_names():
    """`make ui` serves MLFLOW_TRACKING_URI's store when it is set (the default store otherwise), and for a
    tracking server, which has its own UI, says so instead of starting a second one."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/"}
    done = subprocess.run(["make", "-s", "ui"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "is a tracking server (http://127.0.0.1:9/)" in done.stdout, done.stderr
    dry = subprocess.run(["make", "-n", "ui"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert '--backend-store-uri "${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}"' in dry


def test_a_rerun_with_nothing_changed_registers_nothing_new(repo, first_run):
    state = retrain(repo=str(repo), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert set(summary["stages"].values()) == {"up to date"}
    assert summary["registered_version"] == "1" and summary["champion_version"] == "1"
    assert len(client_of(repo).search_model_versions(f"name='{NAME}'")) == 1
    assert summary["bento"] == first_run.result()["bento"]  # the champion's Bento reused


def test_make_runs_flow_runs_are_in_prefects_local_database_for_the_ui(repo, first_run, tmp_path):
    """`make run` with no PREFECT_API_URL: the flow runs on Prefect's ephemeral server, whose database is
    $PREFECT_HOME/prefect.db; `prefect server start` on the same home serves those runs (read through its API)."""
    from tests.code.test_service import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run([sys.executable, "-m", "pipelines.retrain", "--repo", str(repo)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "prefect" / "prefect.db").is_file()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "prefect server start did not come up"
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
        [flow_run] = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
        assert flows[flow_run["flow_id"]] == "retrain" and flow_run["state_type"] == "COMPLETED"
        tasks = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}},
                           timeout=30).json()
        stages = stage_order(repo)
        assert sorted(t["name"] for t in tasks) == sorted([f"dvc repro {s}" for s in stages] +
                                                          ["register", "promote", "build_champion_bento"])
        assert {t["state_type"] for t in tasks} == {"COMPLETED"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the session this test started for the server
        server.wait(30)


def test_a_failing_stage_fails_the_flow_and_leaves_the_champion(repo, first_run):
    params = repo / "params.yaml"
    original = params.read_text()
    broken = yaml.safe_load(original)
    broken["export"]["tolerance"] = 1e-30  # ONNX Runtime never matches PyTorch that closely: export fails
    params.write_text(yaml.safe_dump(broken, sort_keys=False))
    try:
        state = retrain(repo=str(repo), return_state=True)
    finally:
        params.write_text(original)
    assert state.is_failed()
    assert "dvc repro export failed" in str(state.message) or "export" in str(state.message)
    client = client_of(repo)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert len(client.search_model_versions(f"name='{NAME}'")) == 1


# --- promotion rules, on real registered versions --------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("object-removal", artifact_location=(tmp_path / "artifacts").as_uri())
    return client, experiment


def candidate(exported, tmp_path: Path, label: str, psnr: float) -> tuple[Path, Path]:
    """The tiny export as a model trained with other params (`label` as its params hash), evaluated at `psnr`."""
    folder = tmp_path / label
    shutil.copytree(exported[0]["paths"]["onnx"], folder)
    model = json.loads((folder / "model.json").read_text())
    model["params_hash"] = label
    (folder / "model.json").write_text(json.dumps(model))
    metrics = tmp_path / f"{label}-metrics.json"
    metrics.write_text(json.dumps({"methods": {"joint_mel": {"all": {"psnr": psnr}}}}))
    return folder, metrics


def publish(store, exported, tmp_path, label, psnr, margin=0.0) -> registry.Decision:
    client, experiment = store
    folder, metrics = candidate(exported, tmp_path, label, psnr)
    registry.register(client, NAME, experiment, folder, metrics, "methods.joint_mel.all.psnr", {})
    return registry.promote(client, NAME, greater_is_better=True, margin=margin)


def test_first_becomes_champion_a_better_one_is_promoted_a_worse_one_is_not(store, exported, tmp_path):
    client, _ = store
    first = publish(store, exported, tmp_path, "a", 24.0)
    assert first.promoted and first.champion == "1" and first.reason == "no champion yet"
    better = publish(store, exported, tmp_path, "b", 25.0)
    assert better.promoted and better.champion == "2" and better.champion_value == 24.0
    worse = publish(store, exported, tmp_path, "c", 24.5)
    assert not worse.promoted and worse.champion == "2" and worse.challenger == "3"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "3"
    assert "not better" in client.get_model_version(NAME, "3").tags["promotion"]
    within_margin = publish(store, exported, tmp_path, "d", 25.05, margin=0.1)
    assert not within_margin.promoted and within_margin.champion == "2"


def test_a_crash_between_registration_and_promotion_ends_consistent(store, exported, tmp_path):
    client, experiment = store
    publish(store, exported, tmp_path, "a", 24.0)
    folder, metrics = candidate(exported, tmp_path, "b", 25.0)
    registry.register(client, NAME, experiment, folder, metrics, "methods.joint_mel.all.psnr", {})
    # ... the process dies here; the re-run registers again and promotes
    again = registry.register(client, NAME, experiment, folder, metrics, "methods.joint_mel.all.psnr", {})
    decision = registry.promote(client, NAME, greater_is_better=True, margin=0.0)
    assert str(again.version) == "2"  # the same version: no double registration
    assert len(client.search_model_versions(f"name='{NAME}'")) == 2
    assert decision.promoted and str(client.get_model_version_by_alias(NAME, "champion").version) == "2"


def test_a_version_left_without_files_is_replaced_and_never_champion(store, exported, tmp_path):
    client, experiment = store
    folder, metrics = candidate(exported, tmp_path, "a", 24.0)
    broken = registry.register(client, NAME, experiment, folder, metrics, "methods.joint_mel.all.psnr", {})
    client.delete_model_version_tag(NAME, broken.version, "complete")  # as if the crash came before completion ...
    shutil.rmtree(Path(broken.source.removeprefix("file://")))  # ... and the files never arrived
    version = registry.register(client, NAME, experiment, folder, metrics, "methods.joint_mel.all.psnr", {})
    assert version.version != broken.version and registry.files_present(version)
    assert [v.version for v in client.search_model_versions(f"name='{NAME}'")] == [version.version]
    decision = registry.promote(client, NAME, greater_is_better=True, margin=0.0)
    assert decision.champion == str(version.version)


def test_a_champion_whose_files_are_gone_is_replaced(store, exported, tmp_path):
    client, _ = store
    first = publish(store, exported, tmp_path, "a", 30.0)
    shutil.rmtree(Path(client.get_model_version(NAME, first.champion).source.removeprefix("file://")))
    decision = publish(store, exported, tmp_path, "b", 20.0)  # worse, but the champion cannot be served
    assert decision.promoted and "lost its files" in decision.reason


# --- scheduling ----------------------------------------------------------------------------------------


def prefect_env(api_url: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api_url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def deployments(api_url: str) -> dict[str, dict]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {d.name: {"schedules": [s.schedule.cron for s in d.schedules], "pool": d.work_pool_name,
                         "entrypoint": d.entrypoint} for d in client.read_deployments()}


def test_flow_serve_creates_a_scheduled_deployment(harness, tmp_path):
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "pipelines.retrain", "serve", "--cron", "*/30 * * * *",
                                   "--name", "test-serve", "--repo", str(REPO)], cwd=REPO, env=prefect_env(harness),
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # a busy 2-core machine
        while "test-serve" not in deployments(harness):
            assert server.poll() is None and time.monotonic() < deadline, \
                f"flow.serve did not create its deployment:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        assert deployments(harness)["test-serve"]["schedules"] == ["*/30 * * * *"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_prefect_yaml_deploys_to_a_work_pool(harness, tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv", "data", "models", ".git", "mlartifacts"))
    env = prefect_env(harness)
    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "objremoval", "--type", "process"],
                   cwd=work, env=env, check=True, capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    deployed = deployments(harness)["scheduled-retrain"]
    assert deployed == {"schedules": ["0 3 * * 1"], "pool": "objremoval", "entrypoint": "pipelines/retrain.py:retrain"}


def test_the_mlflow_model_carries_the_components_source_without_bytecode(exported, tmp_path, monkeypatch):
    """The pyfunc model's `code/components` holds the package's .py files, not the __pycache__ of the machine
    that registered it (a copy of the repository with compiled files stands in for one that writes them)."""
    (tmp_path / "repo").mkdir()
    shutil.copytree(REPO / "components", tmp_path / "repo" / "components")
    cache = tmp_path / "repo" / "components" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "inference.cpython-311.pyc").write_bytes(b"compiled")
    monkeypatch.setattr(registry, "REPO", tmp_path / "repo")
    registry.save_mlflow_model(Path(exported[0]["paths"]["onnx"]), tmp_path / "model", {})
    saved = sorted(p.relative_to(tmp_path / "model" / "code") for p in (tmp_path / "model" / "code").rglob("*"))
    assert Path("components/inference.py") in saved and Path("components/export_contract.py") in saved
    assert not any("__pycache__" in p.parts or p.suffix == ".pyc" for p in saved), saved


def test_the_champion_is_an_mlflow_model_that_removes_an_object_and_mlflow_serves_it(store, exported, tmp_path,
                                                                                        monkeypatch):
    """`mlflow.pyfunc.load_model("models:/object-removal@champion")` predicts through the one inference path
    (the same mask and result as the ONNX remover, bit for bit); `mlflow models serve` answers the same."""
    import base64
    import io

    import mlflow
    import numpy as np
    import pandas as pd
    from PIL import Image

    from pipelines.predict import load_remover
    from tests.code.test_predict import object_scene
    from tests.code.test_service import encode, free_port

    client, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)  # `models:/` URIs: this store
    mlflow.set_tracking_uri(client.tracking_uri)
    publish(store, exported, tmp_path, "a", 24.0)
    champion = client.get_model_version_by_alias(NAME, "champion")
    trained = json.loads((Path(exported[0]["paths"]["joint"]) / "joint.json").read_text())["mlflow_run_id"]
    assert champion.tags["training_run"] == trained  # linked to the run that trained it
    register_run = client.get_run(champion.run_id)  # the run that logged it carries the evaluation's metrics
    assert register_run.data.metrics["methods.joint_mel.all.psnr"] == 24.0

    image, segment = object_scene(exported, exported[0]["paths"]["onnx"])
    ys, xs = np.nonzero(segment.mask)
    point = [float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]
    direct = load_remover(exported[0]["paths"]["onnx"]).remove(image, _target(point))
    assert direct.mask.sum() >= 20

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert model.metadata.signature.inputs.input_names()[:2] == ["image", "classes"]
    assert model.metadata.metadata["metric_value"] == 24.0
    out = model.predict(pd.DataFrame([{"image": encode(image), "points": [point]}]))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out.loc[0, "mask"]))) == 255, direct.mask)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out.loc[0, "image"]))), direct.image)
    assert out.loc[0, "removed_pixels"] == direct.mask.sum()
    with pytest.raises(ValueError, match=r"row 0: point \(500, 5\) is outside the 96x96 image"):
        model.predict(pd.DataFrame([{"image": encode(image), "points": [[500.0, 5.0]]}]))

    port = free_port()
    log = tmp_path / "mlflow-serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                  env={**os.environ, "MLFLOW_TRACKING_URI": client.tracking_uri,  # it execs uvicorn
                                       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
                                  stdout=sink,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["image", "points"],
                                    "data": [[base64.b64encode(encode(image)).decode(), [point]]]}}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        [row] = answer.json()["predictions"]
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["mask"])))) == 255
        np.testing.assert_array_equal(served, direct.mask)
        assert row["removed_pixels"] == direct.mask.sum()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def _target(point: list[float]):
    from components.inference import Target

    return Target(points=(tuple(point),))
