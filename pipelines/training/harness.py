"""What every training stage shares: the Trainer from params, resumable checkpoints, metric files.

Checkpoints live in the stage's DVC output folder, which `dvc.yaml` marks `persist: true`, so a
killed `dvc repro` resumes from `last.ckpt`. A fingerprint of the stage's params sits beside them;
when the params change, the old checkpoints belong to another experiment and are discarded rather
than resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from pipelines.common import git_revision, params_hash, write_json
from pipelines.data import EpochSetter
from pipelines.params import TrainerParams
from pipelines.tracking import lightning_logger, start_stage_run

FINGERPRINT = "fingerprint.json"
REPO = Path(__file__).resolve().parents[2]


def code_hash() -> str:
    """sha256 (16 hex digits) of every Python file of the library and the pipelines: checkpoints made by
    other code are not resumed."""
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("components/**/*.py"), *REPO.glob("pipelines/**/*.py")]):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def is_launcher_rank_zero() -> bool:
    """True in the process that started the stage. Under DDP, Lightning re-runs the stage's command for
    the other local ranks (and other nodes run it too); those must not touch outputs or MLflow runs."""
    return all(int(os.environ.get(var, "0")) == 0 for var in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def prepare_checkpoints(folder: Path, fingerprint: dict[str, Any]) -> str | None:
    """'last' checkpoint path to resume from when `folder` holds one made with the same fingerprint,
    else None after clearing the folder (on the launching rank only). The fingerprint is the stage's
    params without the number of epochs (training a finished run for longer resumes it) plus the code's
    hash (a kill is resumed, a code change is not)."""
    fingerprint = {**fingerprint, "code": code_hash()}
    stamp = folder / FINGERPRINT
    last = folder / "last.ckpt"
    if last.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == fingerprint:
        return str(last)
    if not is_launcher_rank_zero():
        return None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(stamp, fingerprint)
    return None


@contextlib.contextmanager
def tracked(experiment: str, stage: str, section: dict[str, Any]) -> Iterator[tuple[Any, str | None]]:
    """(Lightning logger, MLflow run id) for the stage: a real run on the launching rank, none elsewhere."""
    if not is_launcher_rank_zero():
        yield False, None
        return
    with start_stage_run(experiment, stage, section) as run:
        yield lightning_logger(run.run_id), run.run_id


class StartStep(Callback):
    """Remembers the global step at which fitting started (> 0 after a resume)."""

    def __init__(self):
        self.step: int | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.step = trainer.global_step


class EpochMetricsFile(Callback):
    """At each epoch's end (after its validation), append the epoch's train and val metrics to a JSON
    list that `dvc plots` draws."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        rows = json.loads(self.path.read_text()) if self.path.is_file() else []
        rows = [r for r in rows if r["epoch"] < trainer.current_epoch]  # a resumed epoch is rewritten
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") or key.endswith("_epoch"):
                row[key.removesuffix("_epoch").replace("/", "_")] = round(float(value), 6)
        write_json(self.path, [*rows, row])


def trainer_arguments(params: TrainerParams, max_epochs: int) -> dict[str, Any]:
    """The Lightning Trainer's settings from `trainer` params, by keyword (every field is used here)."""
    limit = params.limit_train_batches
    return {"accelerator": params.accelerator, "devices": params.devices, "num_nodes": params.num_nodes,
            "strategy": params.strategy, "precision": params.precision, "max_epochs": max_epochs,
            "limit_train_batches": int(limit) if limit > 1 else limit,
            "log_every_n_steps": params.log_every_n_steps}


