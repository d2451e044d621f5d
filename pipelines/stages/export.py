"""python -m pipelines.stages.export [--params params.yaml]

Stage `export`: the jointly trained segmenter and inpainters (`paths.joint/best.ckpt`) to ONNX, for
serving without PyTorch. Two graphs, both float32 NCHW with RGB in [0, 1]:

    segmenter.onnx   image (B, 3, S, S)                              -> probabilities (B, K, S, S)
                                                                        [, offsets (B, 2, S, S)]
    inpainter.onnx   image, edges (B, 1, S, S), probabilities, mask  -> fill (B, 3, S, S)

`S` is the working resolution (`networks.image_size`) and is fixed in the graphs: the smooth hole
fill's pyramid has one level per halving of the size, so the exported graph holds the levels of `S`.
The segmenter graph shrinks the image to its own resolution (`networks.segmenter.image_size`, area
averaging) and scales its maps back up to `S` (bilinear) inside, as the PyTorch model does.
The batch is dynamic. `offsets` (per pixel, dy and dx in pixels to its object's center) is an output only
when the segmenter has the offset head (`networks.segmenter.offsets`). The edges (Canny), the
choice of the instances and the composite stay outside the graphs, in the shared inference path
(`components.inference`).

Each graph passes `onnx.checker` (full check), then ONNX Runtime is compared with PyTorch on
`export.parity_pairs` test pairs (their true masks as the holes); the stage fails, and writes nothing,
when the largest absolute difference of either output exceeds `export.tolerance`. Writes
`paths.onnx/{segmenter,inpainter}.onnx` and `model.json` (classes, working resolution, input
conventions, parity, the joint model's validation metrics, params hash, git revision), and
`reports/export.json` (the parity figures, a DVC metric).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.data import DataLoader

from components.export_contract import (
    INPAINTER_FILE,
    INPAINTER_INPUTS,
    INPAINTER_OUTPUTS,
    MODEL_JSON,
    SEGMENTER_FILE,
    SEGMENTER_INPUTS,
    SEGMENTER_OUTPUTS,
)
from components.inference import edges_of
from components.inpainting import InpaintingNetworks
from components.segmenter import Segmenter
from pipelines.checkpoints import remover_from
from pipelines.common import atomic_dir, git_revision, params_hash, stage_main, write_json
from pipelines.data import PairsDataset, pairs_config
from pipelines.params import Params

log = logging.getLogger("export")
logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # the exporter's optimizer logs every rewrite at INFO
STAGE = "export"


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


class SegmenterProbabilities(nn.Module):
    """Class probabilities, and the offsets when the segmenter has the head."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter
        self.outputs = SEGMENTER_OUTPUTS if segmenter.offsets is not None else SEGMENTER_OUTPUTS[:1]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, offsets = self.segmenter.segment(image)
        return (logits.softmax(dim=1),) if offsets is None else (logits.softmax(dim=1), offsets)


class InpainterFill(nn.Module):
    """The three inpainters chained; returns the image inpainter's raw fill (the composite is the caller's)."""

    def __init__(self, inpainters: InpaintingNetworks):
        super().__init__()
        self.inpainters = inpainters

    def forward(self, image, edges, probabilities, mask) -> torch.Tensor:
        return self.inpainters(image, edges, probabilities, mask).image


def export_graph(module: nn.Module, example: tuple[torch.Tensor, ...], names: tuple[str, ...],
                 outputs: tuple[str, ...], path: Path, opset: int) -> None:
    """`module` to ONNX at `path` with a dynamic batch axis, then the full ONNX checker. The first input names
    the axis `batch`; the others' batch axes are left to the exporter (`Dim.AUTO`), which ties them to it (naming
    each input's axis `batch` works too, with one warning per extra input that the name is already taken)."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic = ({0: batch}, *({0: torch.export.Dim.AUTO} for _ in names[1:]))
    torch.onnx.export(module.eval(), example, str(path), input_names=list(names), output_names=list(outputs),
                      dynamic_shapes=dynamic, dynamo=True, opset_version=opset,
                      external_data=False, verbose=False)
    onnx.checker.check_model(str(path), full_check=True)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.no_grad()
def parity(segmenter: nn.Module, inpainter: nn.Module, sessions: dict[str, ort.InferenceSession], loader,
           canny_sigma: float) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch| of each output over the loader's pairs (true masks as holes)."""
    worst = {name: 0.0 for name in (*segmenter.outputs, *INPAINTER_OUTPUTS)}
    for batch in loader:
        image, mask = batch["image"], batch["mask"]
        segmented = segmenter(image)
        probabilities = segmented[0]
        edges = torch.from_numpy(edges_of(image.numpy(), canny_sigma))
        fill = inpainter(image, edges, probabilities, mask)
        onnx_segmented = sessions["segmenter"].run(None, {SEGMENTER_INPUTS[0]: image.numpy()})
        # the same inputs for both inpainters, so each graph is compared on its own
        feed = dict(zip(INPAINTER_INPUTS, (image, edges, probabilities, mask), strict=True))
        onnx_fill = sessions["inpainter"].run(None, {k: v.numpy() for k, v in feed.items()})[0]
        pairs = [*zip(segmenter.outputs, onnx_segmented, segmented, strict=True), (*INPAINTER_OUTPUTS, onnx_fill, fill)]
        for name, ours, theirs in pairs:
            worst[name] = max(worst[name], float(np.abs(ours - theirs.numpy()).max()))
    return worst


