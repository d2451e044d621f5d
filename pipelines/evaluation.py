"""The evaluation: every method on the held-out pairs, metrics by mask-ratio bucket; the inpainters alone on
the true mask, eroded and dilated (the paper's Table I, stage evaluate_inpainter).

Methods (all at the networks' working resolution, on the same test pairs):

    joint_mel          the jointly fine-tuned segmenter + inpainters (stage finetune_joint)
    joint_no_mel       the same without MEL (stage finetune_joint_ablation), when its checkpoint exists
    pretrained         pretrained segmenter + pretrained inpainters, no joint training
    pretrained_dilate  the same with the mask dilated by `evaluate.dilation_px`
    telea, navier_stokes   OpenCV's classical fills of the pretrained segmenter's mask
    oracle             the true mask M_G + the pretrained inpainters: the upper bound of the mask

A method's mask is the predicted target instance overlapping M_G most (the user's click, simulated);
when none does, nothing is removed and the output is the input (a failure, scored as such).

Per pair: PSNR and SSIM of the whole image (components.metrics: RGB, skimage's SSIM convention), PSNR
inside M_G (where the object was), the mask's IoU with M_G, its coverage of M_G, over-expansion
|M| / |M_G|, the leftover share (of the pixels where I differs visibly from I_G, those outside the mask:
what of the object a viewer still sees) and whether the removal is clean (leftover share at most
`clean_share`), and LPIPS when its weights are local. FID per method over the whole split when the
Inception file is local.

**Photos with nothing pasted** (`photo_scores`): each segmenter on the same pairs' backgrounds `I_G`,
photos as a user brings them (no paste seams to find): the IoU of its target-class pixels with the true
ones where the photo holds a target, and its **false-alarm rate** on the photos that hold none (a target
instance of at least the inference path's minimum area marked, so a class removal would erase
something). Joint training must not buy its masks with these (issue 13, item 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from components import inference
from components.backends import Backend
from components.masks import dilate_mask, erode_mask, offset_mask
from components.metrics import (
    area_ratio,
    clean_removal,
    coverage,
    leftover_share,
    mask_iou,
    psnr,
    ssim,
    visible_change,
)
from components.perceptual_metrics import LPIPS, frechet_distance, inception_features
from components.segmenter import instances_from_labels
from components.selection import evaluation_mask
from pipelines.tracking import flat_metrics  # noqa: F401  (re-exported: the evaluate stage and its tests)

PER_PAIR = ("psnr", "ssim", "psnr_mask", "iou", "coverage", "over_expansion", "leftover_share", "clean", "lpips")


@dataclass
class Evaluation:
    buckets: list[str]
    rows: list[dict] = field(default_factory=list)  # one per (method, pair)
    composites: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # method -> (B, 3, H, W) batches
    samples: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # image, masks, target batches
    photos: list[dict] = field(default_factory=list)  # one per (segmenter method, pair): photo_scores on I_G


def bucket_order(records: list[dict]) -> list[str]:
    """The manifest records' mask-ratio buckets, smallest ratio first (the tables' column order)."""
    return list(dict.fromkeys(r["bucket"] for r in sorted(records, key=lambda r: r["mask_ratio"])))


def each_mask(mask: torch.Tensor, change: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """`change` (a boolean (H, W) array to another) on each (B, 1, H, W) mask."""
    out = [change(m) for m in mask[:, 0].cpu().numpy() > 0.5]
    return torch.from_numpy(np.stack(out)).to(mask)[:, None]


def morph(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (< 0) each (B, 1, H, W) mask with a disk."""
    return each_mask(mask, lambda m: dilate_mask(m, pixels) if pixels >= 0 else erode_mask(m, -pixels))


