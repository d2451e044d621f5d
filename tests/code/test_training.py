"""Training: a Lightning fast_dev_run per module, the stages end to end on tiny data (MLflow run,
checkpoints, metrics, resume), and a 2-process CPU DDP run of a stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from components.inpainting import InpaintingSizes
from components.segmenter import SegmenterConfig
from pipelines.data import PairsDataModule, pairs_config
from pipelines.params import Params, parse_params
from pipelines.stages import pretrain_inpainter, pretrain_segmenter, scenes, synthesize
from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig
from pipelines.training.segmenter_module import SegmenterModule
from tests.conftest import REPO, tiny_params_raw


def tiny_training_raw(tmp: Path) -> dict:
    raw = tiny_params_raw(tmp)
    raw["synthesize"].update(image_size=32, pairs={"train": 16, "val": 8, "test": 4})
    raw["paths"].update(segmenter=str(tmp / "models" / "segmenter"), inpainter=str(tmp / "models" / "inpainter"))
    raw["networks"] = {"image_size": 32, "segmenter": {"width": 8, "depth": 2},
                       "inpainter": {"width": 8, "residual_blocks": 1, "dilation": 2, "discriminator_width": 8}}
    raw["trainer"].update(num_workers=0, log_every_n_steps=1)
    raw["pretrain_segmenter"].update(epochs=1, batch_size=4)
    raw["pretrain_inpainter"].update(epochs=1, batch_size=4)
    return raw


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("train")
    raw = tiny_training_raw(tmp)
    params = parse_params(raw)
    scenes.run(params)
    synthesize.run(params)
    return tmp, raw


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _data(raw: dict) -> tuple:
    config, categories, targets = pairs_config(raw["paths"]["pairs"], 32, 1.0, 0)
    return PairsDataModule(config, batch_size=4, num_workers=0), len(categories) + 1, targets


def _changed(module: L.LightningModule, before: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())]


def test_fast_dev_run_segmenter(tiny):
    data, num_classes, targets = _data(tiny[1])
    module = SegmenterModule(SegmenterConfig(num_classes, 8, 2), targets, lr=1e-3, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(module, data)
    assert trainer.global_step == 1
    assert len(_changed(module, before)) == len(before)
    assert "val/mask_iou" in trainer.callback_metrics


def test_fast_dev_run_inpainter(tiny):
    data, num_classes, _ = _data(tiny[1])
    module = InpainterModule(InpaintingSizes(num_classes, 8, 1, 2, 8), LossWeights(), OptimConfig())
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(module, data)
    changed = _changed(module, before)
    assert any(n.startswith("nets.edge") for n in changed) and any(n.startswith("discs.image") for n in changed)
    assert all(n in changed for n in before if n.startswith("nets."))  # every generator weight moved
    metrics = trainer.callback_metrics
    assert {"val/psnr_mask", "val/psnr_mask_telea", "val/ssim"} <= set(metrics)


def test_segmenter_stage_tracks_resumes_and_writes(tiny, mlflow_store):
    tmp, raw = tiny
    info = pretrain_segmenter.run(parse_params(raw))
    folder = Path(raw["paths"]["segmenter"])
    assert (folder / "last.ckpt").is_file() and (folder / "best.ckpt").is_file()
    saved = json.loads((folder / "segmenter.json").read_text())
    assert saved["step"] == info["step"] > 0 and saved["started_at_step"] == 0
    assert saved["classes"][0]["index"] == 1 and saved["target_classes"] == [1]
    metrics = json.loads((Path(raw["paths"]["reports"]) / "pretrain_segmenter.json").read_text())
    assert 0.0 <= metrics["val_mask_iou"] <= 1.0
    curve = json.loads((Path(raw["paths"]["reports"]) / "plots" / "pretrain_segmenter.json").read_text())
    assert [row["epoch"] for row in curve] == [0] and "train_loss" in curve[0]
    # the MLflow run: params, per-epoch metrics, a sample grid, provenance tags
    client = MlflowClient(mlflow_store)
    run = client.get_run(saved["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["pretrain_segmenter.batch_size"] == "4"
    assert run.data.tags["stage"] == "pretrain_segmenter" and "git_revision" in run.data.tags
    assert "val/mask_iou" in run.data.metrics and "train/loss_epoch" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert artifacts == ["samples/segmenter_epoch_000.png"]
    # training longer with the same params resumes from the last checkpoint
    raw2 = json.loads(json.dumps(raw))
    raw2["pretrain_segmenter"]["epochs"] = 2
    again = pretrain_segmenter.run(parse_params(raw2))
    assert again["started_at_step"] == info["step"] > 0 and again["step"] == 2 * info["step"]
    # other params: the old checkpoints are not resumed
    raw2["pretrain_segmenter"]["lr"] = 0.01
    fresh = pretrain_segmenter.run(parse_params(raw2))
    assert fresh["started_at_step"] == 0


def test_inpainter_stage(tiny, mlflow_store):
    tmp, raw = tiny
    info = pretrain_inpainter.run(parse_params(raw))
    folder = Path(raw["paths"]["inpainter"])
    assert (folder / "best.ckpt").is_file() and json.loads((folder / "inpainter.json").read_text())["step"] > 0
    assert {"val_psnr_mask", "val_psnr_mask_telea"} <= set(info["metrics"])
    run = MlflowClient(mlflow_store).get_run(info["mlflow_run_id"])
    assert run.data.params["pretrain_inpainter.losses.image_style"] == "250.0"


def test_random_mask_pretraining_then_object_masks(tiny, mlflow_store):
    tmp, raw = tiny
    raw = json.loads(json.dumps(raw))
    raw["pretrain_inpainter"].update(epochs=2, random_mask_epochs=1)
    raw["paths"]["inpainter"] = str(tmp / "models" / "inpainter_random")
    info = pretrain_inpainter.run(parse_params(raw))
    assert info["epoch"] == 2


@pytest.mark.slow
def test_two_process_cpu_ddp(tiny, tmp_path):
    """The scale-out path for real: Lightning launches a second process, gloo all-reduces gradients."""
    _, raw = tiny
    raw = json.loads(json.dumps(raw))
    raw["trainer"].update(devices=2, strategy="ddp")
    raw["paths"]["segmenter"] = str(tmp_path / "ddp_segmenter")
    raw["paths"]["reports"] = str(tmp_path / "reports")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", NO_ALBUMENTATIONS_UPDATE="1")
    done = subprocess.run([sys.executable, "-m", "pipelines.stages.pretrain_segmenter", "--params", str(params_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout
    saved = json.loads((tmp_path / "ddp_segmenter" / "segmenter.json").read_text())
    assert saved["step"] == 2  # 16 pairs / (batch 4 x 2 processes)
    runs = MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(
        [MlflowClient(env["MLFLOW_TRACKING_URI"]).get_experiment_by_name("object-removal").experiment_id])
    assert len(runs) == 1  # only the launching rank tracks


def test_vgg_option_without_file_is_a_clear_error(tiny):
    _, raw = tiny
    raw = json.loads(json.dumps(raw))
    raw["pretrain_inpainter"].update(features="vgg19", vgg19_weights="/nowhere/vgg19.pth")
    params: Params = parse_params(raw)
    with pytest.raises(FileNotFoundError, match="VGG-19 weights file not found: /nowhere/vgg19.pth"):
        pretrain_inpainter.run(params)
