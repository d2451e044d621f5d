"""EdgeConnect-style generators and PatchGAN discriminators (Nazeri et al., 2019), sized by config.

One generator class serves all three inpainters of the method; only the channels and the output
head differ:

- edge inpainter: [masked gray, masked edges, mask] -> edge map, sigmoid (spectral norm, as EdgeConnect);
- segmentation inpainter: [masked one-hot segmentation, mask] -> class logits;
- image inpainter: [masked image, edges, segmentation probabilities, mask] -> RGB, (tanh(x) + 1) / 2
  (EdgeConnect), or `residual01`: sigmoid(logit(fill) + x), a learned correction of a smooth fill of
  the hole (components/inpainting.py says why), with the last convolution zero-initialized.

Structure as EdgeConnect: a 7x7 convolution, two stride-2 downsamplings, residual blocks with
dilated 3x3 convolutions, two stride-2 transposed convolutions, a 7x7 output convolution;
instance norm throughout. Spatial sizes must be multiples of 4 (the two downsamplings). The
discriminator is EdgeConnect's 70x70 PatchGAN (three stride-2 and two stride-1 4x4 convolutions)
returning its logits and every layer's activations, which the feature-matching, perceptual and
style losses use.

Widths, depths and dilation come from the configs, so the CPU default is narrow and the paper's
size (width 64, 8 blocks) is a params change. Conventions: images RGB in [0, 1], (B, C, H, W);
masks (B, 1, H, W), 1 = hole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn

# sigmoid: edge maps; tanh01: (tanh(x) + 1) / 2, EdgeConnect's image head; logits: segmentation;
# residual01: sigmoid(logit(base) + x), an image head that starts from a given fill `base` (see inpainting.py)
Head = Literal["sigmoid", "tanh01", "logits", "residual01"]
LOGIT_EPS = 1e-3  # base values are clamped to [eps, 1 - eps] before the logit


@dataclass(frozen=True)
class GeneratorConfig:
    in_channels: int
    out_channels: int
    head: Head
    width: int = 64  # channels after the first convolution; 4x that in the residual blocks
    residual_blocks: int = 8
    dilation: int = 2
    spectral_norm: bool = False


@dataclass(frozen=True)
class DiscriminatorConfig:
    in_channels: int
    width: int = 64
    spectral_norm: bool = True


def _conv(cfg_sn: bool, *args, **kwargs) -> nn.Module:
    conv = nn.Conv2d(*args, **kwargs)
    return sn(conv) if cfg_sn else conv


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, use_sn: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(dilation),
            _conv(use_sn, channels, channels, 3, dilation=dilation, bias=not use_sn),
            nn.InstanceNorm2d(channels, track_running_stats=False),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            _conv(use_sn, channels, channels, 3, bias=not use_sn),
            nn.InstanceNorm2d(channels, track_running_stats=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        w, use_sn = config.width, config.spectral_norm

        def up(cin: int, cout: int) -> nn.Module:
            conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
            return sn(conv) if use_sn else conv

        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3),
            _conv(use_sn, config.in_channels, w, 7),
            nn.InstanceNorm2d(w, track_running_stats=False),
            nn.ReLU(True),
            _conv(use_sn, w, 2 * w, 4, stride=2, padding=1),
            nn.InstanceNorm2d(2 * w, track_running_stats=False),
            nn.ReLU(True),
            _conv(use_sn, 2 * w, 4 * w, 4, stride=2, padding=1),
            nn.InstanceNorm2d(4 * w, track_running_stats=False),
            nn.ReLU(True),
        )
        blocks = [ResidualBlock(4 * w, config.dilation, use_sn) for _ in range(config.residual_blocks)]
        self.middle = nn.Sequential(*blocks)
        self.decoder = nn.Sequential(
            up(4 * w, 2 * w),
            nn.InstanceNorm2d(2 * w, track_running_stats=False),
            nn.ReLU(True),
            up(2 * w, w),
            nn.InstanceNorm2d(w, track_running_stats=False),
            nn.ReLU(True),
            nn.ReflectionPad2d(3),
            nn.Conv2d(w, config.out_channels, 7),
        )
        if config.head == "residual01":  # start as the identity on `base`: the correction is learned
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, H, W) -> (B, out_channels, H, W); `base` (B, out_channels, H, W) in [0, 1]
        is required by the residual01 head and ignored by the others."""
        out = self.decoder(self.middle(self.encoder(x)))
        if self.config.head == "sigmoid":
            return torch.sigmoid(out)
        if self.config.head == "tanh01":
            return (torch.tanh(out) + 1) / 2
        if self.config.head == "residual01":
            if base is None:
                raise ValueError("the residual01 head needs `base`, the image it corrects")
            return torch.sigmoid(torch.logit(base.clamp(LOGIT_EPS, 1 - LOGIT_EPS)) + out)
        return out


class Discriminator(nn.Module):
    """PatchGAN: (B, C, H, W) -> logits (B, 1, H/8 - 2, W/8 - 2) and the five layers' activations."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        w, use_sn = config.width, config.spectral_norm
        chans = [config.in_channels, w, 2 * w, 4 * w, 8 * w]
        self.layers = nn.ModuleList()
        for i in range(4):
            stride = 2 if i < 3 else 1
            self.layers.append(nn.Sequential(
                _conv(use_sn, chans[i], chans[i + 1], 4, stride=stride, padding=1, bias=not use_sn),
                nn.LeakyReLU(0.2, True),
            ))
        self.layers.append(_conv(use_sn, chans[4], 1, 4, stride=1, padding=1, bias=not use_sn))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return x, features


def edge_inpainter_config(width: int, blocks: int, dilation: int) -> GeneratorConfig:
    return GeneratorConfig(3, 1, "sigmoid", width, blocks, dilation, spectral_norm=True)


def seg_inpainter_config(num_classes: int, width: int, blocks: int, dilation: int) -> GeneratorConfig:
    return GeneratorConfig(num_classes + 1, num_classes, "logits", width, blocks, dilation)


def image_inpainter_config(num_classes: int, width: int, blocks: int, dilation: int,
                           head: Head = "tanh01") -> GeneratorConfig:
    return GeneratorConfig(3 + 1 + num_classes + 1, 3, head, width, blocks, dilation)
