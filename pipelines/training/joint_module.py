"""Lightning step logic for end-to-end fine-tuning: segmenter -> selected mask -> the three inpainters.

Extends the inpainter pretraining module (same networks, discriminators, losses and update order)
with the segmenter in front. Per step:

    1. segment I; L_PS = cross entropy against the segmentation of I;
    2. select the mask (components.selection): the target instance overlapping M_G most, binary in the
       forward pass, straight-through to the soft target probability m_hat (fallback: M_G);
    3. inpaint with that mask, the segmenter's probabilities (detached: `map_gradient` false) as the
       segmentation input;
    4. discriminators first (detached fakes), then
       L_SN = L_PS + L_E + L_S + L_I + w_C * L_C + lambda_X * L_X, L_X = mean (phi - alpha) * m_hat (MEL,
       optional), one backward pass into the segmenter and the three generators.

How the inpainting losses reach the mask (`mask_gradient`):
- "composite": through `L_C` = the whole-image L1 of the composite I_I*M + I*(1-M)
  against I_G, per M_G pixel (losses.composite_l1; the fill detached there, so `L_C` trains the mask
  only). Its gradient at a pixel is the question the method asks: is the fill or the photo closer to the
  truth here? Grow over object pixels left out, shrink off background the fill renders worse. The
  generators see the mask detached, so L_E, L_S and L_I train only them.
- "inputs" (the CPU default): through what the generators see (the hole, its fill, the mask channel), the gradient of
  their hole-only losses with respect to the hole's shape. Measured (README, *Balance of L_SN*): 3-30x
  L_PS's pull, in directions unrelated to it, and nothing in it scores an object pixel left outside the
  hole, since the losses count hole pixels only.

The L1 / CE terms of L_E, L_S, L_I are weighted and normalized with the *detached* mask: their
normalization counts the mask's pixels, and a gradient through that count would reward growing the mask
for its own sake; `L_C` divides by M_G's pixels instead.

The segmentation map the segmentation inpainter completes, and its discriminator judges, is the
segmenter's output detached (`map_gradient: false`), so the method's coupling is the mask alone.

Validation selects like evaluation (no fallback: when no instance overlaps M_G nothing is removed) and
reports the composite's PSNR / SSIM, PSNR inside M_G, the mask's coverage of M_G, its size relative to
M_G, its IoU with M_G, and how often an instance was found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import torch

from components import losses
from components.inpainting import InpaintingConfig
from components.metrics import area_ratio, coverage, mask_iou, psnr, ssim
from components.segmenter import Segmenter, SegmenterConfig
from components.selection import evaluation_mask, offset_maps, other_objects, training_mask
from pipelines.params import FinetuneJointParams
from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig
from pipelines.training.segmenter_module import segmenter_terms
from pipelines.training.visuals import grid_image, log_grid


@dataclass(frozen=True)
class JointConfig:
    target_classes: tuple[int, ...]  # contiguous class indices the masks are selected from
    segmenter_lr: float = 1e-5
    segmentation_weight: float = 1.0  # weight of L_PS in L_SN
    margin: int = 8  # px around the selection and M_G where m_hat (and so the gradient) lives
    mel_enabled: bool = True
    mel_alpha: float = 0.03
    mel_weight: float = 1000.0  # lambda_X
    mel_reduction: Literal["mean", "sum"] = "mean"
    offset_weight: float = 1.0  # the offset head's L1 in L_PS (when the segmenter has the head)
    dice_weight: float = 0.0  # the target classes' soft Dice in L_PS
    map_gradient: bool = False  # the inpainting losses also reach the segmenter through the segmentation map
    # how the inpainting losses reach the mask: "composite", through the composite's whole-image L1 alone
    # (the generators see the mask detached); "inputs", through what the generators see (the hole, its fill)
    mask_gradient: Literal["composite", "inputs"] = "inputs"
    composite_weight: float = 0.0  # weight of losses.composite_l1 in L_I (0: the term is off)
    spare_others: bool = False  # m_hat is 0 on the other target-class objects of I (selection.other_objects)


# ----------------------------------------------------------------------------- configs from params
# Built by keyword in this one place (a positional build in each stage once dropped
# pretrain_inpainter.schedule); tests/code/test_params_applied.py holds params and builds equal.


def joint_config(section: FinetuneJointParams, target_classes: Sequence[int]) -> JointConfig:
    """With MEL off (the ablation) the MEL settings are not part of the model: the config keeps its defaults."""
    mel = section.mel
    settings = {"mel_alpha": mel.alpha, "mel_weight": mel.weight, "mel_reduction": mel.reduction} if mel.enabled else {}
    return JointConfig(target_classes=tuple(target_classes), segmenter_lr=section.segmenter_lr,
                       segmentation_weight=section.segmentation_weight, margin=section.selection_margin,
                       mel_enabled=mel.enabled, offset_weight=section.offset_weight,
                       dice_weight=section.dice_weight,
                       map_gradient=section.map_gradient, mask_gradient=section.mask_gradient,
                       composite_weight=section.composite_weight, spare_others=section.spare_others, **settings)


class JointPass(NamedTuple):
    mask: torch.Tensor  # (B, 1, H, W) binary forward, straight-through to m_hat
    found: torch.Tensor  # (B,) bool: a predicted instance overlapped M_G (else the mask is M_G)
    fake: dict[str, torch.Tensor]  # the inpainters' outputs (InpainterModule._generate)
    loss_ps: torch.Tensor  # L_PS
    loss_x: torch.Tensor  # L_X, unweighted (zero with MEL off)
    loss_c: torch.Tensor  # losses.composite_l1 through the mask, unweighted (zero with composite_weight 0)


class JointModule(InpainterModule):
    def __init__(
        self,
        inpainting: InpaintingConfig,
        segmenter: SegmenterConfig,
        joint: JointConfig,
        weights: LossWeights,
        optim: OptimConfig,
        features: Literal["discriminator", "vgg19"] = "discriminator",
        vgg19_weights: str | None = None,
    ):
        super().__init__(inpainting, weights, optim, features, vgg19_weights, image_inputs="predicted")
        self.save_hyperparameters({"config": asdict(inpainting), "segmenter": asdict(segmenter),
                                   "joint": asdict(joint), "weights": asdict(weights), "optim": asdict(optim),
                                   "features": features, "vgg19_weights": vgg19_weights})
        self.segmenter = Segmenter(segmenter)
        self.joint = joint

    # ----------------------------------------------------------------------------- training
    def segment_and_inpaint(self, batch: dict) -> JointPass:
        """Steps 1-3 of the joint step, and the segmenter's own terms (L_PS, the unweighted L_X)."""
        j = self.joint
        # 1. segment
        logits, offsets = self.segmenter.segment(batch["image"])  # (B, K, H, W), (B, 2, H, W) or None
        # 2. select the mask: binary forward, straight-through to m_hat
        mask, m_hat, found = training_mask(logits, j.target_classes, batch["mask"], j.margin, offsets,
                                           self._spared(batch))
        # 3. inpaint with it; the segmentation map they are given is the segmenter's, detached unless
        #    map_gradient: the inpainting losses then shape the segmenter through the mask alone
        #    (mask_gradient "composite": the generators see the mask detached)
        probabilities = logits.softmax(dim=1)
        fake = self._generate(batch, mask=mask if j.mask_gradient == "inputs" else mask.detach(),
                              seg_in=probabilities if j.map_gradient else probabilities.detach())
        zero = torch.zeros((), device=logits.device)
        loss_x = (losses.mask_expansion_loss(batch["sdf"], m_hat, j.mel_alpha, j.mel_reduction)
                  if j.mel_enabled else zero)
        # the mask's own signal: the composite through the mask (the fill detached: this term trains the
        # mask, the generators keep their own losses), (B, 3, H, W)
        loss_c = zero
        if j.composite_weight:
            composite = fake["image"].detach() * mask + batch["image"] * (1 - mask)
            loss_c = losses.composite_l1(composite, batch["background"], batch["mask"])
        loss_ps = self._loss_ps(logits, offsets, batch)
        return JointPass(mask, found, fake, loss_ps, loss_x, loss_c)

    def _loss_ps(self, logits: torch.Tensor, offsets: torch.Tensor | None, batch: dict) -> torch.Tensor:
        """L_PS with the joint stage's weights (segmenter_module.segmenter_terms)."""
        j = self.joint
        return segmenter_terms(logits, offsets, batch, j.offset_weight, j.dice_weight, j.target_classes)[0]

    def _spared(self, batch: dict) -> torch.Tensor | None:
        """The pixels m_hat leaves out with `spare_others`: the unpasted target-class objects of I."""
        j = self.joint
        return other_objects(batch["seg"], j.target_classes, batch["mask"]) if j.spare_others else None

    def training_step(self, batch: dict, batch_idx: int) -> None:
        g_edge, d_edge, g_seg, d_seg, g_image, d_image, opt_segmenter = self.optimizers()
        j = self.joint
        mask, found, fake, loss_ps, loss_x, loss_c = self.segment_and_inpaint(batch)
        # 4. discriminators first, then everything else in one backward pass
        d_logs = self.update_discriminators(fake, batch, [d_edge, d_seg, d_image])
        g = self.generator_losses(fake, batch, mask.detach())
        total = (j.segmentation_weight * loss_ps + g["loss_edge"] + g["loss_seg"] + g["loss_image"]
                 + j.composite_weight * loss_c + (j.mel_weight * loss_x if j.mel_enabled else 0.0))
        generators = (g_edge, g_seg, g_image, opt_segmenter)
        for opt in generators:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        for opt in generators:
            opt.step()
        for opt in (d_edge, d_seg, d_image):
            opt.zero_grad(set_to_none=True)
        self.step_schedulers()
        with torch.no_grad():
            hard = mask.detach()
            logs = {"train/loss": total.detach(), "train/loss_ps": loss_ps, "train/mel": loss_x,
                    "train/composite_l1": loss_c.detach(),
                    "train/coverage": coverage(hard, batch["mask"]).nanmean(),
                    "train/mask_ratio": area_ratio(hard, batch["mask"]).nanmean(),
                    "train/found": found.float().mean(),
                    "train/psnr_mask": psnr(fake["composite"], batch["background"], mask=batch["mask"]).nanmean()}
        self.log_dict({**logs, **{f"train/{k}": v for k, v in g.items()}, **d_logs},
                      on_step=True, on_epoch=True, batch_size=len(hard), sync_dist=True)

    # ----------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        j, target, true_mask = self.joint, batch["background"], batch["mask"]
        logits, offsets = self.segmenter.segment(batch["image"])
        mask = evaluation_mask(logits, j.target_classes, true_mask, offset_maps(offsets))
        fake = self._generate(batch, mask=mask, seg_in=logits.softmax(dim=1))
        metrics = {
            "val/psnr": psnr(fake["composite"], target).mean(),
            "val/ssim": ssim(fake["composite"], target).mean(),
            "val/psnr_mask": psnr(fake["composite"], target, mask=true_mask).nanmean(),
            "val/coverage": coverage(mask, true_mask).nanmean(),
            "val/mask_ratio": area_ratio(mask, true_mask).nanmean(),
            "val/mask_iou": mask_iou(mask, true_mask).mean(),
            "val/found": (mask.flatten(1).amax(1) > 0).float().mean(),
            "val/loss_ps": self._loss_ps(logits, offsets, batch),
        }
        if "sdf" in batch:
            m_hat = training_mask(logits, j.target_classes, true_mask, j.margin, offsets, self._spared(batch))[1]
            metrics["val/mel"] = losses.mask_expansion_loss(batch["sdf"], m_hat, j.mel_alpha, j.mel_reduction)
        self.log_dict(metrics, on_epoch=True, batch_size=len(mask), sync_dist=True)
        if batch_idx == 0:
            self._sample = {"image": batch["image"][:8], "true_mask": true_mask[:8], "mask": mask[:8],
                            "composite": fake["composite"][:8], "target": target[:8]}

    def on_validation_epoch_end(self) -> None:
        if self._sample is None or self.trainer.sanity_checking:
            return
        s = self._sample
        rows = [s["image"], s["true_mask"], s["mask"], s["composite"], s["target"]]
        log_grid(self, grid_image(rows), f"samples/joint_epoch_{self.current_epoch:03d}.png")

    def networks_by_kind(self) -> dict[str, list[torch.nn.Module]]:
        return {**super().networks_by_kind(), "segmenter": [self.segmenter]}

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        """The inpainters' six, then the segmenter's (its own learning rate, the same betas)."""
        segmenter = torch.optim.Adam(self.segmenter.parameters(), lr=self.joint.segmenter_lr,
                                     betas=self.optim_config.betas)
        return [*super().build_optimizers(), segmenter]
