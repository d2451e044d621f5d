"""VGG-19 feature extractor for EdgeConnect's perceptual and style losses, from a local weights file.

No torchvision here (there is no CPU build of it on this project's machines), so the 16
convolutions of VGG-19's `features` are declared directly, with the same module indices as
torchvision's `vgg19().features`, so a torchvision ImageNet state dict (keys `features.N.weight`,
or `N.weight` for a saved `features` module) loads as it is. Nothing is downloaded: the file must
exist locally. Inputs are RGB in [0, 1]; ImageNet normalization happens inside.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# torchvision's VGG-19 "E" configuration: channels, "M" = max-pool
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
_NAMES = [
    "relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu3_4",
    "relu4_1", "relu4_2", "relu4_3", "relu4_4", "relu5_1", "relu5_2", "relu5_3", "relu5_4",
]
PERCEPTUAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # EdgeConnect
STYLE_LAYERS = ("relu2_2", "relu3_4", "relu4_4", "relu5_2")  # EdgeConnect


class VGG19Features(nn.Module):
    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU(inplace=False)]
                cin = item
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, image: torch.Tensor, layers: tuple[str, ...]) -> list[torch.Tensor]:
        """Activations of the named ReLU layers, in the order asked."""
        x = (image - self.mean) / self.std
        found: dict[str, torch.Tensor] = {}
        relu_index = 0
        last = max(_NAMES.index(name) for name in layers)
        for module in self.features:
            x = module(x)
            if isinstance(module, nn.ReLU):
                found[_NAMES[relu_index]] = x
                if relu_index == last:
                    break
                relu_index += 1
        return [found[name] for name in layers]


def load_vgg19(path: str | Path) -> VGG19Features:
    """VGG-19 features with weights from a local file (a torchvision state dict); eval mode, frozen."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG-19 weights file not found: {path} (set in params as the VGG weights path; it must be a local "
            "torchvision vgg19 state dict, nothing is downloaded)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    model = VGG19Features()
    missing, unexpected = model.features.load_state_dict(features, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not a VGG-19 state dict: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model.eval()
