"""python benchmarks/error_sources.py [--out FILE]

Where does a method's whole-image error come from? On the test split, with the workspace's models (`dvc
repro evaluate` first), each segmenter method's composite error (squared, summed over the pixels of one
image and averaged over the pairs, [0, 1] units) split by where the pixel lies:

    left       on M_G, outside the method's mask: object pixels left behind
    neighbours in the mask, off M_G, on a target-class pixel of I_G: the people it touches, removed too
    over       in the mask, off M_G, elsewhere: the mask bleeding into the background
    inside     in the mask and on M_G: the fill itself

against the oracle (the pretrained inpainters on M_G, whose error is all "inside"), with the pixel counts,
and the whole-image PSNR of two bounds: `within_m_g`, the method's own target-class pixels inside M_G
alone (a perfect instance split, no bleeding), and the oracle. The selection is evaluate's (the instance
overlapping M_G most).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = ("left", "neighbours", "over", "inside")


def workspace(params_file: str):
    """What the evaluate stage scores, from the workspace: (params, its models (stage evaluate's
    load_models), a loader of the evaluation split's pairs in batches of 50 with their buckets, the target
    classes, the Canny sigma)."""
    from torch.utils.data import DataLoader

    from pipelines.data import WithBuckets, pairs_config
    from pipelines.params import load_params
    from pipelines.stages.evaluate import load_models

    params = load_params(params_file)
    sigma = params.pretrain_inpainter.canny_sigma
    config, _, targets = pairs_config(params.paths.pairs, params.networks.image_size, sigma, 0)
    loader = DataLoader(WithBuckets(config, params.evaluate.split, augment=False), batch_size=50)
    return params, load_models(params), loader, targets, sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "error_sources.json")
    args = parser.parse_args()

    import torch

    from components.metrics import psnr
    from components.selection import evaluation_mask
    from pipelines import evaluation

    params, models, loader, targets, sigma = workspace(args.params)
    sums: dict[str, dict[str, float]] = {}
    bounds: dict[str, list[float]] = {}
    pairs = 0
    with torch.no_grad():
        for batch in loader:
            image, target, true = batch["image"], batch["background"], batch["mask"] > 0.5
            neighbour = torch.isin(batch["bg_seg"], torch.tensor(targets))[:, None]
            probs = None
            for name in evaluation.SEGMENTERS:
                if name not in models:
                    continue
                probs, offsets = evaluation.segment(models[name], image)
                mask = evaluation_mask(probs, targets, true.float(), offsets) > 0.5
                composite = evaluation.inpaint(models[name], image, mask.float(), probs, sigma)
                error = ((composite - target) ** 2).sum(1, True)
                where = {"left": true & ~mask, "neighbours": mask & ~true & neighbour,
                         "over": mask & ~true & ~neighbour, "inside": mask & true}
                row = sums.setdefault(name, {})
                for part, region in where.items():
                    row[part] = row.get(part, 0.0) + float((error * region).sum())
                    row[f"{part}_px"] = row.get(f"{part}_px", 0.0) + float(region.sum())
                own = torch.isin(probs.argmax(1, keepdim=True), torch.tensor(targets)) & true
                bound = evaluation.inpaint(models[name], image, own.float(), probs, sigma)
                bounds.setdefault(f"{name}_within_m_g", []).extend(psnr(bound, target).tolist())
            probs, _ = evaluation.segment(models["pretrained"], image)
            oracle = evaluation.inpaint(models["pretrained"], image, true.float(), probs, sigma)
            error = ((oracle - target) ** 2).sum(1, True)
            row = sums.setdefault("oracle", {})
            row["inside"] = row.get("inside", 0.0) + float((error * true).sum())
            row["inside_px"] = row.get("inside_px", 0.0) + float(true.sum())
            bounds.setdefault("oracle", []).extend(psnr(oracle, target).tolist())
            pairs += len(image)
    result = {"host": platform.node(), "split": params.evaluate.split, "pairs": pairs,
              "note": "squared error summed over an image's pixels and colour channels, averaged over pairs; *_px: "
                      "pixels per pair (benchmarks/error_sources.py)",
              "methods": {name: {k: round(v / pairs, 3) for k, v in row.items()} for name, row in sums.items()},
              "psnr_bounds": {name: round(sum(v) / len(v), 3) for name, v in bounds.items()}}
    for name, row in result["methods"].items():
        total = sum(row.get(p, 0.0) for p in PARTS)
        shares = ", ".join(f"{p} {row.get(p, 0.0):.2f} ({row.get(f'{p}_px', 0):.0f} px)" for p in PARTS if p in row)
        print(f"{name:>14}: total {total:.2f}: {shares}")
    print("PSNR bounds:", result["psnr_bounds"])
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
