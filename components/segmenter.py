"""The segmentation network: a small U-Net giving per-pixel class logits, plus instance extraction.

The paper uses PanopticFPN; any differentiable segmenter works for the method, since the mask fed
to the inpainters only has to be differentiable with respect to the segmenter's output. A U-Net is
the cheapest one that trains from scratch on CPU; width and depth come from the config. Classes
are contiguous indices: 0 = unlabeled, 1..K the dataset's categories in id order (the mapping
lives in the checkpoint's JSON). Instances of thing classes are the connected components of the
argmax map, split by the *offset head* (components.instances): with `offsets` the U-Net has a second
1x1 head giving, per pixel, the offset (dy, dx) in pixels to the center of the object it belongs to, so
two touching people, whose pixels vote for two centers, are two instances, not one component.

With `image_size` set, the network works at that resolution whatever the input's: a larger input is
shrunk to it (area averaging) and the logits and offsets are scaled back up to the input's size
(bilinear), so the joint model can segment at 64 px and inpaint at 128 px and every consumer of the
segmenter still gets maps of the image it passed. The working size must be a multiple of 2**depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.instances import offset_unit, split_instances


@dataclass(frozen=True)
class SegmenterConfig:
    num_classes: int  # including class 0, "unlabeled"
    width: int = 32
    depth: int = 3
    offsets: bool = False  # the offset head: per pixel, (dy, dx) to its object's center
    image_size: int | None = None  # working resolution (None: the input's own, which then must fit the depth)


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
    """(B, 3, H, W) RGB in [0, 1] -> (B, num_classes, H, W) logits (`forward`), and with the offset
    head also (B, 2, H, W) offsets in pixels of the input (`segment`), computed at `config.image_size`."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        self.stem = _block(3, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(config.depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)
        self.offsets = nn.Conv2d(widths[0], 2, 1) if config.offsets else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.segment(image)[0]

    def segment(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(class logits (B, K, H, W), offsets (B, 2, H, W) in px or None without the head)."""
        size, work = tuple(image.shape[-2:]), self.config.image_size
        resized = work is not None and size != (work, work)
        x = self.stem((F.interpolate(image, size=(work, work), mode="area") if resized else image) - 0.5)
        skips = [x]
        for block in self.down:
            x = block(F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([up, skip], 1))
        logits = self.head(x)
        votes = None if self.offsets is None else self.offsets(x)  # in units of offset_unit: any resolution's
        if resized:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            votes = None if votes is None else F.interpolate(votes, size=size, mode="bilinear", align_corners=False)
        return logits, None if votes is None else votes * offset_unit(size[-1])


def instances_from_labels(labels: np.ndarray, classes: list[int], min_area: int = 1,
                          offsets: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
    """Instances of each class c in `labels`: [(class, (H, W) bool mask)], largest first; the connected
    components of `labels == c`, split by the offset head's (2, H, W) `offsets` when given."""
    return split_instances(labels, classes, offsets, min_area=min_area)
