"""LPIPS and FID from local weight files (nothing is downloaded; without the files they are skipped).

- **LPIPS** (Zhang et al., 2018), the VGG variant: torchvision's VGG-16 `features` (a local state
  dict, keys `features.N.*`) and the LPIPS package's linear heads (its `weights/v0.1/vgg.pth`, keys
  `lin{0..4}.model.1.weight`). Inputs RGB in [0, 1] -> [-1, 1] -> LPIPS's scaling layer; activations at
  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, unit-normalized over channels, squared difference,
  weighted by the 1x1 heads, averaged over space, summed over layers. Written here because the `lpips`
  package imports torchvision, which has no CPU build on this project's machines.
- **FID**: the Frechet distance between Gaussians fitted to Inception features (scipy's `sqrtm`, as
  pytorch-fid). The feature extractor is a TorchScript file called as `model(images, return_features=True)`
  on uint8 (B, 3, H, W) images, the convention of the Inception TorchScript used by StyleGAN2-ADA and
  clean-fid (`inception-2015-12-05.pt`), which returns 2048-d pool features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16().features
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS distance per image pair, (B,); inputs (B, 3, H, W) RGB in [0, 1]."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU(inplace=False)]
                cin = item
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def _taps(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = ((image * 2 - 1) - self.shift) / self.scale
        found = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in _TAPS:
                found.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return found

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(a), device=a.device)
        for lin, fa, fb in zip(self.lins, self._taps(a), self._taps(b), strict=True):
            total = total + lin((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips(vgg16_weights: str | Path, lpips_weights: str | Path) -> LPIPS:
    """LPIPS-VGG from a torchvision VGG-16 state dict and the LPIPS linear heads; eval mode, frozen."""
    for path, what in ((vgg16_weights, "VGG-16 (torchvision state dict)"), (lpips_weights, "LPIPS heads (vgg.pth)")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{what} weights file not found: {path} (nothing is downloaded)")
    model = LPIPS()
    vgg = torch.load(vgg16_weights, map_location="cpu", weights_only=True)
    features = {k.removeprefix("features."): v for k, v in vgg.items() if not k.startswith("classifier.")}
    missing, unexpected = model.features.load_state_dict(features, strict=False)
    if missing or unexpected:
        raise ValueError(f"{vgg16_weights} is not a VGG-16 state dict: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}")
    heads = torch.load(lpips_weights, map_location="cpu", weights_only=True)
    try:
        for k, lin in enumerate(model.lins):
            lin.weight.data.copy_(heads[f"lin{k}.model.1.weight"])
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{lpips_weights} is not an LPIPS VGG heads file ({err})") from None
    return model.eval()


def load_inception(path: str | Path) -> torch.jit.ScriptModule:
    """The FID feature extractor: a TorchScript file (see the module docstring)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"FID Inception TorchScript file not found: {path} (nothing is downloaded)")
    return torch.jit.load(str(path), map_location="cpu").eval()


@torch.no_grad()
def inception_features(model: torch.jit.ScriptModule, images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) RGB in [0, 1] -> (B, D) float64 features of the uint8 images."""
    as_uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return model(as_uint8, return_features=True).double().cpu().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():  # singular product: offset the diagonals (pytorch-fid does the same)
        offset = np.eye(len(sigma_a)) * 1e-6
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))
