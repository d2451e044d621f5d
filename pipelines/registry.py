"""The MLflow Model Registry side of retraining: register the exported model, compare it with the champion,
promote it, and fetch the champion's files.

One registered model (`registry.model_name`) with two aliases: `challenger` (the newest registered
version) and `champion` (the one to serve). Every step is safe to repeat after a crash anywhere:

- A version is identified by its **fingerprint**: SHA-256 of the two ONNX graphs and the params hash
  of the training that made them. `register` first looks for a version with that fingerprint; one that
  is marked `complete` is reused (no double registration), one left incomplete by a crash is checked
  and completed, or deleted if its files are missing. A version is marked complete only after its
  files (segmenter.onnx, inpainter.onnx, model.json) are confirmed in the artifact store, and only a
  complete version is ever given an alias, so the champion never points at a missing artifact.
- The `register` run carries `host` and `pid` (pipelines.tracking): if its process dies, the next
  registration (or the flow's next start) marks it KILLED instead of leaving it RUNNING.
- `promote` reads the metric from the versions' own tags (written at registration), so a re-run
  decides the same way; the decision is recorded as tags on the challenger.

Each version is an **MLflow model** (pyfunc flavour, `pipelines/mlflow_model.py`): the export's files as its
artifacts, a copy of `components/` (the inference code that goes with them), a signature (an image and a
target in, the result and the mask out), the evaluation's metrics on the `register` run that logged it and
its headline in the model's metadata, and tag `training_run` naming the joint fine-tuning's MLflow run. So
`mlflow.pyfunc.load_model("models:/object-removal@champion")` and `mlflow models serve` work on it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

from components.export_contract import FILES, MODEL_JSON
from pipelines.tracking import flat_metrics, kill_orphaned_runs, owner_tags
from serving.store import fingerprint  # the export's identity, also its BentoML model's version

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
ARTIFACT_PATH = "model"
MODEL_FILES = "artifacts"  # where an MLflow model keeps its artifacts: the export's files
REPO = Path(__file__).resolve().parents[1]
PYFUNC_SCRIPT = REPO / "pipelines" / "mlflow_model.py"
# columns of the pyfunc model (pipelines/mlflow_model.py): the fields of components.inference.Target
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", "image"), ColSpec(Array("string"), "classes", required=False),
                   ColSpec(Array(Array("double")), "points", required=False),
                   ColSpec(Array("double"), "box", required=False), ColSpec("binary", "mask", required=False),
                   ColSpec("long", "expand", required=False)]),
    outputs=Schema([ColSpec("binary", "image"), ColSpec("binary", "mask"), ColSpec("long", "removed_pixels")]),
)
# what the pyfunc model imports (through components/), pinned to this environment's versions
REQUIREMENTS = ("mlflow", "onnxruntime", "numpy", "pandas", "pillow", "opencv-python-headless", "scipy",
                "pycocotools")


@dataclass(frozen=True)
class Decision:
    promoted: bool
    champion: str  # version number after the decision
    challenger: str
    challenger_value: float
    champion_value: float | None  # the previous champion's, None if there was none
    reason: str


def metric_value(metrics: dict, key: str) -> float:
    """`key` ("methods.joint_mel.all.psnr") looked up in the nested metrics dict; a clear error if absent."""
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"metric {key!r} not in the evaluation's metrics (missing {part!r})")
        value = value[part]
    if not isinstance(value, int | float):
        raise ValueError(f"metric {key!r} is {value!r}, not a number")
    return float(value)


def files_uri(source: str) -> str:
    """Where a version's export files are: the `artifacts/` folder of its MLflow model, or the source itself
    for versions registered before they were MLflow models."""
    try:
        names = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=source)}
    except (MlflowException, OSError):
        return source
    return f"{source}/{MODEL_FILES}" if "MLmodel" in names else source


def files_present(version: ModelVersion) -> bool:
    """The version's three files are in the artifact store."""
    try:
        listed = mlflow.artifacts.list_artifacts(artifact_uri=files_uri(version.source))
    except (MlflowException, OSError):
        return False
    names = {Path(f.path).name for f in listed if not f.is_dir}
    return set(FILES) <= names


