"""python -m pipelines.retrain [run | serve --cron "0 3 * * 1" | stages] [--repo .]

The retraining flow (Prefect 3). One task per DVC stage, in the graph's order (`dvc repro --single-item
<stage>`, so `dvc.lock` stays the record and a stage that is up to date is skipped by DVC), then:

    register   the export (ONNX graphs, model.json) and the evaluation in the MLflow Model Registry as a
               version of `registry.model_name`, alias `challenger` (pipelines/registry.py)
    promote    the challenger becomes `champion` if there is none or if it beats the champion's
               `registry.metric` by more than `registry.margin`
    bento      the champion's Bento: built once per champion from the registry's files, pinning its model
               (`object-removal:<fingerprint>`) by tag, and moved whole into the BentoML store; the only
               thing this flow puts there (stage `package` builds its Bento file in a private store). Its tag
               in models/champion/champion.json, which `make serve` serves

The DVC stages get no retries (they are deterministic: a failure repeats); the registry and Bento tasks,
which talk to an MLflow server or the file system, retry twice. A failed stage fails the flow before the
registry is touched. Every step can be re-run after a crash (see pipelines/registry.py).

MLflow: the flow's own run (`pipeline-<time>`) is the parent of every stage's run and of the
registration, which all carry its id as tag `pipeline_run`. The store is `MLFLOW_TRACKING_URI` or
`sqlite:///mlflow.db` in the repository, as for the stages.

Prefect: `run` (the default) runs the flow once: with no `PREFECT_API_URL`, Prefect starts a temporary
local server for it (ephemeral mode); with one, the run is recorded there. `serve` serves the flow with a
cron schedule until stopped (`flow.serve`); prefect.yaml defines the same deployment for a work pool.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import networkx as nx
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.settings import (
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from pipelines import registry
from pipelines.common import git_revision
from pipelines.params import load_params
from pipelines.tracking import PIPELINE_RUN_ENV, absolute_uri, kill_orphaned_runs, start_stage_run, tracking_uri

EXPERIMENT = "object-removal"  # the stages' experiment
CHAMPION_FILE = Path("models/champion/champion.json")
DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00


# DVC's hints after a repro: about git and remotes, which the flow handles (or leaves to the user) itself
DVC_HINTS = ("Use `dvc push` to send your updates", "To track the changes with git, run:", "git add ",
             "To enable auto staging, run:", "dvc config core.autostage true")


class StageFailed(RuntimeError):
    """`dvc repro` of a stage exited with an error."""


def stage_order(repo: Path) -> list[str]:
    """The stages of `repo`'s dvc.yaml, each after the stages it depends on (ties in dvc.yaml's order)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        stages = list(dvc.index.stages)
        position = {stage.name: i for i, stage in enumerate(stages)}
        graph = dvc.index.graph.reverse()  # DVC's edges point from a stage to what it depends on
        ordered = nx.lexicographical_topological_sort(graph, key=lambda stage: f"{position[stage.name]:04d}")
        return [stage.name for stage in ordered]


