"""MLflow tracking for the stages: one run per stage execution, with provenance and an honest end status.

- Store: `sqlite:///mlflow.db` in the DVC repository's root (`DVC_ROOT`; outside DVC the working
  directory) unless `MLFLOW_TRACKING_URI` says otherwise; read when a run starts, never at import. For a
  SQLite store the artifacts go to `mlartifacts/` beside the database file, on local disk (set as the experiment's
  `artifact_location`, so it holds only for experiments this module creates).
- A run's status is owned by `start_stage_run` alone: FINISHED on a normal exit, FAILED on an exception,
  KILLED on SIGTERM or Ctrl-C. SIGTERM is turned into a `StageTerminated` exception (a `SystemExit`,
  code 143) raised in the main thread, so the run is ended by ordinary unwinding rather than by MLflow
  calls made inside a signal handler, which could re-enter a SQLite transaction that is half done.
- A process killed outright (SIGKILL, power loss) cannot end its run. Each run records `host` and `pid`
  (`owner_tags`; the registry's `register` run too), and the next run of the same stage, or the next start
  of the retraining flow for every stage, marks such orphans KILLED. A pid counts as alive only if its
  process was created before the run started, so a recycled pid does not keep an orphan RUNNING.
- Lightning's `MLFlowLogger.finalize` marks the run FINISHED when `Trainer.fit` returns (and FAILED on
  an error) although the stage may still be working; `lightning_logger` returns a subclass whose
  `finalize` leaves the status alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import psutil
from mlflow import MlflowClient
from mlflow.entities import Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from pipelines.common import git_revision, params_hash

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Set by the retraining flow (pipelines/retrain.py) for the stages it runs: their runs become children of
# the flow's run and carry its id as tag `pipeline_run`, so one pipeline execution reads as one group.
PIPELINE_RUN_ENV = "OBJREMOVAL_PIPELINE_RUN_ID"
ARTIFACTS_DIR = "mlartifacts"
TRUNCATION_MARK = "...[truncated]"
# A process created this long after its run's start time is a recycled pid, not the run's process.
PID_REUSE_SLACK_MS = 2_000


class StageTerminated(SystemExit):
    """SIGTERM arrived inside `start_stage_run`; the process exits with 128 + SIGTERM unless caught."""


@dataclass(frozen=True)
class StageRun:
    run_id: str
    experiment_id: str


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, or the SQLite file `mlflow.db` of the DVC repository: DVC sets `DVC_ROOT` for
    every stage command, to the repository's root also when a queued experiment runs in a temporary
    folder (`.dvc/tmp/exps/...`), so those runs land in the same store; outside DVC, the working directory's."""
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    root = os.environ.get("DVC_ROOT")
    return absolute_uri(DEFAULT_TRACKING_URI, Path(root)) if root else DEFAULT_TRACKING_URI


def absolute_uri(uri: str, root: Path) -> str:
    """A relative SQLite URI made absolute against `root`, so every process opens the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str((Path(root) / uri.removeprefix(prefix)).resolve())
    return uri


def artifact_location(uri: str, experiment: str) -> str | None:
    """A `file://` folder for `experiment`'s artifacts beside a SQLite database; None (the store's
    default) for other stores and in-memory SQLite."""
    if not uri.startswith("sqlite:///"):
        return None
    db_path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if db_path in ("", ":memory:"):
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", experiment)  # runs have unique ids below, so clashes are harmless
    return (Path(db_path).resolve().parent / ARTIFACTS_DIR / folder).as_uri()


def flatten_params(nested: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}, "c": [1, 2]}` -> `{"a.b": "1", "c": "[1, 2]"}`; values cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = _truncate(_param_text(value))
    return flat


@contextlib.contextmanager
def start_stage_run(
    experiment: str,
    stage: str,
    params: Mapping[str, Any],
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    uri: str | None = None,
) -> Iterator[StageRun]:
    """A run of `stage` in `experiment`, active (fluent API) for the duration of the block.

    Orphaned RUNNING runs of the same stage are marked KILLED first. Provenance tags (`stage`,
    `git_revision`, `git_dirty`, `host`, `pid`, `params_hash`) win over `tags` of the same name.
    If another run is active in this thread the new one is nested under it, and `parent_run_id`, when
    given, must be that run. Under the retraining flow (`PIPELINE_RUN_ENV` set) a run without a parent
    becomes a child of the flow's run. The store is `uri`, default `tracking_uri()`.
    """
    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, experiment, artifact_location(uri, experiment))
    kill_orphaned_runs(client, experiment_id, stage)
    run_tags = {**(tags or {}), **_provenance_tags(stage, params)}
    pipeline_run = os.environ.get(PIPELINE_RUN_ENV)
    if pipeline_run:
        run_tags["pipeline_run"] = pipeline_run
        if parent_run_id is None and mlflow.active_run() is None:
            parent_run_id = pipeline_run
    # MLflow's generated names come from the global RNG, which the stages seed: every stage would get the same one
    run_name = run_name or f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"
    active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags,
                              parent_run_id=parent_run_id, nested=mlflow.active_run() is not None)
    run = StageRun(run_id=active.info.run_id, experiment_id=experiment_id)
    status = RunStatus.FINISHED
    try:
        with _sigterm_raises():
            _log_params(client, run.run_id, flatten_params(params))
            yield run
    except (StageTerminated, KeyboardInterrupt):
        status = RunStatus.KILLED
        raise
    except BaseException:
        status = RunStatus.FAILED
        raise
    finally:
        _end_run(client, run.run_id, RunStatus.to_string(status))


def owner_tags() -> dict[str, str]:
    """`host` and `pid` of this process: every run opened here carries them, so that `kill_orphaned_runs`
    can tell later whether the process that owns the run is gone."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def kill_orphaned_runs(client: MlflowClient, experiment_id: str, stage: str | None) -> list[str]:
    """Mark KILLED the RUNNING runs of `stage` (None: of any stage) whose process, on this host, is gone.
    Returns their ids."""
    host = socket.gethostname()
    killed = []
    page_token = None
    while True:
        page = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=page_token)
        for run in page:
            run_tags = run.data.tags
            if (stage is not None and run_tags.get("stage") != stage) or run_tags.get("host") != host:
                continue
            pid = run_tags.get("pid", "")
            if pid.isdigit() and not _process_alive(int(pid), run.info.start_time):
                log.warning("run %s of stage %s: process %s is gone; marking it KILLED", run.info.run_id, stage, pid)
                client.set_terminated(run.info.run_id, status="KILLED")
                killed.append(run.info.run_id)
        page_token = page.token
        if not page_token:
            return killed