def pinned(packages: tuple[str, ...]) -> list[str]:
    requirements = []
    for package in packages:
        try:
            requirements.append(f"{package}=={installed_version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def save_mlflow_model(onnx_dir: Path, folder: Path, metadata: dict) -> None:
    """The export as an MLflow pyfunc model in `folder` (models from code: pipelines/mlflow_model.py), with
    the `components` package's source beside it (its .py files only: no __pycache__ of this machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "components"
        shutil.copytree(REPO / "components", code, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
        with warnings.catch_warnings():  # the signature is given: MLflow's (colour-coded) hint is noise
            warnings.filterwarnings("ignore", message=r".*An input example was not provided")
            mlflow.pyfunc.save_model(
                str(folder), python_model=str(PYFUNC_SCRIPT), artifacts={name: str(onnx_dir / name) for name in FILES},
                code_paths=[str(code)], signature=SIGNATURE, pip_requirements=pinned(REQUIREMENTS),
                metadata=metadata)


def training_run(onnx_dir: Path) -> str | None:
    """The MLflow run of the training that made the export: `mlflow_run_id` in the JSON beside the checkpoint
    that model.json names as its source (None when that file is not here)."""
    source = json.loads((onnx_dir / MODEL_JSON).read_text()).get("source")
    if not source:
        return None
    for info in Path(source).parent.glob("*.json"):
        with_run = json.loads(info.read_text())
        if isinstance(with_run, dict) and with_run.get("mlflow_run_id"):
            return str(with_run["mlflow_run_id"])
    return None


def by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(client: MlflowClient, name: str, experiment_id: str, onnx_dir: Path, metrics_file: Path,
             metric: str, tags: dict[str, str], parent_run_id: str | None = None) -> ModelVersion:
    """The version of `name` holding this export (registered now, or found from an earlier attempt),
    complete and aliased `challenger`. A new registration logs the files in a run (a child of
    `parent_run_id` when given)."""
    missing = [str(onnx_dir / f) for f in FILES if not (onnx_dir / f).is_file()]
    if missing or not metrics_file.is_file():
        raise FileNotFoundError(f"cannot register: missing {missing or [str(metrics_file)]} (run the pipeline first)")
    metrics = json.loads(metrics_file.read_text())
    value = metric_value(metrics, metric)
    identity = fingerprint(onnx_dir)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Object removal: segmenter + inpainters as ONNX graphs")
    version = None
    for found in client.search_model_versions(f"name='{name}' and tags.fingerprint='{identity}'"):
        if files_present(found):
            version = found
        else:  # a crash left a version without its files: it must not survive to be aliased
            log.warning("version %s of %s has no files; deleting it", found.version, name)
            client.delete_model_version(name, found.version)
    if version is None:
        # the run (fluent API) in the client's store, with the version: not in whatever store was set last
        mlflow.set_tracking_uri(client.tracking_uri)
        kill_orphaned_runs(client, experiment_id, "register")  # a register run whose process died: KILLED
        trained_by = training_run(onnx_dir)
        link = {"training_run": trained_by} if trained_by else {}
        flat = flat_metrics(metrics, separator=".")
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{time.strftime('%Y%m%d-%H%M%S')}",
                              parent_run_id=parent_run_id, nested=mlflow.active_run() is not None,
                              tags={"stage": "register", **tags, **link, **owner_tags()}) as run:
            with tempfile.TemporaryDirectory() as tmp:
                headline = {k: v for k, v in flat.items() if k.startswith("methods.joint_mel.all.")}
                save_mlflow_model(onnx_dir, Path(tmp) / ARTIFACT_PATH,
                                  {"metric": metric, "metric_value": value, "evaluation": headline})
                mlflow.log_artifacts(str(Path(tmp) / ARTIFACT_PATH), ARTIFACT_PATH)
            mlflow.log_artifact(str(metrics_file), "evaluation")
            mlflow.log_metrics({key.replace("/", "_"): v for key, v in flat.items()})
            mlflow.log_metric(metric.replace("/", "_"), value)
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run_id=run.info.run_id,
            tags={"fingerprint": identity, "metric": metric, "metric_value": repr(value), **tags, **link},
            description=f"{metric} = {value:.4f}")
        if not files_present(version):
            raise RuntimeError(f"version {version.version} of {name}: files not found at {version.source}")
        log.info("registered %s version %s (%s = %.4f)", name, version.version, metric, value)
    else:
        log.info("%s version %s already holds this model (fingerprint %s)", name, version.version, identity)
    client.set_model_version_tag(name, version.version, "complete", "true")
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return client.get_model_version(name, version.version)


def promote(client: MlflowClient, name: str, greater_is_better: bool, margin: float) -> Decision:
    """Make the challenger the champion if there is none, if the champion's files are gone, or if the
    challenger's metric beats the champion's by more than `margin`."""
    challenger = by_alias(client, name, CHALLENGER)
    if challenger is None or challenger.tags.get("complete") != "true" or not files_present(challenger):
        raise RuntimeError(f"{name} has no complete challenger to promote (register first)")
    value = float(challenger.tags["metric_value"])
    champion = by_alias(client, name, CHAMPION)
    champion_value = float(champion.tags["metric_value"]) if champion is not None else None
    if champion is None:
        promoted, reason = True, "no champion yet"
    elif champion.version == challenger.version:
        promoted, reason = True, "already the champion"
    elif not files_present(champion):
        promoted, reason = True, f"the champion (version {champion.version}) has lost its files"
    else:
        gain = value - champion_value if greater_is_better else champion_value - value
        promoted = gain > margin
        reason = (f"{challenger.tags['metric']} {value:.4f} vs champion version {champion.version}'s "
                  f"{champion_value:.4f}: {'better' if promoted else 'not better'} by more than {margin}")
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
    client.set_model_version_tag(name, challenger.version, "promotion", reason)
    now = by_alias(client, name, CHAMPION)
    log.info("%s: %s (%s)", name, "promoted" if promoted else "kept the champion", reason)
    return Decision(promoted, str(now.version), str(challenger.version), value, champion_value, reason)


def download_champion(client: MlflowClient, name: str, destination: Path) -> tuple[ModelVersion, Path]:
    """The champion's files into `destination` (a folder of the three files)."""
    champion = by_alias(client, name, CHAMPION)
    if champion is None:
        raise RuntimeError(f"{name} has no champion")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=files_uri(champion.source),
                                                       dst_path=str(destination)))
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"the champion (version {champion.version}) lacks {missing} at {champion.source}")
    return champion, folder
