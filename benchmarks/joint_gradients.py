"""python benchmarks/joint_gradients.py [--params params.yaml] [--batches 8]

How hard does each term of L_SN = w_PS * L_PS + L_E + L_S + L_I + lambda_X * L_X pull on the segmenter
at the start of joint fine-tuning? For a few training batches of `finetune_joint` (pretrained
checkpoints loaded, the stage's own data and weights), the L2 norm of each weighted term's gradient
with respect to the segmenter's parameters, and its ratio to the norm of the unweighted L_PS gradient,
measured on the same batch. Adam rescales the summed gradient, so what matters is the mix: a term whose
gradient is 100x L_PS's decides where the segmenter goes. Needs `dvc repro pretrain_inpainter`
(models/segmenter, models/inpainter, data/pairs). Writes benchmarks/results/joint_gradients.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.params import load_params  # noqa: E402
from pipelines.stages.finetune_joint import build  # noqa: E402


def term_gradients(module, batch: dict) -> dict[str, float]:
    """The gradient norm on the segmenter of each weighted term of L_SN for one batch, from the joint
    training step's own forward pass (plus the unweighted L_PS)."""
    j = module.joint
    step = module.segment_and_inpaint(batch)
    g = module.generator_losses(step.fake, batch, step.mask.detach())
    terms = {"L_PS (weight 1)": step.loss_ps, "w_PS * L_PS": j.segmentation_weight * step.loss_ps,
             "L_E": g["loss_edge"], "L_S": g["loss_seg"], "L_I": g["loss_image"]}
    if j.mel_enabled:
        terms["lambda_X * L_X"] = j.mel_weight * step.loss_x
    parameters = list(module.segmenter.parameters())
    norms = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "joint_gradients.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    torch.manual_seed(params.seed)
    fit = build(params)
    module, data = fit.module, fit.data
    module.train()
    data.setup("fit")
    batches = iter(data.train_dataloader())
    per_batch = [term_gradients(module, next(batches)) for _ in range(args.batches)]
    base = "L_PS (weight 1)"
    rows = {}
    for name in per_batch[0]:
        ratios = [b[name] / b[base] for b in per_batch]
        rows[name] = {"grad_norm_median": statistics.median(b[name] for b in per_batch),
                      "ratio_to_L_PS_median": statistics.median(ratios), "ratio_min": min(ratios),
                      "ratio_max": max(ratios)}
        print(f"{name:>16}: |grad| {rows[name]['grad_norm_median']:9.4f}   x L_PS: median "
              f"{rows[name]['ratio_to_L_PS_median']:7.1f} (range {min(ratios):.1f}-{max(ratios):.1f})")
    result = {"batches": args.batches, "batch_size": params.finetune_joint.batch_size,
              "segmentation_weight": params.finetune_joint.segmentation_weight,
              "image_size": params.networks.image_size, "host": platform.node(), "terms": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
