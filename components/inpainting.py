"""The three inpainters chained as the method uses them: edges, then segmentation, then the image.

`InpaintingNetworks.forward` takes the image, its edge map and segmentation, and a hole mask, and
returns every intermediate: the completed edges `E_I`, the completed segmentation `S_I`, the raw
image output `I_I` and the composite `I_I * M + I * (1 - M)` shown to users. As in EdgeConnect,
holes are filled with white in the image and gray inputs (`I * (1 - M) + M`) and with zeros in the
edge and segmentation inputs. The mask enters only through products, so gradients flow back into
whatever produced it (the segmenter, in joint training).

`edge_hint` / `seg_hint` feed the image inpainter given maps instead of the predicted ones
(teacher forcing with the ground truth during pretraining, if params ask for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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


@dataclass(frozen=True)
class InpaintingSizes:
    num_classes: int  # segmentation classes, including 0 = unlabeled
    width: int = 64
    residual_blocks: int = 8
    dilation: int = 2
    discriminator_width: int = 64


@dataclass
class InpaintResult:
    edges: torch.Tensor  # (B, 1, H, W) in [0, 1], the edge inpainter's full output
    edges_full: torch.Tensor  # known edges outside the hole, predicted inside: E_I
    seg_logits: torch.Tensor  # (B, K, H, W)
    seg_full: torch.Tensor  # probabilities, known outside the hole, predicted inside: S_I
    image: torch.Tensor  # (B, 3, H, W) in [0, 1], raw output I_I
    composite: torch.Tensor  # I_I * M + I * (1 - M)


class InpaintingNetworks(nn.Module):
    def __init__(self, sizes: InpaintingSizes):
        super().__init__()
        self.sizes = sizes
        args = (sizes.width, sizes.residual_blocks, sizes.dilation)
        self.edge = Generator(edge_inpainter_config(*args))
        self.seg = Generator(seg_inpainter_config(sizes.num_classes, *args))
        self.image = Generator(image_inpainter_config(sizes.num_classes, *args))

    def complete_edges(self, image: torch.Tensor, edges: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Edge inpainter on [masked gray (holes white), masked edges, mask] -> (B, 1, H, W) in [0, 1]."""
        keep = 1 - mask
        return self.edge(torch.cat([to_gray(image) * keep + mask, edges * keep, mask], 1))

    def complete_seg(self, seg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Segmentation inpainter on [masked one-hot / probabilities, mask] -> (B, K, H, W) logits."""
        return self.seg(torch.cat([seg * (1 - mask), mask], 1))

    def complete_image(
        self, image: torch.Tensor, edges: torch.Tensor, seg: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Image inpainter on [masked image (holes white), edges, segmentation, mask] -> (B, 3, H, W)."""
        return self.image(torch.cat([image * (1 - mask) + mask, edges, seg, mask], 1))

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

    def __init__(self, sizes: InpaintingSizes):
        super().__init__()
        w = sizes.discriminator_width
        self.edge = Discriminator(DiscriminatorConfig(2, w))
        self.seg = Discriminator(DiscriminatorConfig(sizes.num_classes, w))
        self.image = Discriminator(DiscriminatorConfig(3, w))