def run(params: Params) -> dict:
    p, size = params.export, params.networks.image_size
    checkpoint_path = Path(params.paths.joint) / "best.ckpt"
    remover = remover_from(checkpoint_path)
    joint_info = json.loads((checkpoint_path.parent / "joint.json").read_text())
    segmenter = SegmenterProbabilities(remover.backend.segmenter).eval()
    inpainter = InpainterFill(remover.backend.inpainters).eval()
    canny_sigma = remover.info.canny_sigma
    config = pairs_config(params.paths.pairs, size, canny_sigma, 0)[0]
    dataset = PairsDataset(config, "test", augment=False)
    count = min(p.parity_pairs, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=min(count, 25), num_workers=0)

    first = next(iter(loader))
    classes = segmenter.segmenter.config.num_classes
    example_image = first["image"][:2]
    example_edges = torch.from_numpy(edges_of(example_image.numpy(), canny_sigma))
    example = (example_image, example_edges, torch.full((2, classes, size, size), 1 / classes), first["mask"][:2])
    section = {"export": p.model_dump(mode="json"), "networks": params.networks.model_dump(mode="json")}
    with atomic_dir(Path(params.paths.onnx)) as out:
        export_graph(segmenter, (example_image,), SEGMENTER_INPUTS, segmenter.outputs, out / SEGMENTER_FILE, p.opset)
        export_graph(inpainter, example, INPAINTER_INPUTS, INPAINTER_OUTPUTS, out / INPAINTER_FILE, p.opset)
        sessions = {"segmenter": session(out / SEGMENTER_FILE), "inpainter": session(out / INPAINTER_FILE)}
        worst = parity(segmenter, inpainter, sessions, loader, canny_sigma)
        if max(worst.values()) > p.tolerance:
            raise ParityError(f"ONNX Runtime differs from PyTorch by {worst} (largest |difference| per output) "
                              f"on {count} test pairs, over export.tolerance = {p.tolerance}")
        shapes = {name: ["batch", channels, size, size] for name, channels in
                  (("image", 3), ("edges", 1), ("probabilities", classes), ("mask", 1), ("offsets", 2), ("fill", 3))}
        info = {
            "graphs": {
                SEGMENTER_FILE: {"inputs": {n: shapes[n] for n in SEGMENTER_INPUTS},
                                 "outputs": {n: shapes[n] for n in segmenter.outputs}},
                INPAINTER_FILE: {"inputs": {n: shapes[n] for n in INPAINTER_INPUTS},
                                 "outputs": {n: shapes[n] for n in INPAINTER_OUTPUTS}},
            },
            "image_size": size,
            "size_constraint": f"spatial size fixed at {size} x {size} (the working resolution); batch 1-1024",
            "normalization": "float32 NCHW, RGB in [0, 1] (no mean/std); mask 1 = fill; edges: Canny of the "
                             "uint8 gray image (components.masks.canny_edges) in {0, 1}",
            "canny_sigma": canny_sigma,
            "classes": joint_info["classes"], "target_classes": list(remover.info.default_targets),
            "opset": p.opset, "onnxruntime": ort.__version__,
            "parity": {"pairs": count, "tolerance": p.tolerance, "max_abs_diff": worst},
            "metrics": joint_info.get("metrics", {}),
            "source": str(checkpoint_path), "params_hash": params_hash(section), "git_revision": git_revision(),
        }
        write_json(out / MODEL_JSON, info)
    write_json(Path(params.paths.reports) / "export.json",
               {"parity_pairs": count, **{f"max_abs_diff_{k}": v for k, v in worst.items()}})
    log.info("export: %s (tolerance %s) on %d test pairs", worst, p.tolerance, count)
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
