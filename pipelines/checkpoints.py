"""Networks out of the training stages' Lightning checkpoints, for the stages that use them.

A checkpoint holds its networks' configs in `hyper_parameters` (saved by the modules), so the
networks are rebuilt from the file alone: the segmenter from `pretrain_segmenter` (state `net.*`,
config `config`) or `finetune_joint` (`segmenter.*`, `segmenter`), the inpainters from
`pretrain_inpainter` or `finetune_joint` (`nets.*`, `config`). Loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from components.inference import InferenceConfig, ObjectRemover, model_info
from components.inpainting import InpaintingConfig, InpaintingNetworks
from components.segmenter import Segmenter, SegmenterConfig
from components.torch_backend import TorchBackend


def read_checkpoint(path: str | Path, stage: str) -> dict[str, Any]:
    """The checkpoint dict at `path`; a missing file names the stage that makes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (run `dvc repro {stage}`)")
    return torch.load(path, map_location="cpu", weights_only=True)


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def segmenter_from(checkpoint: dict[str, Any]) -> Segmenter:
    """The segmenter of a pretrain_segmenter or finetune_joint checkpoint, eval mode."""
    hparams = checkpoint["hyper_parameters"]
    joint = "segmenter" in hparams
    net = Segmenter(SegmenterConfig(**hparams["segmenter" if joint else "config"]))
    net.load_state_dict(sub_state(checkpoint["state_dict"], "segmenter." if joint else "net."))
    return net.eval()


def inpainters_from(checkpoint: dict[str, Any]) -> InpaintingNetworks:
    """The three inpainters of a pretrain_inpainter or finetune_joint checkpoint, eval mode."""
    nets = InpaintingNetworks(InpaintingConfig(**checkpoint["hyper_parameters"]["config"]))
    nets.load_state_dict(sub_state(checkpoint["state_dict"], "nets."))
    return nets.eval()


def remover_from(checkpoint_path: str | Path, stage: str = "finetune_joint",
                 config: InferenceConfig | None = None) -> ObjectRemover:
    """The joint model of a finetune_joint checkpoint as an `ObjectRemover` on PyTorch, with the classes,
    target classes and Canny sigma from the JSON the stage wrote beside it."""
    path = Path(checkpoint_path)
    checkpoint = read_checkpoint(path, stage)
    for candidate in sorted(path.parent.glob("*.json")):
        info = json.loads(candidate.read_text())
        if "target_classes" in info:
            break
    else:
        raise FileNotFoundError(f"no stage JSON with target_classes beside {path} (the stage writes it)")
    backend = TorchBackend(segmenter_from(checkpoint), inpainters_from(checkpoint))
    return ObjectRemover(backend, model_info(info), config or InferenceConfig())
