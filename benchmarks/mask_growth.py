"""python benchmarks/mask_growth.py [--thresholds 0.5 0.3 0.2 0.1] [--bands 1 2 3] [--out FILE]

Does growing the selected instance into the segmenter's low-confidence border help the removal? The
argmax map marks a pixel "person" only where that class wins; the feathered and blurred rim of a pasted
object, where the segmenter is unsure, is left out, and every object pixel left out stays visible. On
the test split, with the workspace's models (`dvc repro evaluate` first), each segmenter method's
selection (evaluate's: the instance overlapping M_G most) is grown by hysteresis: the pixels within
`band` px of it whose target-class probability is at least `threshold`, leaving out the pixels of the
other target instances (the people it touches stay). Each variant's whole-image PSNR by bucket, PSNR in
M_G, coverage, over-expansion, leftover share and clean-removal rate (evaluate's definitions), against
the plain selection and a fixed 1-px dilation.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.25, 0.15, 0.08])
    parser.add_argument("--bands", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mask_growth.json")
    args = parser.parse_args()

    import numpy as np
    import torch

    from benchmarks.error_sources import workspace
    from components.masks import dilate_mask
    from components.metrics import area_ratio, clean_removal, coverage, leftover_share, psnr, visible_change
    from components.selection import evaluation_mask
    from pipelines import evaluation

    params, models, loader, targets, sigma = workspace(args.params)
    share = params.evaluate.clean_share
    visible_at = params.evaluate.visible_threshold / 255
    rows: list[dict] = []
    with torch.no_grad():
        pair = 0
        for batch in loader:
            image, target, true = batch["image"], batch["background"], batch["mask"]
            visible = visible_change(image, target, visible_at)
            for name in evaluation.SEGMENTERS:
                if name not in models:
                    continue
                probs, offsets = evaluation.segment(models[name], image)
                selected = evaluation_mask(probs, targets, true, offsets)[:, 0].numpy() > 0.5
                p_target = probs[:, targets].sum(1).numpy()  # (B, H, W): any target class
                others = np.isin(probs.argmax(1).numpy(), targets) & ~selected  # the other target instances
                variants = {"plain": selected,
                            "dilate_1": np.stack([dilate_mask(s, 1) for s in selected])}
                for band in args.bands:
                    reach = np.stack([dilate_mask(s, band) for s in selected])
                    for threshold in args.thresholds:
                        grown = selected | (reach & (p_target >= threshold) & ~others)
                        variants[f"grow_b{band}_t{threshold}"] = grown
                for variant, mask in variants.items():
                    m = torch.from_numpy(mask)[:, None].float()
                    composite = evaluation.inpaint(models[name], image, m, probs, sigma)
                    left = leftover_share(m, visible)
                    scores = {"psnr": psnr(composite, target), "psnr_mask": psnr(composite, target, mask=true),
                              "coverage": coverage(m, true), "over_expansion": area_ratio(m, true),
                              "leftover_share": left, "clean": clean_removal(left, share)}
                    for i in range(len(image)):
                        rows.append({"method": name, "variant": variant, "bucket": batch["bucket"][i],
                                     "pair": pair + i, **{k: float(v[i]) for k, v in scores.items()}})
            pair += len(image)
            print(f"{pair} pairs", flush=True)
    buckets = evaluation.bucket_order([{"bucket": r["bucket"], "mask_ratio": int(r["bucket"].split("-")[0])}
                                       for r in rows])
    keys = ("psnr", "psnr_mask", "coverage", "over_expansion", "leftover_share", "clean")
    table = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [dict(r, group=r["variant"]) for r in rows if r["method"] == name]
        table[name] = evaluation.summarize(mine, keys, "group", buckets)
    for name, by_variant in table.items():
        print(f"\n{name}")
        for variant, cells in by_variant.items():
            a = cells["all"]
            per = " ".join(f"{cells[b]['psnr']:.2f}" for b in buckets if b in cells)
            print(f"  {variant:>16}: psnr {a['psnr']:.2f} [{per}] in M_G {a['psnr_mask']:.2f} cov {a['coverage']:.3f}"
                  f" over {a['over_expansion']:.2f} left {a['leftover_share']:.3f} clean {a['clean']:.2f}")
    result = {"host": platform.node(), "split": params.evaluate.split, "pairs": pair,
              "note": "benchmarks/mask_growth.py: hysteresis growth of each selection (band px, threshold)",
              "methods": table}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
