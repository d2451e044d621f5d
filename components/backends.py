"""The two engines that run the networks for inference: PyTorch modules or ONNX Runtime sessions.

Both take and return numpy float32 NCHW arrays at the working resolution, so everything around the
networks (components.inference) is one code path whatever the engine:

    segment(image (B, 3, S, S) RGB in [0, 1])    -> ((B, K, S, S) softmax, (B, 1, S, S) contact
                                                     probability, or None for a segmenter without the head)
    probabilities(image)                                                 -> the softmax alone
    fill(image, edges (B, 1, S, S), probabilities, mask (B, 1, S, S))    -> (B, 3, S, S) raw image inpainter output

The ONNX graphs are the ones stage `export` writes (segmenter.onnx, inpainter.onnx); its parity check
holds them to the PyTorch modules within `export.tolerance`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from components.inpainting import InpaintingNetworks
from components.segmenter import Segmenter


class Backend(Protocol):
    name: str

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def probabilities(self, image: np.ndarray) -> np.ndarray: ...

    def fill(self, image: np.ndarray, edges: np.ndarray, probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


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
        logits, contact = self.segmenter.segment(self._tensor(image))
        return logits.softmax(dim=1).cpu().numpy(), None if contact is None else contact.sigmoid().cpu().numpy()

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        return self.segment(image)[0]

    @torch.inference_mode()
    def fill(self, image: np.ndarray, edges: np.ndarray, probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inputs = (self._tensor(a) for a in (image, edges, probabilities, mask))
        return self.inpainters(*inputs).image.cpu().numpy()


class OnnxBackend:
    """ONNX Runtime sessions of the exported graphs (input names as stage `export` writes them)."""

    name = "onnx"

    def __init__(self, segmenter, inpainter):  # onnxruntime.InferenceSession each
        self.segmenter, self.inpainter = segmenter, inpainter

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.segmenter.run(None, {"image": np.ascontiguousarray(image, np.float32)})
        return outputs[0], outputs[1] if len(outputs) > 1 else None  # the graph's "contact" when it has the head

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        return self.segment(image)[0]

    def fill(self, image: np.ndarray, edges: np.ndarray, probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"image": image, "edges": edges, "probabilities": probabilities, "mask": mask}
        return self.inpainter.run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feed.items()})[0]
