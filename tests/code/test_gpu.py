"""The GPU paths: each training module takes real Lightning steps on CUDA in bf16-mixed (and the joint
step also channels-last), on random tensors. Skipped cleanly where there is no CUDA device (CI)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from components.inpainting import InpaintingConfig
from components.segmenter import SegmenterConfig
from pipelines.data import RandomPairs
from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig
from pipelines.training.joint_module import JointConfig, JointModule
from pipelines.training.segmenter_module import SegmenterModule

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
K = 6


def _module(name: str) -> L.LightningModule:
    inpainting = InpaintingConfig(K, 8, 2, 2, 8, "smooth", "residual01")
    segmenter = SegmenterConfig(K, 8, 2)
    if name == "segmenter":
        return SegmenterModule(segmenter, [1], 1e-3, 0.0)
    if name == "inpainter":
        return InpainterModule(inpainting, LossWeights(), OptimConfig(1e-3))
    return JointModule(inpainting, segmenter, JointConfig((1,), 1e-3), LossWeights(), OptimConfig(1e-3))


class Where(L.Callback):
    """Where the module and its autocast were during training (Lightning moves it back to the CPU at
    teardown, so this cannot be checked after fit)."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.device = next(module.parameters()).device.type
        self.batch_device = batch["image"].device.type


@pytest.mark.parametrize("name, channels_last", [("segmenter", False), ("inpainter", False), ("joint", False),
                                                 ("joint", True)])
def test_bf16_steps_on_cuda(name, channels_last):
    module = _module(name)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    where = Where()
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=1, limit_train_batches=3,
                        limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[where])
    data = DataLoader(RandomPairs(32, 12, K), batch_size=4)
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    assert where.device == where.batch_device == "cuda"
    moved = [n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach().cpu())]
    assert len(moved) > 0.8 * len(before)
    metrics = trainer.callback_metrics
    assert metrics and all(torch.isfinite(v).all() for v in metrics.values())
