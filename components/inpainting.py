"""The three inpainters chained as the method uses them: edges, then segmentation, then the image.

`InpaintingNetworks.forward` takes the image, its edge map and segmentation, and a hole mask, and
returns every intermediate: the completed edges `E_I`, the completed segmentation `S_I`, the raw
image output `I_I` and the composite `I_I * M + I * (1 - M)` shown to users. As in EdgeConnect,
holes are filled with white in the image and gray inputs (`I * (1 - M) + M`) and with zeros in the
edge and segmentation inputs. The mask enters only through products, so gradients flow back into
whatever produced it (the segmenter, in joint training).

`edge_hint` / `seg_hint` feed the image inpainter given maps instead of the predicted ones
(teacher forcing with the ground truth during pretraining, if params ask for it).

`hole_fill: smooth` departs from EdgeConnect on purpose: holes in the gray, segmentation and image
inputs are pre-filled by `smooth_fill` (a push-pull average of the known pixels around them) instead of
white / zeros, and with `image_head: residual01` the image inpainter learns a correction of that fill
(`sigmoid(logit(fill) + x)`, starting as the identity). At the CPU default (64 px, width 16) a generator
without skip connections spends most of a short schedule relearning how to carry the colours around
the hole through its 4x-downsampled bottleneck; the smooth fill alone already scores 19.2 dB inside the
true masks (OpenCV Telea 19.8, white holes 5.1), so the network only has to add structure and texture.
Both are params; `white` + `tanh01` is EdgeConnect's original.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from components.inpainters import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    edge_inpainter_config,
    image_inpainter_config,
    seg_inpainter_config,
)
from components.masks import to_gray

HoleFill = Literal["white", "smooth"]
ImageHead = Literal["tanh01", "residual01"]
PUSH_PULL_GAIN = 8.0  # a coarse level's own estimate counts fully once 1/8 of its footprint is known


def smooth_fill(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fill the hole of `values` (B, C, H, W) by push-pull (Gortler et al.'s pull-push, as in normalized
    convolution): average the known pixels (weights 1 - mask) down a pyramid of 2x2 means to 1x1, then
    back up, each level keeping its own weighted mean where it has known pixels and taking the
    upsampled coarser fill where it has few. Known pixels are returned unchanged; any size works; the
    result is differentiable in `values` and in a soft `mask` (B, 1, H, W), 1 = hole."""
    known = 1 - mask
    nums, dens = [values * known], [known.expand_as(values[:, :1])]
    while max(nums[-1].shape[-2:]) > 1:
        nums.append(F.avg_pool2d(nums[-1], 2, ceil_mode=True))
        dens.append(F.avg_pool2d(dens[-1], 2, ceil_mode=True))
    fill = nums[-1] / dens[-1].clamp_min(eps)  # (B, C, 1, 1): the mean of the known pixels
    for num, den in zip(reversed(nums[:-1]), reversed(dens[:-1]), strict=True):
        coarse = F.interpolate(fill, size=num.shape[-2:], mode="bilinear", align_corners=False)
        confidence = (den * PUSH_PULL_GAIN).clamp(max=1.0)
        fill = num / den.clamp_min(eps) * confidence + coarse * (1 - confidence)
    return values * known + fill * mask


@dataclass(frozen=True)
class InpaintingConfig:
    num_classes: int  # segmentation classes, including 0 = unlabeled
    width: int = 64
    residual_blocks: int = 8
    dilation: int = 2
    discriminator_width: int = 64
    hole_fill: HoleFill = "white"  # what the generators see in the hole (EdgeConnect: white / zeros)
    image_head: ImageHead = "tanh01"  # residual01 needs hole_fill smooth to start from a useful fill


@dataclass
class InpaintResult:
    edges: torch.Tensor  # (B, 1, H, W) in [0, 1], the edge inpainter's full output
    edges_full: torch.Tensor  # known edges outside the hole, predicted inside: E_I
    seg_logits: torch.Tensor  # (B, K, H, W)
    seg_full: torch.Tensor  # probabilities, known outside the hole, predicted inside: S_I
    image: torch.Tensor  # (B, 3, H, W) in [0, 1], raw output I_I
    composite: torch.Tensor  # I_I * M + I * (1 - M)


class InpaintingNetworks(nn.Module):
    def __init__(self, config: InpaintingConfig):
        super().__init__()
        self.config = config
        args = (config.width, config.residual_blocks, config.dilation)
        self.edge = Generator(edge_inpainter_config(*args))
        self.seg = Generator(seg_inpainter_config(config.num_classes, *args))
        self.image = Generator(image_inpainter_config(config.num_classes, *args, head=config.image_head))

    def holes(self, values: torch.Tensor, mask: torch.Tensor, white: float) -> torch.Tensor:
        """`values` with the hole filled as the config says: smooth_fill, or the constant `white`."""
        if self.config.hole_fill == "smooth":
            return smooth_fill(values, mask)
        return values * (1 - mask) + white * mask

    def complete_edges(self, image: torch.Tensor, edges: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Edge inpainter on [gray with holes filled, masked edges, mask] -> (B, 1, H, W) in [0, 1]."""
        return self.edge(torch.cat([self.holes(to_gray(image), mask, 1.0), edges * (1 - mask), mask], 1))

    def complete_seg(self, seg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Segmentation inpainter on [one-hot / probabilities with holes filled, mask] -> (B, K, H, W) logits."""
        return self.seg(torch.cat([self.holes(seg, mask, 0.0), mask], 1))

    def complete_image(
        self, image: torch.Tensor, edges: torch.Tensor, seg: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Image inpainter on [image with holes filled, edges, segmentation, mask] -> (B, 3, H, W)."""
        filled = self.holes(image, mask, 1.0)
        return self.image(torch.cat([filled, edges, seg, mask], 1), base=filled)

    def forward(
        self,
        image: torch.Tensor,  # (B, 3, H, W) the photo, object still in it
        edges: torch.Tensor,  # (B, 1, H, W) its edge map (only the known part is used)
        seg: torch.Tensor,  # (B, K, H, W) its segmentation as probabilities / one-hot
        mask: torch.Tensor,  # (B, 1, H, W) 1 = hole
        edge_hint: torch.Tensor | None = None,
        seg_hint: torch.Tensor | None = None,
    ) -> InpaintResult:
        keep = 1 - mask
        # 1. edges, known outside the hole
        edges_pred = self.complete_edges(image, edges, mask)
        edges_full = edges_pred * mask + edges * keep
        # 2. segmentation, known outside the hole
        seg_logits = self.complete_seg(seg, mask)
        seg_full = seg_logits.softmax(1) * mask + seg * keep
        # 3. image from both, then the composite
        edge_in = edges_full if edge_hint is None else edge_hint
        seg_in = seg_full if seg_hint is None else seg_hint
        out = self.complete_image(image, edge_in, seg_in, mask)
        composite = out * mask + image * keep
        return InpaintResult(edges_pred, edges_full, seg_logits, seg_full, out, composite)


class InpaintingDiscriminators(nn.Module):
    """PatchGANs: edges see [edges, gray] (as EdgeConnect), segmentation sees probabilities, image sees RGB."""

    def __init__(self, config: InpaintingConfig):
        super().__init__()
        w = config.discriminator_width
        self.edge = Discriminator(DiscriminatorConfig(2, w))
        self.seg = Discriminator(DiscriminatorConfig(config.num_classes, w))
        self.image = Discriminator(DiscriminatorConfig(3, w))
