"""The networks on PyTorch, behind `components.backends.Backend`: the engine of evaluation, the parity check of
stage `export` and `--backend torch`. Kept apart from components/backends.py so that serving on ONNX Runtime
never imports torch."""

from __future__ import annotations

import numpy as np
import torch

from components.inpainting import InpaintingNetworks
from components.segmenter import Segmenter


class TorchBackend:
    """The PyTorch modules (eval mode, no gradients) on `device`."""

    name = "torch"

    def __init__(self, segmenter: Segmenter, inpainters: InpaintingNetworks, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.segmenter = segmenter.eval().to(self.device)
        self.inpainters = inpainters.eval().to(self.device)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(self.device)

    @torch.inference_mode()
    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, offsets = self.segmenter.segment(self._tensor(image))
        return logits.softmax(dim=1).cpu().numpy(), None if offsets is None else offsets.float().cpu().numpy()

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        return self.segment(image)[0]

    @torch.inference_mode()
    def fill(self, image: np.ndarray, edges: np.ndarray, probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inputs = (self._tensor(a) for a in (image, edges, probabilities, mask))
        return self.inpainters(*inputs).image.cpu().numpy()
