"""Lightning step logic for pretraining the three inpainters (manual optimization, six optimizers).

Per step: the edge and segmentation inpainters complete their maps from the true mask `M_G`; the
image inpainter gets those maps detached (`image_inputs: predicted`, as at inference) or the ground
truth's (`ground_truth`, teacher forcing). Then, as DESIGN.md asks for current PyTorch, the three
discriminators are updated first on detached fakes, and only then are the generators' adversarial,
feature-matching, perceptual and style terms computed on the updated discriminators (EdgeConnect's
original order raises an in-place gradient error). Losses and weights are the paper's:

    L_E = 1 * hinge_G + 10 * FM
    L_S = 0.1 * hinge_G + 1 * CE (vs the background's segmentation, normalized by masked pixels)
    L_I = 0.1 * hinge_G + 0.1 * perceptual + 250 * style + 1 * L1 (normalized by masked pixels)

Perceptual and style features come from the image discriminator (default, the paper) or a local
VGG-19 (EdgeConnect). Validation reports PSNR/SSIM of the composite, PSNR inside the mask, and the
same PSNR for an OpenCV Telea fill of the same masks, the classical baseline to beat.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from components import losses
from components.inpainting import InpaintingConfig, InpaintingDiscriminators, InpaintingNetworks
from components.masks import to_gray
from components.metrics import psnr, ssim
from components.vgg import PERCEPTUAL_LAYERS, STYLE_LAYERS, load_vgg19
from pipelines.params import FinetuneJointParams, InpainterLossWeights, NetworksParams, PretrainInpainterParams
from pipelines.training.schedule import CosineToZero
from pipelines.training.visuals import grid_image, log_grid


@dataclass(frozen=True)
class LossWeights:
    edge_adv: float = 1.0
    edge_fm: float = 10.0
    seg_adv: float = 0.1
    seg_ce: float = 1.0
    image_adv: float = 0.1
    image_perceptual: float = 0.1
    image_style: float = 250.0
    image_l1: float = 1.0
    known_weight: float = 1.0  # weight of the known region in the L1 / CE terms (hole = 1)
    normalize_by: Literal["batch", "image"] = "batch"  # L1 / CE: the batch's masked pixels, or each image's


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    d_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.0, 0.9)
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: every lr decays to 0 over the whole fit


# ----------------------------------------------------------------------------- configs from params
# Built by keyword in this one place (a positional build in each stage once dropped
# pretrain_inpainter.schedule); tests/code/test_params_applied.py holds params and builds equal.


def inpainting_config(networks: NetworksParams, num_classes: int) -> InpaintingConfig:
    return InpaintingConfig(num_classes=num_classes, **networks.inpainter.model_dump())


def loss_weights(losses: InpainterLossWeights) -> LossWeights:
    return LossWeights(**losses.model_dump())


def optim_config(section: PretrainInpainterParams | FinetuneJointParams) -> OptimConfig:
    """The generators' and discriminators' Adam settings and the schedule of either inpainting stage."""
    return OptimConfig(lr=section.lr, d_lr_ratio=section.d_lr_ratio, betas=tuple(section.betas),
                       schedule=section.schedule)


def telea_fill(image: torch.Tensor, mask: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """OpenCV Telea inpainting of each image in the batch (CPU), same layout as the inputs."""
    out = []
    for img, m in zip(image.detach().cpu(), mask.detach().cpu(), strict=True):
        rgb = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        filled = cv2.inpaint(rgb, (m[0].numpy() > 0.5).astype(np.uint8), radius, cv2.INPAINT_TELEA)
        out.append(torch.from_numpy(filled).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(image.device)


class InpainterModule(L.LightningModule):
    def __init__(
        self,
        config: InpaintingConfig,
        weights: LossWeights,
        optim: OptimConfig,
        features: Literal["discriminator", "vgg19"] = "discriminator",
        vgg19_weights: str | None = None,
        image_inputs: Literal["predicted", "ground_truth"] = "predicted",
    ):
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters({"config": asdict(config), "weights": asdict(weights), "optim": asdict(optim),
                                   "features": features, "vgg19_weights": vgg19_weights, "image_inputs": image_inputs})
        self.config, self.w, self.optim_config = config, weights, optim
        self.nets = InpaintingNetworks(config)
        self.discs = InpaintingDiscriminators(config)
        self.vgg = load_vgg19(vgg19_weights) if features == "vgg19" else None
        self.image_inputs = image_inputs
        # the image discriminator is trained only when a loss reads it (the CPU default's L1-only image
        # inpainter leaves it idle: a third of the step's time)
        self.image_disc_used = weights.image_adv > 0 or (
            features == "discriminator" and (weights.image_perceptual > 0 or weights.image_style > 0))
        self._sample: dict | None = None

    # ----------------------------------------------------------------------------- helpers
    def _one_hot(self, seg: torch.Tensor) -> torch.Tensor:
        return F.one_hot(seg, self.config.num_classes).permute(0, 3, 1, 2).float()  # (B, K, H, W)

    def _generate(self, batch: dict, mask: torch.Tensor | None = None,
                  seg_in: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The three inpainters on the batch's hole (`mask`, default `M_G`) and segmentation of I (`seg_in`,
        default the batch's one-hot; joint training passes the segmenter's probabilities)."""
        image = batch["image"]
        mask = batch["mask"] if mask is None else mask
        seg_in = self._one_hot(batch["seg"]) if seg_in is None else seg_in
        keep = 1 - mask
        edges = self.nets.complete_edges(image, batch["edges"], mask)
        seg_logits = self.nets.complete_seg(seg_in, mask)
        if self.image_inputs == "ground_truth":
            edge_in, seg_map = batch["bg_edges"], self._one_hot(batch["bg_seg"])
        else:
            edge_in = (edges * mask + batch["edges"] * keep).detach()
            seg_map = (seg_logits.softmax(1) * mask + seg_in * keep).detach()
        out = self.nets.complete_image(image, edge_in, seg_map, mask)
        return {"edges": edges, "seg_logits": seg_logits, "seg_full": seg_logits.softmax(1) * mask + seg_in * keep,
                "image": out, "composite": out * mask + image * keep, "edge_in": edge_in}

    def _features(self, image: torch.Tensor, real: torch.Tensor) -> tuple[list, list, list, list]:
        """(fake perceptual, real perceptual, fake style, real style) activations."""
        if self.vgg is not None:
            return (self.vgg(image, PERCEPTUAL_LAYERS), self.vgg(real, PERCEPTUAL_LAYERS),
                    self.vgg(image, STYLE_LAYERS), self.vgg(real, STYLE_LAYERS))
        _, fake_f = self.discs.image(image)
        _, real_f = self.discs.image(real)
        real_f = [f.detach() for f in real_f]
        return fake_f, real_f, fake_f, real_f

    def _edge_pairs(self, fake: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge discriminator inputs (real, fake): [edges, gray of I_G], as EdgeConnect."""
        gray_bg = to_gray(batch["background"])
        return torch.cat([batch["bg_edges"], gray_bg], 1), torch.cat([fake["edges"], gray_bg], 1)

    def update_discriminators(self, fake: dict, batch: dict, optimizers: list) -> dict[str, torch.Tensor]:
        """Step 1 of a GAN update: each discriminator on real vs detached fake (optimizers: edge, seg, image)."""
        real_edge_in, fake_edge_in = self._edge_pairs(fake, batch)
        pairs = {"edge": (self.discs.edge, optimizers[0], real_edge_in, fake_edge_in),
                 "seg": (self.discs.seg, optimizers[1], self._one_hot(batch["bg_seg"]), fake["seg_full"])}
        if self.image_disc_used:
            pairs["image"] = (self.discs.image, optimizers[2], batch["background"], fake["image"])
        logs = {}
        for name, (disc, opt, real, fake_in) in pairs.items():
            d_loss = losses.hinge_d_loss(disc(real)[0], disc(fake_in.detach())[0])
            opt.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt.step()
            logs[f"train/d_{name}_loss"] = d_loss.detach()
        return logs

    def generator_losses(self, fake: dict, batch: dict, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 2: L_E, L_S, L_I (and their parts) against the updated discriminators. `mask` weights and
        normalizes the L1 / CE terms; pass a detached one when the mask is learned, or the loss would
        shrink just by growing the mask (the normalization counts its pixels)."""
        w = self.w
        real_edge_in, fake_edge_in = self._edge_pairs(fake, batch)
        fake_logits, fake_feats = self.discs.edge(fake_edge_in)
        _, real_feats = self.discs.edge(real_edge_in)
        loss_edge = w.edge_adv * losses.hinge_g_loss(fake_logits) + w.edge_fm * losses.feature_matching_loss(
            real_feats, fake_feats)
        seg_ce = losses.masked_cross_entropy(fake["seg_logits"], batch["bg_seg"], mask, 1.0, w.known_weight,
                                             w.normalize_by)
        loss_seg = w.seg_adv * losses.hinge_g_loss(self.discs.seg(fake["seg_full"])[0]) + w.seg_ce * seg_ce
        l1 = losses.masked_l1(fake["image"], batch["background"], mask, 1.0, w.known_weight, w.normalize_by)
        loss_image = w.image_l1 * l1
        if self.image_disc_used or self.vgg is not None:
            fake_p, real_p, fake_s, real_s = self._features(fake["image"], batch["background"])
            loss_image = (loss_image + w.image_adv * losses.hinge_g_loss(self.discs.image(fake["image"])[0])
                          + w.image_perceptual * losses.perceptual_loss(fake_p, real_p)
                          + w.image_style * losses.style_loss(fake_s, real_s))
        return {"loss_edge": loss_edge, "loss_seg": loss_seg, "loss_image": loss_image, "l1": l1, "seg_ce": seg_ce}

    def step_schedulers(self) -> None:
        """One step of every learning-rate schedule (none with schedule: constant)."""
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        g_edge, d_edge, g_seg, d_seg, g_image, d_image = self.optimizers()
        fake = self._generate(batch)
        # 1. discriminators first, on detached fakes; 2. generators against the updated discriminators
        d_logs = self.update_discriminators(fake, batch, [d_edge, d_seg, d_image])
        g = self.generator_losses(fake, batch, batch["mask"])
        for opt in (g_edge, g_seg, g_image):
            opt.zero_grad(set_to_none=True)
        self.manual_backward(g["loss_edge"] + g["loss_seg"] + g["loss_image"])
        for opt in (g_edge, g_seg, g_image):
            opt.step()
        for opt in (d_edge, d_seg, d_image):  # the generator pass left gradients in the discriminators
            opt.zero_grad(set_to_none=True)
        self.step_schedulers()
        with torch.no_grad():
            psnr_mask = psnr(fake["composite"], batch["background"], mask=batch["mask"]).nanmean()
        self.log_dict({**{f"train/{k}": v for k, v in g.items()}, "train/psnr_mask": psnr_mask, **d_logs},
                      on_step=True, on_epoch=True, batch_size=len(batch["mask"]), sync_dist=True)

    # ----------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        fake = self._generate(batch)
        target, mask = batch["background"], batch["mask"]
        telea = telea_fill(batch["image"], mask)
        edge_hits = ((fake["edges"] > 0.5).float() * batch["bg_edges"] * mask).sum()
        edge_total = (batch["bg_edges"] * mask).sum().clamp_min(1)
        metrics = {
            "val/psnr": psnr(fake["composite"], target).mean(),
            "val/ssim": ssim(fake["composite"], target).mean(),
            "val/psnr_mask": psnr(fake["composite"], target, mask=mask).nanmean(),
            "val/psnr_mask_telea": psnr(telea, target, mask=mask).nanmean(),
            "val/l1_mask": losses.masked_l1(fake["composite"], target, mask),
            "val/edge_recall": edge_hits / edge_total,
            "val/seg_acc_mask": ((fake["seg_logits"].argmax(1) == batch["bg_seg"]).float() * mask[:, 0]).sum()
            / mask.sum().clamp_min(1),
        }
        self.log_dict(metrics, on_epoch=True, batch_size=len(mask), sync_dist=True)
        if batch_idx == 0:
            self._sample = {"image": batch["image"][:8], "mask": mask[:8], "edges": fake["edge_in"][:8],
                            "composite": fake["composite"][:8], "telea": telea[:8], "target": target[:8]}

    def on_validation_epoch_end(self) -> None:
        if self._sample is None or self.trainer.sanity_checking:
            return
        s = self._sample
        rows = [s["image"], s["mask"], s["edges"], s["composite"], s["telea"], s["target"]]
        log_grid(self, grid_image(rows), f"samples/inpainter_epoch_{self.current_epoch:03d}.png")

    def networks_by_kind(self) -> dict[str, list[torch.nn.Module]]:
        """The module's networks by kind, for the memory-format setting (harness.to_memory_format)."""
        return {"inpainter": [self.nets, self.discs]}

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam per generator and per discriminator: [g_edge, d_edge, g_seg, d_seg, g_image, d_image]."""
        c = self.optim_config
        optimizers = []
        for gen, disc in ((self.nets.edge, self.discs.edge), (self.nets.seg, self.discs.seg),
                          (self.nets.image, self.discs.image)):
            optimizers.append(torch.optim.Adam(gen.parameters(), lr=c.lr, betas=c.betas))
            optimizers.append(torch.optim.Adam(disc.parameters(), lr=c.lr * c.d_lr_ratio, betas=c.betas))
        return optimizers

    def configure_optimizers(self):
        optimizers = self.build_optimizers()
        if self.optim_config.schedule == "constant":
            return optimizers
        # one update per batch; under manual optimization max_steps counts every optimizer's steps
        trainer = self.trainer
        total = (trainer.estimated_stepping_batches if trainer.max_steps == -1
                 else trainer.max_steps // len(optimizers))
        idle = optimizers[5] if not self.image_disc_used else None  # the image discriminator never steps
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(opt, CosineToZero(math.ceil(total)))
                            for opt in optimizers if opt is not idle]