def classical_fill(image: torch.Tensor, mask: torch.Tensor, method: int, radius: int = 3) -> torch.Tensor:
    """OpenCV inpainting (cv2.INPAINT_TELEA or cv2.INPAINT_NS) of each image: (B, 3, H, W) in [0, 1]."""
    out = []
    for img, m in zip(image.cpu(), mask.cpu(), strict=True):
        rgb = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        filled = cv2.inpaint(rgb, (m[0].numpy() > 0.5).astype(np.uint8), radius, method)
        out.append(torch.from_numpy(filled).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(image)


def segment(model: Backend, image: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
    """(B, K, H, W) class probabilities of the model's segmenter, and its (B, 2, H, W) offsets (None
    without the offset head)."""
    probabilities, offsets = model.segment(image.numpy())
    return torch.from_numpy(probabilities), offsets


def inpaint(model: Backend, image: torch.Tensor, mask: torch.Tensor, probabilities: torch.Tensor,
            canny_sigma: float) -> torch.Tensor:
    """The composite of `model`'s inpainters filling `mask` in `image`: the inference path's own step."""
    return torch.from_numpy(inference.inpaint(model, image.numpy(), probabilities.numpy(), mask.numpy(), canny_sigma))


SEGMENTERS = ("joint_mel", "joint_no_mel", "pretrained")  # the methods with a segmenter of their own


def photo_scores(probabilities: torch.Tensor, offsets: np.ndarray | None, truth: torch.Tensor,
                 target_classes: list[int], min_area: int) -> list[dict]:
    """Per photo (probabilities (B, K, H, W) of the segmenter on I_G, its true segmentation (B, H, W)):
    {"target_iou": IoU of the target-class pixels, None without a true target; "false_alarm": 1.0 when a
    target instance of at least `min_area` pixels is marked on a photo without a true target, else 0.0;
    None when the photo holds one}."""
    labels = probabilities.argmax(dim=1)
    classes = torch.tensor(target_classes)
    true = torch.isin(truth, classes)[:, None]  # (B, 1, H, W)
    ious = mask_iou(torch.isin(labels, classes)[:, None], true)
    labels, holds = labels.numpy(), true.flatten(1).any(dim=1)
    rows = []
    for b in range(len(labels)):
        if holds[b]:
            rows.append({"target_iou": float(ious[b]), "false_alarm": None})
        else:
            votes = None if offsets is None else offsets[b]
            marked = bool(instances_from_labels(labels[b], target_classes, min_area=min_area, offsets=votes))
            rows.append({"target_iou": None, "false_alarm": float(marked)})
    return rows


@torch.no_grad()
def evaluate_batches(
    batches, models: dict[str, Backend], target_classes: list[int], dilation_px: int,
    buckets: list[str], canny_sigma: float, lpips: LPIPS | None = None,
    visible_threshold: float = 8 / 255, clean_share: float = 0.02,
) -> Evaluation:
    """Run every method on every batch (dicts from PairsDataset plus "bucket" labels). A model is a
    backend of the inference path (components.backends): one row of the methods table. A pixel is part
    of the visible object where |I - I_G| exceeds `visible_threshold` (in [0, 1] units); a removal is
    clean when at most `clean_share` of those pixels lie outside its mask."""
    result = Evaluation(buckets)
    pair = 0
    for batch in batches:
        image, target, true = batch["image"], batch["background"], batch["mask"]
        visible = visible_change(image, target, visible_threshold)  # (B, 1, H, W): the object as seen
        pretrained = models["pretrained"]
        probs, offsets = segment(pretrained, image)
        base_mask = evaluation_mask(probs, target_classes, true, offsets)
        outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # method -> (mask, composite)
        for name in ("joint_mel", "joint_no_mel"):
            if name in models:
                own, own_offsets = segment(models[name], image)
                mask = evaluation_mask(own, target_classes, true, own_offsets)
                outputs[name] = (mask, inpaint(models[name], image, mask, own, canny_sigma))
        outputs["pretrained"] = (base_mask, inpaint(pretrained, image, base_mask, probs, canny_sigma))
        dilated = morph(base_mask, dilation_px)
        outputs["pretrained_dilate"] = (dilated, inpaint(pretrained, image, dilated, probs, canny_sigma))
        outputs["telea"] = (base_mask, classical_fill(image, base_mask, cv2.INPAINT_TELEA))
        outputs["navier_stokes"] = (base_mask, classical_fill(image, base_mask, cv2.INPAINT_NS))
        outputs["oracle"] = (true, inpaint(pretrained, image, true, probs, canny_sigma))

        n = len(image)
        for name, (mask, composite) in outputs.items():
            scores = {
                "psnr": psnr(composite, target), "ssim": ssim(composite, target),
                "psnr_mask": psnr(composite, target, mask=true), "iou": mask_iou(mask, true),
                "coverage": coverage(mask, true), "over_expansion": area_ratio(mask, true),
            }
            scores["leftover_share"] = leftover_share(mask, visible)
            scores["clean"] = clean_removal(scores["leftover_share"], clean_share)
            if lpips is not None:
                scores["lpips"] = lpips(composite, target)
            for i in range(n):
                result.rows.append({"method": name, "pair": pair + i, "bucket": batch["bucket"][i],
                                    **{k: float(v[i]) for k, v in scores.items()}})
            result.composites.setdefault(name, []).append(composite)
            result.samples.setdefault(f"mask_{name}", []).append(mask)
        for key in ("image", "background", "mask"):
            result.samples.setdefault(key, []).append(batch[key])
        min_area = inference.InferenceConfig().min_area(image.shape[-1])  # what a class removal would take
        for name in SEGMENTERS:
            if name in models:
                probs_bg, offsets_bg = segment(models[name], target)
                for i, row in enumerate(photo_scores(probs_bg, offsets_bg, batch["bg_seg"], target_classes, min_area)):
                    result.photos.append({"method": name, "pair": pair + i, **row})
        pair += n
    return result


@torch.no_grad()
def evaluate_inpainter(batches, model: Backend, offsets: dict[str, float], canny_sigma: float) -> list[dict]:
    """The model's inpainters on each pair's true mask M_G grown or shrunk by each offset (`offsets`: label
    -> working-resolution px, fractional through the distance map: components.masks.offset_mask), and
    OpenCV Telea on M_G itself (label "telea"). Rows: label, pair, bucket, PSNR and SSIM of the whole
    image, PSNR inside M_G. The segmentation inpainter's input is the model's own segmentation of I."""
    rows: list[dict] = []
    pair = 0
    for batch in batches:
        image, target, true = batch["image"], batch["background"], batch["mask"]
        probabilities, _ = segment(model, image)
        fills = {label: inpaint(model, image, each_mask(true, lambda m, d=offset: offset_mask(m, d)), probabilities,
                                canny_sigma)
                 for label, offset in offsets.items()}
        fills["telea"] = classical_fill(image, true, cv2.INPAINT_TELEA)
        for label, composite in fills.items():
            scores = {"psnr": psnr(composite, target), "ssim": ssim(composite, target),
                      "psnr_mask": psnr(composite, target, mask=true)}
            for i in range(len(image)):
                rows.append({"offset": label, "pair": pair + i, "bucket": batch["bucket"][i],
                             **{k: float(v[i]) for k, v in scores.items()}})
        pair += len(image)
    return rows


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v) and not math.isinf(v)]
    return round(float(np.mean(finite)), 4) if finite else None


