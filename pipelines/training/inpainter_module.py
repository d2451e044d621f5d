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

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from components import losses
from components.inpainting import InpaintingDiscriminators, InpaintingNetworks, InpaintingSizes
from components.masks import to_gray
from components.metrics import psnr, ssim
from components.vgg import PERCEPTUAL_LAYERS, STYLE_LAYERS, load_vgg19
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


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    d_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.0, 0.9)


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
        sizes: InpaintingSizes,
        weights: LossWeights,
        optim: OptimConfig,
        features: Literal["discriminator", "vgg19"] = "discriminator",
        vgg19_weights: str | None = None,
        image_inputs: Literal["predicted", "ground_truth"] = "predicted",
    ):
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters({"sizes": asdict(sizes), "weights": asdict(weights), "optim": asdict(optim),
                                   "features": features, "vgg19_weights": vgg19_weights, "image_inputs": image_inputs})
        self.sizes, self.w, self.optim_config = sizes, weights, optim
        self.nets = InpaintingNetworks(sizes)
        self.discs = InpaintingDiscriminators(sizes)
        self.vgg = load_vgg19(vgg19_weights) if features == "vgg19" else None
        self.image_inputs = image_inputs
        self._sample: dict | None = None

    # ----------------------------------------------------------------------------- helpers
    def _one_hot(self, seg: torch.Tensor) -> torch.Tensor:
        return F.one_hot(seg, self.sizes.num_classes).permute(0, 3, 1, 2).float()  # (B, K, H, W)

    def _generate(self, batch: dict) -> dict[str, torch.Tensor]:
        image, mask = batch["image"], batch["mask"]
        keep = 1 - mask
        seg_in = self._one_hot(batch["seg"])
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

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        g_edge, d_edge, g_seg, d_seg, g_image, d_image = self.optimizers()
        fake = self._generate(batch)
        gray_bg = to_gray(batch["background"])
        real_edge_in = torch.cat([batch["bg_edges"], gray_bg], 1)
        fake_edge_in = torch.cat([fake["edges"], gray_bg], 1)
        real_seg = self._one_hot(batch["bg_seg"])
        pairs = [(self.discs.edge, d_edge, real_edge_in, fake_edge_in),
                 (self.discs.seg, d_seg, real_seg, fake["seg_full"]),
                 (self.discs.image, d_image, batch["background"], fake["image"])]
        # 1. discriminators first, on detached fakes
        d_logs = {}
        for name, (disc, opt, real, fake_in) in zip(("edge", "seg", "image"), pairs, strict=True):
            d_loss = losses.hinge_d_loss(disc(real)[0], disc(fake_in.detach())[0])
            opt.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt.step()
            d_logs[f"train/d_{name}_loss"] = d_loss.detach()
        # 2. generators against the updated discriminators
        w, mask = self.w, batch["mask"]
        fake_logits, fake_feats = self.discs.edge(fake_edge_in)
        _, real_feats = self.discs.edge(real_edge_in)
        loss_edge = w.edge_adv * losses.hinge_g_loss(fake_logits) + w.edge_fm * losses.feature_matching_loss(
            real_feats, fake_feats)
        seg_ce = losses.masked_cross_entropy(fake["seg_logits"], batch["bg_seg"], mask, 1.0, w.known_weight)
        loss_seg = w.seg_adv * losses.hinge_g_loss(self.discs.seg(fake["seg_full"])[0]) + w.seg_ce * seg_ce
        fake_p, real_p, fake_s, real_s = self._features(fake["image"], batch["background"])
        l1 = losses.masked_l1(fake["image"], batch["background"], mask, 1.0, w.known_weight)
        loss_image = (w.image_adv * losses.hinge_g_loss(self.discs.image(fake["image"])[0])
                      + w.image_perceptual * losses.perceptual_loss(fake_p, real_p)
                      + w.image_style * losses.style_loss(fake_s, real_s) + w.image_l1 * l1)
        for opt in (g_edge, g_seg, g_image):
            opt.zero_grad(set_to_none=True)
        self.manual_backward(loss_edge + loss_seg + loss_image)
        for opt in (g_edge, g_seg, g_image):
            opt.step()
        for opt in (d_edge, d_seg, d_image):  # the generator pass left gradients in the discriminators
            opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            psnr_mask = psnr(fake["composite"], batch["background"], mask=mask).nanmean()
        self.log_dict({"train/loss_edge": loss_edge, "train/loss_seg": loss_seg, "train/loss_image": loss_image,
                       "train/l1": l1, "train/seg_ce": seg_ce, "train/psnr_mask": psnr_mask, **d_logs},
                      on_step=True, on_epoch=True, batch_size=len(mask), sync_dist=True)

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

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        c = self.optim_config
        optimizers = []
        for gen, disc in ((self.nets.edge, self.discs.edge), (self.nets.seg, self.discs.seg),
                          (self.nets.image, self.discs.image)):
            optimizers.append(torch.optim.Adam(gen.parameters(), lr=c.lr, betas=c.betas))
            optimizers.append(torch.optim.Adam(disc.parameters(), lr=c.lr * c.d_lr_ratio, betas=c.betas))
        return optimizers
