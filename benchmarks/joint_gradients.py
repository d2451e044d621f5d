"""python benchmarks/joint_gradients.py [--params params.yaml] [--batches 8] [--set finetune_joint.KEY=VALUE ...]

How hard does each term of L_SN = w_PS * L_PS + L_E + L_S + L_I + w_C * L_C + lambda_X * L_X pull on the segmenter
at the start of joint fine-tuning? For a few training batches of `finetune_joint` (pretrained
checkpoints loaded, the stage's own data and weights), the L2 norm of each weighted term's gradient
with respect to the segmenter's parameters, and its ratio to the norm of the unweighted L_PS gradient,
measured on the same batch, and the cosine between each term's gradient and L_PS's: Adam rescales the
summed gradient, so what matters is the mix: a term whose gradient is 100x L_PS's decides where the
segmenter goes, and a cosine near 0 or below says it goes somewhere L_PS does not lead. `--set` changes
a param of the run (YAML values), e.g. `--set finetune_joint.losses.known_weight=1`. Needs `dvc repro
pretrain_inpainter` (models/segmenter, models/inpainter, data/pairs). Writes
benchmarks/results/joint_gradients.json (`--label NAME`: under that key, the file's other keys kept).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.params import parse_params  # noqa: E402
from pipelines.stages.finetune_joint import build  # noqa: E402


def term_gradients(module, batch: dict) -> dict[str, float]:
    """The gradient norm on the segmenter of each weighted term of L_SN for one batch, from the joint
    training step's own forward pass (plus the unweighted L_PS)."""
    j = module.joint
    step = module.segment_and_inpaint(batch)
    g = module.generator_losses(step.fake, batch, step.mask.detach())
    terms = {"L_PS (weight 1)": step.loss_ps, "w_PS * L_PS": j.segmentation_weight * step.loss_ps,
             "L_E": g["loss_edge"], "L_S": g["loss_seg"], "L_S: CE part": module.w.seg_ce * g["seg_ce"],
             "L_S: GAN part": g["loss_seg"] - module.w.seg_ce * g["seg_ce"], "L_I": g["loss_image"]}
    if j.mel_enabled:
        terms["lambda_X * L_X"] = j.mel_weight * step.loss_x
    if j.composite_weight:
        terms["w_C * L_C"] = j.composite_weight * step.loss_c
    parameters = list(module.segmenter.parameters())
    flat = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        flat[name] = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                for g, p in zip(grads, parameters, strict=True)])
    return flat


def coherence(vectors: list[torch.Tensor]) -> float:
    """Mean cosine between the gradients of different batches: near 1 a term pulls the same way on every
    batch (a signal that adds up over updates), near 0 each batch pulls somewhere else (noise)."""
    cosines = [float(torch.nn.functional.cosine_similarity(a, b, dim=0))
               for i, a in enumerate(vectors) for b in vectors[i + 1:]]
    return statistics.mean(cosines)


def overridden(params_file: str, settings: list[str]):
    """params.yaml with `a.b.c=value` settings applied (values parsed as YAML), validated by the schema."""
    raw = yaml.safe_load(Path(params_file).read_text())
    for setting in settings:
        key, _, value = setting.partition("=")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"--set {setting}: {key} is not a param")
        node[leaf] = yaml.safe_load(value)
    return parse_params(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "joint_gradients.json"))
    parser.add_argument("--label", default=None, help="store the result under this key of --out (others kept)")
    args = parser.parse_args()
    params = overridden(args.params, args.settings)
    torch.manual_seed(params.seed)
    fit = build(params)
    module, data = fit.module, fit.data
    module.train()
    data.setup("fit")
    batches = iter(data.train_dataloader())
    grads = [term_gradients(module, next(batches)) for _ in range(args.batches)]
    base = "L_PS (weight 1)"
    per_batch = [{name: (float(g.norm()), float(torch.nn.functional.cosine_similarity(g, b[base], dim=0)))
                  for name, g in b.items()} for b in grads]
    rows = {}
    for name in per_batch[0]:
        ratios = [b[name][0] / b[base][0] for b in per_batch]
        cosines = [b[name][1] for b in per_batch]
        mean_gradient = torch.stack([b[name] for b in grads]).mean(dim=0)
        rows[name] = {"batch_coherence": coherence([b[name] for b in grads]),
                      "mean_gradient_norm": float(mean_gradient.norm()),
                      "grad_norm_median": statistics.median(b[name][0] for b in per_batch),
                      "ratio_to_L_PS_median": statistics.median(ratios), "ratio_min": min(ratios),
                      "ratio_max": max(ratios), "cosine_to_L_PS_median": statistics.median(cosines),
                      "cosine_min": min(cosines), "cosine_max": max(cosines)}
        print(f"{name:>16}: |grad| {rows[name]['grad_norm_median']:9.4f}   x L_PS: median "
              f"{rows[name]['ratio_to_L_PS_median']:7.1f} (range {min(ratios):.1f}-{max(ratios):.1f})   cosine "
              f"{statistics.median(cosines):+.3f} ({min(cosines):+.2f} to {max(cosines):+.2f})   batch coherence "
              f"{rows[name]['batch_coherence']:+.3f}   |mean over batches| {rows[name]['mean_gradient_norm']:.4f}")
    result = {"batches": args.batches, "batch_size": params.finetune_joint.batch_size,
              "segmentation_weight": params.finetune_joint.segmentation_weight, "settings": args.settings,
              "image_size": params.networks.image_size, "host": platform.node(), "terms": rows}
    out = Path(args.out)
    if args.label:
        stored = json.loads(out.read_text()) if out.exists() else {}
        result = {**stored, args.label: result}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