def summarize(rows: list[dict], keys: tuple[str, ...], group: str, buckets: list[str]) -> dict:
    """{group value: {bucket or "all": {metric: mean, "n": count}}}; NaN/inf values (empty masks) are skipped."""
    table: dict = {}
    for name in dict.fromkeys(r[group] for r in rows):
        mine = [r for r in rows if r[group] == name]
        table[str(name)] = {}
        for bucket in [*buckets, "all"]:
            chosen = [r for r in mine if bucket == "all" or r["bucket"] == bucket]
            if not chosen:
                continue
            entry = {k: _mean([r[k] for r in chosen]) for k in keys if k in chosen[0]}
            entry["n"] = len(chosen)
            table[str(name)][bucket] = entry
    return table


def fid_scores(evaluation: Evaluation, inception: torch.jit.ScriptModule) -> dict[str, float]:
    """FID of each method's composites against the ground-truth backgrounds of the same pairs."""
    real = inception_features(inception, torch.cat(evaluation.samples["background"]))
    return {name: round(frechet_distance(inception_features(inception, torch.cat(batches)), real), 4)
            for name, batches in evaluation.composites.items()}


def sample_grid(evaluation: Evaluation, method: str, per_case: int, scale: int = 2) -> tuple[np.ndarray, list[dict]]:
    """Rows of (input, predicted mask, true mask, result, ground truth) for the `per_case` best, median
    and worst pairs of `method` by PSNR; (H, W, 3) uint8 and the rows' pair ids and PSNR."""
    from pipelines.training.visuals import grid_image

    rows = sorted((r for r in evaluation.rows if r["method"] == method), key=lambda r: -r["psnr"])
    middle = len(rows) // 2 - per_case // 2
    picks = [("best", rows[:per_case]), ("median", rows[middle:middle + per_case]), ("worst", rows[-per_case:])]
    tensors = {k: torch.cat(v) for k, v in evaluation.samples.items()}
    composite = torch.cat(evaluation.composites[method])
    lines, chosen = [], []
    for case, picked in picks:
        for r in picked:
            i = r["pair"]
            tiles = [tensors["image"][i], tensors[f"mask_{method}"][i].expand(3, -1, -1),
                     tensors["mask"][i].expand(3, -1, -1), composite[i], tensors["background"][i]]
            line = torch.stack(tiles)
            lines.append(torch.nn.functional.interpolate(line, scale_factor=scale, mode="nearest"))
            chosen.append({"case": case, "pair": i, "bucket": r["bucket"], "psnr": round(r["psnr"], 2)})
    return grid_image(lines), chosen


