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
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from pipelines.common import git_revision, params_hash, write_headline, write_json
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
    """At each epoch's end (after its validation), the epoch's train and val metrics as one more row of a
    JSON list that `dvc plots` draws.

    The rows live in the checkpoints too (this callback's `state_dict`, saved in the same
    `on_train_epoch_end` right after the row is added: `build_trainer`'s checkpoints are taken at the
    epoch's end, not at validation's): DVC deletes the plot file before it re-runs a stage, so a stage
    resumed after a kill rebuilds the rows of the epochs before it from `last.ckpt`, not from the file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch]  # what the checkpoint holds
        if trainer.global_rank == 0:
            write_json(self.path, self.rows)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # a finished run resumed from its last.ckpt runs no epoch and never calls on_train_start
        if trainer.global_rank == 0:
            write_json(self.path, self.rows)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") or key.endswith("_epoch"):
                row[key.removesuffix("_epoch").replace("/", "_")] = round(float(value), 6)
        self.rows = [*(r for r in self.rows if r["epoch"] < trainer.current_epoch), row]
        if trainer.global_rank == 0:
            write_json(self.path, self.rows)


class ProgressLog(Callback):
    """One log line per epoch (and one every `every_s` seconds inside a long epoch) through the stage's
    logger, `<stage>`: epoch and batch counts, the epoch's metrics, seconds per epoch and an ETA. This is
    what the retraining flow shows of a training stage (Lightning's progress bar, drawn only on a
    terminal, is carriage returns that a log cannot hold)."""

    def __init__(self, stage: str, every_s: float = 60.0):
        self.stage_log, self.every_s = logging.getLogger(stage), every_s
        self.start_time = self.last_line = 0.0
        self.start_epoch = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start_time = self.last_line = time.monotonic()
        self.start_epoch = trainer.current_epoch
        if trainer.global_rank == 0:
            self.stage_log.info("training: epochs %d-%d of %d, %d batches each, precision %s%s",
                          trainer.current_epoch + 1, trainer.max_epochs, trainer.max_epochs,
                          trainer.num_training_batches, trainer.precision,
                          f" (resumed at step {trainer.global_step})" if trainer.global_step else "")

    def _done_total(self, trainer: L.Trainer, batch_idx: int) -> tuple[int, int, str]:
        """(batches done since this process started, batches left, ETA text)."""
        per_epoch = trainer.num_training_batches
        done = (trainer.current_epoch - self.start_epoch) * per_epoch + batch_idx + 1
        left = (trainer.max_epochs - trainer.current_epoch) * per_epoch - batch_idx - 1
        seconds = (time.monotonic() - self.start_time) / max(done, 1) * left
        return done, left, _duration(seconds)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_rank != 0 or time.monotonic() - self.last_line < self.every_s:
            return
        self.last_line = time.monotonic()
        _, _, eta = self._done_total(trainer, batch_idx)
        self.stage_log.info("epoch %d/%d: batch %d/%d, step %d, ETA %s", trainer.current_epoch + 1, trainer.max_epochs,
                      batch_idx + 1, trainer.num_training_batches, trainer.global_step, eta)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        self.last_line = time.monotonic()
        done, _, eta = self._done_total(trainer, trainer.num_training_batches - 1)
        epochs = trainer.current_epoch + 1 - self.start_epoch
        metrics = ", ".join(f"{key.removesuffix('_epoch')} {float(value):.4g}"
                            for key, value in sorted(trainer.callback_metrics.items())
                            if key.startswith("val/") or key.endswith("_epoch"))
        self.stage_log.info("epoch %d/%d done: step %d, %s; %.0f s/epoch, ETA %s", trainer.current_epoch + 1,
                      trainer.max_epochs, trainer.global_step, metrics,
                      (time.monotonic() - self.start_time) / epochs, eta)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def native_bf16(accelerator: str) -> bool:
    """Whether the device `accelerator` resolves to computes bf16 natively: a CUDA device with bf16, or a CPU
    with AVX512-BF16 or AMX tiles (elsewhere autocast emulates bf16 many times slower than fp32)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, accelerator: str) -> str:
    """A stage's `precision` param as Lightning takes it: `auto` is bf16-mixed where bf16 is native, else 32-true."""
    if precision == "auto":
        return "bf16-mixed" if native_bf16(accelerator) else "32-true"
    return precision


