"""Object removal at the networks' working resolution: the steps that evaluation, the model tests and
(later) serving share, so their pre- and post-processing cannot drift apart.

    1. segment        the segmenter's class probabilities
    2. select         the target: instances (connected components) of the target classes, all of them or
                      those a user picked; or a mask given by the user
    3. expand         optional dilation (or erosion) of the mask by whole pixels
    4. edges          Canny of the input, as the training data computes it (uint8 gray, same sigma)
    5. inpaint        the three inpainters on the mask
    6. composite      the fill inside the mask, the input exactly outside it

Images are RGB float in [0, 1], (B, 3, H, W), at the working resolution; masks (B, 1, H, W), 1 = remove.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from components.inpainting import InpaintingNetworks
from components.masks import canny_edges, dilate_mask, erode_mask, to_gray
from components.segmenter import Segmenter, instances_from_labels


@dataclass(frozen=True)
class RemovalConfig:
    target_classes: tuple[int, ...]  # contiguous class indices a "remove the objects" request means
    canny_sigma: float = 1.0
    min_instance_ratio: float = 0.005  # share of the image; smaller components are noise, not objects
    # (0.5 %: the synthesized pairs' smallest objects, synthesize.min_mask_ratio)


@dataclass
class Removal:
    mask: torch.Tensor  # (B, 1, H, W) float {0, 1}: what was filled
    composite: torch.Tensor  # (B, 3, H, W) the result
    probabilities: torch.Tensor  # (B, K, H, W) the segmenter's output


def edges_of(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Canny edges (B, 1, H, W) of each image, computed as the training data does: on the uint8 image."""
    out = []
    for img in image.detach().cpu():
        rgb = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        out.append(torch.from_numpy(canny_edges(to_gray(np.ascontiguousarray(rgb)), sigma)))
    return torch.stack(out)[:, None].to(image)


def class_instances_mask(
    probabilities: torch.Tensor, target_classes: tuple[int, ...], min_area: int
) -> torch.Tensor:
    """(B, 1, H, W): every instance of the target classes at least `min_area` pixels large."""
    labels = probabilities.argmax(dim=1).cpu().numpy()
    masks = []
    for label_map in labels:
        union = np.zeros(label_map.shape, bool)
        for _, component in instances_from_labels(label_map, list(target_classes), min_area=min_area):
            union |= component
        masks.append(union)
    return torch.from_numpy(np.stack(masks)).to(probabilities)[:, None]


def expand(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (pixels < 0) each mask with a disk."""
    if pixels == 0:
        return mask
    out = [dilate_mask(m, pixels) if pixels > 0 else erode_mask(m, -pixels) for m in mask[:, 0].cpu().numpy() > 0.5]
    return torch.from_numpy(np.stack(out)).to(mask)[:, None]


class Remover(nn.Module):
    """A segmenter and the inpainters it feeds."""

    def __init__(self, segmenter: Segmenter, inpainters: InpaintingNetworks, config: RemovalConfig):
        super().__init__()
        self.segmenter, self.inpainters, self.config = segmenter, inpainters, config

    @torch.no_grad()
    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None, expand_px: int = 0) -> Removal:
        """Remove every target-class object from `image` (B, 3, H, W), or fill the given `mask`."""
        # 1. segment
        probabilities = self.segmenter(image).softmax(dim=1)
        # 2. select
        if mask is None:
            min_area = max(1, round(self.config.min_instance_ratio * image.shape[-2] * image.shape[-1]))
            mask = class_instances_mask(probabilities, self.config.target_classes, min_area)
        # 3. expand
        mask = expand(mask, expand_px)
        # 4. edges
        edges = edges_of(image, self.config.canny_sigma)
        # 5. inpaint, 6. composite (exactly the input outside the mask)
        result = self.inpainters(image, edges, probabilities, mask)
        composite = torch.where(mask > 0.5, result.image, image)
        return Removal(mask, composite, probabilities)
