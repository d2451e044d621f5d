"""The segmentation network: a small U-Net giving per-pixel class logits, plus instance extraction.

The paper uses PanopticFPN; any differentiable segmenter works for the method, since the mask fed
to the inpainters only has to be differentiable with respect to the segmenter's output. A U-Net is
the cheapest one that trains from scratch on CPU; width and depth come from the config. Classes
are contiguous indices: 0 = unlabeled, 1..K the dataset's categories in id order (the mapping
lives in the checkpoint's JSON). Instances of thing classes are the connected components of the
argmax map cut along the *contact head*'s band (components.instances): with `contact_band` > 0 the
U-Net has a second 1x1 head giving, per pixel, the logit of "on the band where two thing objects
touch", so two touching people are two instances, not one component.

Spatial sizes must be multiples of 2**depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.instances import split_instances


@dataclass(frozen=True)
class SegmenterConfig:
    num_classes: int  # including class 0, "unlabeled"
    width: int = 32
    depth: int = 3
    contact_band: int = 0  # px: the contact head marks pixels this close to a touching object; 0 = no head


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
    """(B, 3, H, W) RGB in [0, 1] -> (B, num_classes, H, W) logits (`forward`), and with the contact
    head also (B, 1, H, W) contact logits (`segment`)."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        self.stem = _block(3, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(config.depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)
        self.contact = nn.Conv2d(widths[0], 1, 1) if config.contact_band > 0 else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.segment(image)[0]

    def segment(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(class logits (B, K, H, W), contact logits (B, 1, H, W) or None without the head)."""
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
        return self.head(x), (self.contact(x) if self.contact is not None else None)


def instances_from_labels(labels: np.ndarray, classes: list[int], min_area: int = 1,
                          contact: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
    """Instances of each class c in `labels`: [(class, (H, W) bool mask)], largest first; the connected
    components of `labels == c`, cut along the contact probability map `contact` (H, W) when given."""
    return split_instances(labels, classes, contact, min_area=min_area)
