"""Lightning step logic for pretraining the segmenter: L_PS, metrics, a sample grid per validation.

L_PS is the per-pixel cross entropy plus `dice_weight` x the target classes' soft Dice and, when the
segmenter has the offset head, `offset_weight` x the head's L1 to the instances' centers
(components.instances). Validation reports the pixel
accuracy, the IoU of the target classes' pixels, and the quantity the method cares about: the IoU with
`M_G` of the predicted target-class instance that overlaps `M_G` most (the selection rule of end-to-end
training), instances split by the offset head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Literal

import lightning as L
import torch

from components.losses import offset_loss, segmentation_loss, target_dice_loss
from components.metrics import mask_iou
from components.segmenter import Segmenter, SegmenterConfig
from components.selection import evaluation_mask, offset_maps
from pipelines.params import NetworksParams
from pipelines.training.schedule import CosineToZero
from pipelines.training.visuals import colorize, grid_image, log_grid

# ----------------------------------------------------------------------------- configs from params
# Built by keyword in this one place (a positional build in each stage once dropped
# pretrain_inpainter.schedule); tests/code/test_params_applied.py holds params and builds equal.


def segmenter_config(networks: NetworksParams, num_classes: int) -> SegmenterConfig:
    return SegmenterConfig(num_classes=num_classes, **networks.segmenter.model_dump())


def segmenter_terms(logits: torch.Tensor, offsets: torch.Tensor | None, batch: dict, offset_weight: float,
                    dice_weight: float = 0.0, target_classes: Sequence[int] = ()
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_PS = cross entropy (+ dice_weight x the target classes' soft Dice, + offset_weight x the offset
    head's L1) and its parts, for logging."""
    ce = segmentation_loss(logits, batch["seg"])
    loss, logs = ce, {"ce": ce.detach()}
    if dice_weight and not target_classes:
        raise ValueError("dice_weight > 0 needs the target classes the Dice term is over")
    if dice_weight:
        dice = target_dice_loss(logits, batch["seg"], target_classes)
        loss, logs["dice"] = loss + dice_weight * dice, dice.detach()
    if offsets is not None:
        votes = offset_loss(offsets, batch["offsets"], batch["offset_weight"])
        loss, logs["offsets"] = loss + offset_weight * votes, votes.detach()
    return loss, logs


class SegmenterModule(L.LightningModule):
    def __init__(self, config: SegmenterConfig, target_classes: list[int], lr: float, weight_decay: float,
                 schedule: Literal["constant", "cosine"] = "constant", offset_weight: float = 1.0,
                 dice_weight: float = 0.0):
        super().__init__()
        self.save_hyperparameters({"config": asdict(config), "target_classes": target_classes, "lr": lr,
                                   "weight_decay": weight_decay, "schedule": schedule,
                                   "offset_weight": offset_weight, "dice_weight": dice_weight})
        self.net = Segmenter(config)
        self.target_classes = target_classes
        self._sample: dict | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def _terms(self, logits: torch.Tensor, offsets: torch.Tensor | None, batch: dict
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        return segmenter_terms(logits, offsets, batch, hp["offset_weight"], hp.get("dice_weight", 0.0),
                               self.target_classes)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, offsets = self.net.segment(batch["image"])
        loss, logs = self._terms(logits, offsets, batch)
        accuracy = (logits.argmax(1) == batch["seg"]).float().mean()
        self.log_dict({"train/loss": loss, "train/pixel_acc": accuracy, **{f"train/{k}": v for k, v in logs.items()}},
                      on_step=True, on_epoch=True, batch_size=len(logits), sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, offsets = self.net.segment(batch["image"])
        labels = logits.argmax(1)
        target = torch.isin(batch["seg"], torch.tensor(self.target_classes, device=labels.device))
        predicted = torch.isin(labels, torch.tensor(self.target_classes, device=labels.device))
        selected = evaluation_mask(logits, self.target_classes, batch["mask"], offset_maps(offsets))
        metrics = {
            "val/loss": self._terms(logits, offsets, batch)[0],
            "val/pixel_acc": (labels == batch["seg"]).float().mean(),
            "val/target_iou": mask_iou(predicted[:, None].float(), target[:, None].float()).mean(),
            "val/mask_iou": mask_iou(selected, batch["mask"]).mean(),
        }
        self.log_dict(metrics, on_epoch=True, batch_size=len(logits), sync_dist=True)
        if batch_idx == 0:
            self._sample = {"image": batch["image"][:8], "seg": batch["seg"][:8], "pred": labels[:8],
                            "sel": selected[:8]}

    def on_validation_epoch_end(self) -> None:
        if self._sample is None or self.trainer.sanity_checking:
            return
        s, classes = self._sample, self.hparams["config"]["num_classes"]
        rows = [s["image"], colorize(s["seg"], classes), colorize(s["pred"], classes), s["sel"].expand(-1, 3, -1, -1)]
        log_grid(self, grid_image(rows), f"samples/segmenter_epoch_{self.current_epoch:03d}.png")

    def networks_by_kind(self) -> dict[str, list[torch.nn.Module]]:
        """The module's networks by kind, for the memory-format setting (harness.to_memory_format)."""
        return {"segmenter": [self.net]}

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        if hp.get("schedule", "constant") == "constant":
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, CosineToZero(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
