"""What every training stage shares: the Trainer from params, resumable checkpoints, metric files.

Checkpoints live in the stage's DVC output folder, which `dvc.yaml` marks `persist: true`, so a
killed `dvc repro` resumes from `last.ckpt`. A fingerprint of the stage's params sits beside them;
when the params change, the old checkpoints belong to another experiment and are discarded rather
than resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from pipelines.common import git_revision, write_json
from pipelines.params import TrainerParams

FINGERPRINT = "fingerprint.json"


def prepare_checkpoints(folder: Path, fingerprint: dict[str, Any]) -> str | None:
    """'last' checkpoint path to resume from when `folder` holds one made with the same fingerprint,
    else None after clearing the folder."""
    stamp = folder / FINGERPRINT
    last = folder / "last.ckpt"
    if last.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == fingerprint:
        return str(last)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(stamp, fingerprint)
    return None


class EpochMetricsFile(Callback):
    """After each validation, append the epoch's train and val metrics to a JSON list (DVC plots)."""

    def __init__(self, path: Path):
        self.path = path

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        rows = json.loads(self.path.read_text()) if self.path.is_file() else []
        rows = [r for r in rows if r["epoch"] < trainer.current_epoch]  # a resumed epoch is rewritten
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") or key.endswith("_epoch"):
                row[key.removesuffix("_epoch").replace("/", "_")] = round(float(value), 6)
        write_json(self.path, [*rows, row])


def build_trainer(
    params: TrainerParams, max_epochs: int, folder: Path, monitor: str, mode: str, logger: Any,
    plots: Path, extra_callbacks: list[Callback] | None = None,
) -> L.Trainer:
    checkpoint = ModelCheckpoint(dirpath=folder, filename="best", monitor=monitor, mode=mode, save_last=True,
                                 save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    limit = params.limit_train_batches
    return L.Trainer(
        accelerator=params.accelerator, devices=params.devices, num_nodes=params.num_nodes,
        strategy=params.strategy, precision=params.precision, max_epochs=max_epochs,
        limit_train_batches=int(limit) if limit > 1 else limit, log_every_n_steps=params.log_every_n_steps,
        logger=logger, callbacks=[checkpoint, EpochMetricsFile(plots), *(extra_callbacks or [])],
        enable_progress_bar=True, enable_model_summary=False, default_root_dir=str(folder),
    )


def finish(
    trainer: L.Trainer, folder: Path, name: str, config: dict, params_hash: str, metrics_path: Path, extra: dict,
) -> dict:
    """Write `<name>.json` beside the checkpoints and the final validation metrics for DVC."""
    metrics = {k.replace("/", "_"): round(float(v), 6) for k, v in trainer.callback_metrics.items()
               if k.startswith("val/")}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    info = {"config": config, "epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": metrics,
            "best_checkpoint": Path(best).name if best else None, "params_hash": params_hash,
            "git_revision": git_revision(), **extra}
    if trainer.global_rank == 0:
        write_json(folder / f"{name}.json", info)
        write_json(metrics_path, metrics)
    return info