def log_json_artifact(data: Mapping[str, Any], name: str) -> None:
    """`data` as the JSON file `name` (e.g. `"metrics/summary.json"`) in the active run."""
    _require_active_run()
    mlflow.log_dict(dict(data), name)


def log_image_artifact(image: np.ndarray, name: str) -> None:
    """An RGB image, (H, W, 3) uint8, as the PNG file `name` (e.g. `"samples/0.png"`) in the active run."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    _require_active_run()
    mlflow.log_image(image, artifact_file=name)


def lightning_logger(run_id: str) -> MLFlowLogger:
    """Lightning's `MLFlowLogger` writing into the existing run `run_id`, leaving its status alone."""
    return _attached_logger_class()(tracking_uri=tracking_uri(), run_id=run_id, log_model=False)


@functools.cache
def _attached_logger_class() -> type[MLFlowLogger]:
    # Built on first use so that stages without training never import Lightning (seconds of import).
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities import rank_zero_only

    class AttachedMLFlowLogger(MLFlowLogger):
        """Logs into a run owned by `start_stage_run`; ending the run is that context's job."""

        @rank_zero_only
        def finalize(self, status: str = "success") -> None:
            # The base class calls set_terminated here, marking the run FINISHED while the stage runs on.
            # log_model=False, so it has no checkpoints to upload either.
            return None

    return AttachedMLFlowLogger


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | Mapping):  # (an empty mapping lands here too, as "{}")
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str) -> str:
    if len(text) <= MAX_PARAM_VAL_LENGTH:
        return text
    return text[: MAX_PARAM_VAL_LENGTH - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def _log_params(client: MlflowClient, run_id: str, flat: Mapping[str, str]) -> None:
    items = [Param(key, value) for key, value in flat.items()]
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])


def _experiment_id(client: MlflowClient, name: str, location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process created it between the two calls
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        log.warning("experiment %s was deleted; restoring it", name)
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _provenance_tags(stage: str, params: Mapping[str, Any]) -> dict[str, str]:
    tags = {
        "stage": stage,
        "git_revision": git_revision() or "unknown",
        "git_dirty": _git_dirty(),
        **owner_tags(),
        "params_hash": params_hash(params),
    }
    if os.environ.get("DVC_EXP_NAME"):  # a DVC experiment (`dvc exp run`): its name and baseline commit
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        tags["dvc_baseline"] = os.environ.get("DVC_EXP_BASELINE_REV", "unknown")
    return tags


def _git_dirty() -> str:
    try:
        out = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return "true" if out.stdout.strip() else "false"


def _process_alive(pid: int, run_start_ms: int | None) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created_ms = process.create_time() * 1000
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: it exists, and we cannot tell more
        return True
    return run_start_ms is None or created_ms <= run_start_ms + PID_REUSE_SLACK_MS


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `StageTerminated` once; the previous handler comes back after.
    Signal handlers can be set only from the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:  # a second SIGTERM must not interrupt the unwinding that the first started
            fired = True
            raise StageTerminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _end_run(client: MlflowClient, run_id: str, status: str) -> None:
    active = mlflow.active_run()
    try:
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)
        else:  # something inside the block ended or replaced the fluent run; set the status directly
            client.set_terminated(run_id, status)
    except Exception:
        if status == "FINISHED":
            raise
        log.exception("could not mark run %s %s", run_id, status)  # keep the stage's own error in front


def _require_active_run() -> None:
    # The fluent log_* calls would otherwise start a stray run of their own.
    if mlflow.active_run() is None:
        raise RuntimeError("no active MLflow run; log artifacts inside start_stage_run")


def flat_metrics(tree: Mapping, prefix: str = "", separator: str = "/") -> dict[str, float]:
    """Nested numbers -> one MLflow metric each, the keys joined by `separator`
    ({"methods": {"joint_mel": {"all": {"psnr": 25.1}}}} -> "methods/joint_mel/all/psnr"); values that are
    not numbers (None, strings, booleans) are left out."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, f"{name}{separator}", separator))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