def trainer_arguments(params: TrainerParams, max_epochs: int, precision: str) -> dict[str, Any]:
    """The Lightning Trainer's settings from `trainer` params and the stage's `precision`, by keyword (every
    field is used here)."""
    limit = params.limit_train_batches
    return {"accelerator": params.accelerator, "devices": params.devices, "num_nodes": params.num_nodes,
            "strategy": params.strategy, "precision": resolve_precision(precision, params.accelerator),
            "max_epochs": max_epochs,
            "limit_train_batches": int(limit) if limit > 1 else limit,
            "log_every_n_steps": params.log_every_n_steps}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on any local filesystem: the checkpoint goes to a temporary
    file beside its target, is flushed to disk, then renamed over it (os.replace). A kill at any moment
    leaves the previous `last.ckpt` / `best.ckpt` or the new one, never a truncated file. (Lightning's own
    write stages the file in the system temp folder and moves it, which is a copy, not a rename, when that
    folder is on another filesystem.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


def build_trainer(
    params: TrainerParams, max_epochs: int, folder: Path, monitor: str, mode: str, logger: Any,
    plots: Path, precision: str, extra_callbacks: list[Callback] | None = None, stage: str = "training",
) -> L.Trainer:
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")  # ours: 2 + stamp
    # Both at the epoch's end, after EpochMetricsFile has added the epoch's row (checkpoint callbacks run
    # last), so the row is in the checkpoint. `last` is its own unmonitored checkpoint: Lightning's
    # `save_last` only rewrites last.ckpt in an epoch whose monitored metric improved.
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False, save_on_train_epoch_end=True)
    last = ModelCheckpoint(dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False,
                           save_on_train_epoch_end=True)
    return L.Trainer(
        **trainer_arguments(params, max_epochs, precision), logger=logger,
        callbacks=[best, last, EpochMetricsFile(plots), StartStep(), LearningRates(), ProgressLog(stage),
                   *(extra_callbacks or [])],
        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False, default_root_dir=str(folder),
        plugins=[AtomicCheckpointIO()],
    )


def finish(
    trainer: L.Trainer, folder: Path, name: str, config: dict, params_hash: str, metrics_path: Path, extra: dict,
    extra_metrics: dict | None = None, stage: str | None = None, headline: dict[str, str] | None = None,
) -> dict:
    """Write `<name>.json` beside the checkpoints, the final validation metrics (`metrics_path`) and, for
    `stage`, its headline (`headline`: name -> key of those metrics)."""
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
        if stage is not None:
            write_headline(metrics_path.parent, stage, {name: metrics[key] for name, key in (headline or {}).items()})
    return info


def validate_before_fit(params: TrainerParams, module: L.LightningModule, data: L.LightningDataModule,
                        precision: str) -> dict:
    """The module's validation metrics as it stands (e.g. freshly loaded pretrained weights), on one device
    with no logger or checkpoints, in the stage's resolved `precision`: the baseline a fine-tuning stage must
    beat."""
    trainer = L.Trainer(accelerator=params.accelerator, devices=1, num_nodes=1, precision=precision,
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
    precision: str  # the section's `precision` param (`auto` resolved where the Trainer is built)
    folder: Path  # checkpoints and <name>.json
    reports: Path
    monitor: str  # validation metric that picks best.ckpt (higher is better)
    name: str
    config: dict  # the networks' configs, for <name>.json
    extra: dict  # more for <name>.json (classes, image size, ...)
    random_mask_epochs: int = 0
    inputs: dict[str, str] | None = None  # name -> content hash of starting weights (fingerprint)
    baseline: bool = False  # validate before fitting: the pretrained_val_* metrics
    headline: dict[str, str] | None = None  # headline name -> key of the final metrics (`dvc metrics show`)

    def __post_init__(self) -> None:
        to_memory_format(self.module, self.trainer.channels_last)

    def trainer_arguments(self) -> dict[str, Any]:
        return trainer_arguments(self.trainer, self.epochs, self.precision)


def to_memory_format(module: L.LightningModule, channels_last: list[str]) -> None:
    """The module's networks of the kinds named in `trainer.channels_last` ("segmenter": the U-Net,
    "inpainter": the generators and discriminators; the module says which are which, `networks_by_kind`)
    in the channels-last memory format, the others contiguous. Only the layout changes: convolutions then
    give channels-last outputs, and checkpoints load into either layout."""
    for kind, networks in module.networks_by_kind().items():
        layout = torch.channels_last if kind in channels_last else torch.contiguous_format
        for network in networks:
            network.to(memory_format=layout)


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
    precision = resolve_precision(fit.precision, fit.trainer.accelerator)
    with tracked(experiment, stage, section) as (logger, run_id):
        if run_id is not None:
            mlflow.set_tag("precision", precision)  # as resolved on this machine (`auto`: bf16 where native)
        before = (validate_before_fit(fit.trainer, module, data, precision)
                  if fit.baseline and run_id is not None else {})
        if before:
            mlflow.log_metrics({f"pretrained/{k.removeprefix('val_')}": v for k, v in before.items()})
        trainer = build_trainer(fit.trainer, fit.epochs, fit.folder, fit.monitor, "max", logger,
                                fit.reports / "plots" / f"{stage}.json", fit.precision,
                                [EpochSetter(fit.random_mask_epochs)], stage)
        trainer.fit(module, data, ckpt_path=resume)
        if not any(key.startswith("val/") for key in trainer.callback_metrics):  # resumed a finished run
            trainer.validate(module, data, verbose=False)
        return finish(trainer, fit.folder, fit.name, fit.config, params_hash(section),
                      fit.reports / f"{stage}.json", {**fit.extra, "precision": precision, "mlflow_run_id": run_id},
                      {f"pretrained_{k}": v for k, v in before.items()}, stage, fit.headline)