@task(task_run_name="dvc repro {stage}")
def repro(stage: str, repo: str, env: dict[str, str]) -> str:
    """`dvc repro --single-item <stage>`: runs it if its inputs changed. Returns "ran" or "up to date"."""
    logger = get_run_logger()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # stage commands call `python`
    lines: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=repo,
                          env={**os.environ, "PATH": path, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as process:
        for line in process.stdout:  # the stage's own log as it happens; progress bars and DVC's hints left out
            lines.append(line.rstrip())
            if line.strip() and "━" not in line and not line.strip().startswith(DVC_HINTS):
                logger.info("%s", line.rstrip())
    output = "\n".join(lines)
    if process.returncode != 0:
        raise StageFailed(f"dvc repro {stage} failed (exit {process.returncode}):\n{output[-4000:]}")
    ran = f"Running stage '{stage}'" in output
    logger.info("%s: %s", stage, "ran" if ran else "up to date")
    return "ran" if ran else "up to date"


@task(retries=2, retry_delay_seconds=5, task_run_name="register")
def register(uri: str, name: str, onnx_dir: str, metrics_file: str, metric: str, tags: dict[str, str],
             parent_run_id: str) -> str:
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    version = registry.register(client, name, experiment.experiment_id, Path(onnx_dir), Path(metrics_file), metric,
                                tags, parent_run_id)
    return str(version.version)


@task(retries=2, retry_delay_seconds=5, task_run_name="promote")
def promote(uri: str, name: str, greater_is_better: bool, margin: float) -> registry.Decision:
    return registry.promote(MlflowClient(uri), name, greater_is_better, margin)


@task(retries=2, retry_delay_seconds=5, task_run_name="build_champion_bento")
def build_champion_bento(uri: str, name: str, bentofile: str, out_file: str) -> dict:
    """The champion's Bento in the BentoML store: the one already built for this champion (labels: registry
    version and fingerprint), else built now from the registry's files in a staging store and moved into the
    store whole (serving/store.py). The Bento pins the model `object-removal:<fingerprint>` by tag."""
    from serving import store

    client = MlflowClient(uri)
    champion = registry.by_alias(client, name, registry.CHAMPION)
    if champion is None:
        raise RuntimeError(f"{name} has no champion to package")
    version, identity = str(champion.version), champion.tags["fingerprint"]
    labels = {"mlflow_model": name, "mlflow_version": version, "fingerprint": identity}
    root = store.home()
    store.clean(root)  # what a killed import left
    built = [b for b in store.bentos(root) if all(b["labels"].get(k) == v for k, v in labels.items())]
    if built:  # one Bento per champion
        bento_tag, model_tag = built[-1]["tag"], built[-1]["labels"]["model"]
    else:
        with tempfile.TemporaryDirectory() as tmp, store.staging(root) as stage:
            _, folder = registry.download_champion(client, name, Path(tmp))
            made = store.in_store(stage, ["build", str(folder), bentofile, "--version", identity,
                                          "--labels", json.dumps(labels),
                                          "--args", json.dumps({"mlflow_model": name, "mlflow_version": version})])
            store.publish(stage, root)
        bento_tag, model_tag = made["bento"], made["model"]
    client.set_model_version_tag(name, version, "bento", bento_tag)
    client.set_model_version_tag(name, version, "bentoml_model", model_tag)
    info = {"bento": bento_tag, "model": model_tag, "fingerprint": identity, "mlflow_model": name,
            "mlflow_version": version, "metric": champion.tags.get("metric"),
            "metric_value": float(champion.tags.get("metric_value", "nan")), "serve": f"bentoml serve {bento_tag}"}
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(json.dumps(info, indent=2) + "\n")
    return info


@flow(name="retrain", log_prints=True)
def retrain(repo: str = ".", params_file: str = "params.yaml") -> dict:
    """DVC stages in order, then register, promote, and build the champion's Bento."""
    root = Path(repo).resolve()
    params = load_params(root / params_file)
    uri = absolute_uri(tracking_uri(), root)
    mlflow.set_tracking_uri(uri)
    stages = stage_order(root)
    section = {"stages": stages, "registry": params.registry.model_dump(mode="json")}
    run_name = f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}"
    if (experiment := MlflowClient(uri).get_experiment_by_name(EXPERIMENT)) is not None:
        kill_orphaned_runs(MlflowClient(uri), experiment.experiment_id, None)  # any run whose process died
    # the flow's run in the repository's store (absolute), also when this process works in another folder
    with start_stage_run(EXPERIMENT, "pipeline", section, run_name=run_name, uri=uri) as parent:
        env = {"MLFLOW_TRACKING_URI": uri, PIPELINE_RUN_ENV: parent.run_id, "NO_ALBUMENTATIONS_UPDATE": "1"}
        outcome = {stage: repro(stage, str(root), env) for stage in stages}
        r = params.registry
        tags = {"pipeline_run": parent.run_id, "git_revision": git_revision(root) or "unknown",
                "dvc_lock_sha256": _sha256(root / "dvc.lock")}
        version = register(uri, r.model_name, str(root / params.paths.onnx), str(root / params.paths.reports /
                           "metrics.json"), r.metric, tags, parent.run_id)
        decision = promote(uri, r.model_name, r.greater_is_better, r.margin)
        bento = build_champion_bento(uri, r.model_name, str(root / params.package.bentofile), str(root / CHAMPION_FILE))
        outcome_tags = {"registered_version": version, "champion_version": decision.champion,
                        "promoted": str(decision.promoted), "promotion": decision.reason[:500]}
        client = MlflowClient(uri)
        for key, value in outcome_tags.items():
            client.set_tag(parent.run_id, key, value)
    summary = {"stages": outcome, "registered_version": version, "promoted": decision.promoted,
               "champion_version": decision.champion, "reason": decision.reason, "bento": bento["bento"],
               "metric": r.metric, "metric_value": bento["metric_value"], "mlflow_run": parent.run_id,
               "tracking_uri": uri, "repo": str(root)}
    return summary