def build_trainer(
    params: TrainerParams, max_epochs: int, folder: Path, monitor: str, mode: str, logger: Any,
    plots: Path, extra_callbacks: list[Callback] | None = None,
) -> L.Trainer:
    checkpoint = ModelCheckpoint(dirpath=folder, filename="best", monitor=monitor, mode=mode, save_last=True,
                                 save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    return L.Trainer(
        **trainer_arguments(params, max_epochs), logger=logger,
        callbacks=[checkpoint, EpochMetricsFile(plots), StartStep(), LearningRates(), *(extra_callbacks or [])],
        enable_progress_bar=True, enable_model_summary=False, default_root_dir=str(folder),
    )


def finish(
    trainer: L.Trainer, folder: Path, name: str, config: dict, params_hash: str, metrics_path: Path, extra: dict,
    extra_metrics: dict | None = None,
) -> dict:
    """Write `<name>.json` beside the checkpoints and the final validation metrics for DVC."""
    metrics = {k.replace("/", "_"): round(float(v), 6) for k, v in trainer.callback_metrics.items()
               if k.startswith("val/")}
    metrics.update(extra_metrics or {})
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    started = next((c.step for c in trainer.callbacks if isinstance(c, StartStep)), None)
    info = {"config": config, "epoch": trainer.current_epoch, "step": trainer.global_step, "started_at_step": started,
            "metrics": metrics,
            "best_checkpoint": Path(best).name if best else None, "params_hash": params_hash,
            "git_revision": git_revision(), **extra}
    if trainer.global_rank == 0:
        write_json(folder / f"{name}.json", info)
        write_json(metrics_path, metrics)
    return info


def validate_before_fit(params: TrainerParams, module: L.LightningModule, data: L.LightningDataModule) -> dict:
    """The module's validation metrics as it stands (e.g. freshly loaded pretrained weights), on one
    device with no logger or checkpoints: the baseline a fine-tuning stage must beat."""
    trainer = L.Trainer(accelerator=params.accelerator, devices=1, num_nodes=1, precision=params.precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    results = trainer.validate(module, data, verbose=False)[0]
    return {k.replace("/", "_"): round(float(v), 6) for k, v in results.items() if k.startswith("val/")}


@dataclass
class StageFit:
    """Everything a training stage fits, built from params by the stage's `build` (the params test
    inspects these objects, so what it checks is what `fit_stage` runs)."""

    stage: str
    section: dict[str, Any]  # the params the stage reads: MLflow params, the checkpoint fingerprint
    module: L.LightningModule
    data: L.LightningDataModule
    trainer: TrainerParams
    epochs: int
    folder: Path  # checkpoints and <name>.json
    reports: Path
    monitor: str  # validation metric that picks best.ckpt (higher is better)
    name: str
    config: dict  # the networks' configs, for <name>.json
    extra: dict  # more for <name>.json (classes, image size, ...)
    random_mask_epochs: int = 0
    inputs: dict[str, str] | None = None  # name -> content hash of starting weights (fingerprint)
    baseline: bool = False  # validate before fitting: the pretrained_val_* metrics

    def trainer_arguments(self) -> dict[str, Any]:
        return trainer_arguments(self.trainer, self.epochs)


class LearningRates(Callback):
    """Logs every optimizer's learning rate as `lr/<i>` (i in the module's optimizer order), at the
    logger's `log_every_n_steps`: the schedule as applied, step by step, in MLflow. (Manual optimization
    steps its schedulers itself, which Lightning's LearningRateMonitor does not follow.)"""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        rates = {f"lr/{i}": opt.param_groups[0]["lr"] for i, opt in enumerate(trainer.optimizers)}
        module.log_dict(rates, on_step=True, on_epoch=False, batch_size=1)  # the logger's own step cadence


def fit_stage(fit: StageFit, experiment: str) -> dict:
    """The body of a training stage: resume or clear the checkpoints, track the run in MLflow, fit,
    validate when a finished run was resumed, and write `<name>.json` and the stage's metrics.

    `fit.inputs` (name -> content hash) joins the checkpoint fingerprint: other starting weights are
    another experiment. With `fit.baseline`, the module is validated before fitting and those metrics
    are written beside the final ones as `pretrained_val_*` (and logged to MLflow as `pretrained/...`).
    """
    stage, section, module, data = fit.stage, fit.section, fit.module, fit.data
    fingerprint = {**section, stage: {**section[stage], "epochs": None}, "inputs": fit.inputs or {}}
    resume = prepare_checkpoints(fit.folder, fingerprint)
    with tracked(experiment, stage, section) as (logger, run_id):
        before = validate_before_fit(fit.trainer, module, data) if fit.baseline and run_id is not None else {}
        if before:
            mlflow.log_metrics({f"pretrained/{k.removeprefix('val_')}": v for k, v in before.items()})
        trainer = build_trainer(fit.trainer, fit.epochs, fit.folder, fit.monitor, "max", logger,
                                fit.reports / "plots" / f"{stage}.json", [EpochSetter(fit.random_mask_epochs)])
        trainer.fit(module, data, ckpt_path=resume)
        if not any(key.startswith("val/") for key in trainer.callback_metrics):  # resumed a finished run
            trainer.validate(module, data, verbose=False)
        return finish(trainer, fit.folder, fit.name, fit.config, params_hash(section),
                      fit.reports / f"{stage}.json", {**fit.extra, "mlflow_run_id": run_id},
                      {f"pretrained_{k}": v for k, v in before.items()})
