"""The segmentation network: a small U-Net giving per-pixel class logits, plus instance extraction.

The paper uses PanopticFPN; any differentiable segmenter works for the method, since the mask fed
to the inpainters only has to be differentiable with respect to the segmenter's output. A U-Net is
the cheapest one that trains from scratch on CPU; width and depth come from the config. Classes
are contiguous indices: 0 = unlabeled, 1..K the dataset's categories in id order (the mapping
lives in the checkpoint's JSON). Instances of thing classes are the connected components of the
argmax map (OpenCV), as the issue asks; that is a reasonable stand-in for a panoptic head on
scenes where same-class objects rarely touch.

Spatial sizes must be multiples of 2**depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SegmenterConfig:
    num_classes: int  # including class 0, "unlabeled"
    width: int = 32
    depth: int = 3


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class Segmenter(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, num_classes, H, W) logits."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        self.stem = _block(3, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(config.depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image - 0.5)
        skips = [x]
        for block in self.down:
            x = block(F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([up, skip], 1))
        return self.head(x)


def instances_from_labels(labels: np.ndarray, classes: list[int], min_area: int = 1) -> list[tuple[int, np.ndarray]]:
    """Connected components of `labels == c` for each class c: [(class, (H, W) bool mask)], largest first."""
    found = []
    for cls in classes:
        count, components = cv2.connectedComponents((labels == cls).astype(np.uint8), connectivity=8)
        for index in range(1, count):
            mask = components == index
            if mask.sum() >= min_area:
                found.append((cls, mask))
    return sorted(found, key=lambda item: -int(item[1].sum()))