@dataclass(frozen=True)
class Ports:
    """Where the printed next steps serve: the Makefile's HOST, PORT, UI_PORT and PREFECT_PORT."""

    host: str = "127.0.0.1"
    serve: int = 3000
    ui: int = 5000
    prefect: int = 4200


def next_steps(summary: dict, ports: Ports = Ports()) -> str:
    """What to do after a run, as commands that run as printed from the repository: make targets with the
    ports given, or the environment's own executables by absolute path (no activated venv needed)."""
    bin_dir, store, tag, host = Path(sys.executable).parent, summary["tracking_uri"], summary["bento"], ports.host

    default = Ports()

    def make(target: str, port_variable: str, port: int, default_port: int) -> str:
        """`make <target>`, with the Makefile variables that differ from their defaults."""
        changed = [f"HOST={host}"] if host != default.host else []
        changed += [f"{port_variable}={port}"] if port != default_port else []
        return " ".join(["make", target, *changed])

    mlflow_ui = (f"{bin_dir / 'mlflow'} ui --backend-store-uri {store} --host {host} --port {ports.ui}"
                 if store.startswith(("sqlite:", "file:", "/")) else f"open {store}")
    return "\n".join([
        f"Registered version {summary['registered_version']}; "
        f"{'promoted to champion' if summary['promoted'] else 'the champion stays'} ({summary['reason']}).",
        f"Champion: version {summary['champion_version']}, {summary['metric']} = {summary['metric_value']:.4f}, "
        f"Bento {tag}.",
        f"Next, in {summary['repo']}:",
        f"  {make('serve', 'PORT', ports.serve, default.serve):<40} # the champion's Bento; then its web page: "
        f"open http://{host}:{ports.serve}/",
        f"  {make('ui', 'UI_PORT', ports.ui, default.ui):<40} # MLflow: runs, metrics, registered versions on "
        f"http://{host}:{ports.ui}",
        f"  {make('prefect-ui', 'PREFECT_PORT', ports.prefect, default.prefect):<40} # Prefect: the flow's runs on "
        f"http://{host}:{ports.prefect}/runs",
        "The same without make:",
        f"  {bin_dir / 'bentoml'} serve {tag} --host {host} --port {ports.serve}",
        f"  {mlflow_ui}",
    ])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.retrain", description=__doc__.split("\n\n")[1])
    parser.add_argument("command", nargs="?", choices=["run", "serve", "stages"], default="run")
    parser.add_argument("--repo", default=".", help="the repository (dvc.yaml, params.yaml)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help="serve: the schedule (cron, UTC)")
    parser.add_argument("--name", default="scheduled-retrain", help="serve: the deployment's name")
    parser.add_argument("--host", default=Ports.host, help="run: the host of the printed next steps")
    parser.add_argument("--port", type=int, default=Ports.serve, help="run: `make serve`'s port (PORT)")
    parser.add_argument("--ui-port", type=int, default=Ports.ui, help="run: `make ui`'s port (UI_PORT)")
    parser.add_argument("--prefect-port", type=int, default=Ports.prefect, help="run: `make prefect-ui`'s port")
    args = parser.parse_args(argv)
    # MLflow draws a progress bar for every artifact download (registration, the champion's Bento): noise here
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.command == "stages":
        print("\n".join(stage_order(Path(args.repo))))
        return 0
    # Prefect read its settings when it was imported, so these go through its settings context, not the
    # environment: the ephemeral server's telemetry heartbeat races the flow for its SQLite file at start-up
    # ("database is locked"), and a first start on a new database (migrations) takes longer than Prefect's
    # 20 s on a busy 2-core machine. Values the user set in the environment win.
    updates = {setting: value for setting, value in ((PREFECT_SERVER_ANALYTICS_ENABLED, False),
                                                    (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, 120))
               if setting.name not in os.environ}
    with temporary_settings(updates=updates):
        if args.command == "serve":
            retrain.serve(name=args.name, cron=args.cron, parameters={"repo": str(Path(args.repo).resolve())})
            return 0
        state = retrain(repo=args.repo, return_state=True)
    if not state.is_completed():
        return 1
    print(next_steps(state.result(), Ports(args.host, args.port, args.ui_port, args.prefect_port)))  # after the log
    return 0


if __name__ == "__main__":
    sys.exit(main())