def markdown_report(metrics: dict, grid_name: str) -> str:
    """The tables of `metrics` (as written to reports/metrics.json) as Markdown."""
    buckets = [*metrics["buckets"], "all"]
    lines = ["# Evaluation", "", f"Split `{metrics['split']}`, {metrics['pairs']} pairs at "
             f"{metrics['image_size']} px. PSNR in dB (RGB, whole image unless noted); SSIM as scikit-image.", ""]

    def table(title: str, key: str, fmt: str) -> None:
        lines.extend([f"## {title}", "", "| method | " + " | ".join(buckets) + " |",
                      "| --- |" + " --- |" * len(buckets)])
        for name, by_bucket in metrics["methods"].items():
            cells = [format(by_bucket[b][key], fmt) if b in by_bucket and by_bucket[b].get(key) is not None
                     else "-" for b in buckets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")

    table("PSNR by mask-ratio bucket (%)", "psnr", ".2f")
    table("PSNR inside M_G", "psnr_mask", ".2f")
    table("SSIM", "ssim", ".4f")
    table("Mask IoU with M_G", "iou", ".3f")
    table("Coverage of M_G", "coverage", ".3f")
    table("Over-expansion |M| / |M_G|", "over_expansion", ".2f")
    table(f"Leftover share: visible object pixels (|I - I_G| > {metrics['visible_threshold']} grey levels) "
          "outside the mask", "leftover_share", ".3f")
    table(f"Clean-removal rate (leftover share <= {metrics['clean_share']})", "clean", ".2f")
    if metrics.get("photos"):
        lines.extend(["## Photos with nothing pasted (the pairs' backgrounds I_G)", "",
                      "Target-class IoU on the photos that hold a target; false-alarm rate: the share of the photos "
                      "without one where a target instance is marked (a class removal would erase something).", "",
                      "| method | target IoU | photos | false-alarm rate | photos |",
                      "| --- | --- | --- | --- | --- |"])
        for name, s in metrics["photos"].items():
            iou = "-" if s["target_iou"] is None else f"{s['target_iou']:.3f}"
            alarm = "-" if s["false_alarm"] is None else f"{s['false_alarm']:.3f}"
            lines.append(f"| {name} | {iou} | {s['with_target']} | {alarm} | {s['without_target']} |")
        lines.append("")
    if metrics["perceptual"].get("lpips") == "computed":
        table("LPIPS (VGG)", "lpips", ".4f")
    lines.extend(["## Perceptual metrics", ""])
    for name, status in metrics["perceptual"].items():
        lines.append(f"- {name}: {status}")
    if metrics.get("fid"):
        lines.append("- FID: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics["fid"].items()))
    lines.extend(["", "The paper's Tables I-III (the inpainters on the true mask, eroded, dilated, trained on random "
                  "masks) are stage evaluate_inpainter's (reports/inpainter_evaluation.json) and `make paper`'s "
                  "(reports/paper.md).", "", "## Samples", "",
                  "Rows: best, median and worst pairs of the joint model by PSNR. Columns: input, predicted mask, "
                  "true mask, result, ground truth.", "", f"![samples]({grid_name})", ""])
    return "\n".join(lines)


def summarize_photos(rows: list[dict]) -> dict:
    """{method: {"target_iou": mean, "with_target": n, "false_alarm": rate, "without_target": n}}."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        ious = [r["target_iou"] for r in mine if r["target_iou"] is not None]
        alarms = [r["false_alarm"] for r in mine if r["false_alarm"] is not None]
        out[name] = {"target_iou": _mean(ious), "with_target": len(ious), "false_alarm": _mean(alarms),
                     "without_target": len(alarms)}
    return out


def bucket_rows(metrics: dict, key: str) -> list[dict]:
    """DVC plot data: `key` by bucket (x = the bucket's middle, %) with a column per method."""
    rows = []
    for bucket in metrics["buckets"]:
        lo, hi = (int(x) for x in bucket.split("-"))
        row = {"mask_ratio_pct": (lo + hi) / 2}
        row.update({name: m[bucket][key] for name, m in metrics["methods"].items() if bucket in m})
        rows.append(row)
    return rows


def plot_rows(metrics: dict) -> tuple[list[dict], list[dict]]:
    """DVC plot data: PSNR and the clean-removal rate by bucket (bucket_rows)."""
    return bucket_rows(metrics, "psnr"), bucket_rows(metrics, "clean")


def table1_rows(table1: dict) -> list[dict]:
    """DVC plot data of the paper's Table I (stage evaluate_inpainter): x = the offset in paper px, a PSNR
    column per bucket."""
    rows = []
    for offset, cells in table1.items():
        row = {"offset_paper_px": float(offset)}
        row.update({f"psnr_{b}": c["psnr"] for b, c in cells.items()})
        rows.append(row)
    return rows
