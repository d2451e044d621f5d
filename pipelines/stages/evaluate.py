"""python -m pipelines.stages.evaluate [--params params.yaml]

Stage `evaluate`: every method (pipelines/evaluation.py) on the held-out `evaluate.split` pairs, by
mask-ratio bucket (the paper's Table I, the inpainters alone, is stage evaluate_inpainter's).
Writes `reports/metrics.json` (the full table; its headline, `reports/headline/evaluate.json`, is the DVC
metric: the joint model on the whole split), `reports/plots/evaluate_buckets.json` and
`reports/plots/evaluate_clean.json` (`dvc plots show`), `reports/samples.png` (best / median / worst pairs)
and `reports/evaluation.md`; logs all of it to an MLflow run. LPIPS and FID run only when their
weights are local files named in `evaluate.*`; otherwise the report says they were skipped and why.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import mlflow
from torch.utils.data import DataLoader

from components.perceptual_metrics import load_inception, load_lpips
from components.torch_backend import TorchBackend
from pipelines.checkpoints import inpainters_from, read_checkpoint, segmenter_from
from pipelines.common import params_hash, stage_main, write_headline, write_json
from pipelines.data import WithBuckets, pairs_config
from pipelines.evaluation import (
    PER_PAIR,
    bucket_order,
    evaluate_batches,
    fid_scores,
    flat_metrics,
    markdown_report,
    plot_rows,
    sample_grid,
    summarize,
    summarize_photos,
)
from pipelines.params import Params
from pipelines.tracking import start_stage_run

log = logging.getLogger("evaluate")
STAGE = "evaluate"


def load_models(params: Params) -> dict[str, TorchBackend]:
    paths = params.paths
    segmenter = segmenter_from(read_checkpoint(Path(paths.segmenter) / "best.ckpt", "pretrain_segmenter"))
    inpainters = inpainters_from(read_checkpoint(Path(paths.inpainter) / "best.ckpt", "pretrain_inpainter"))
    models = {"pretrained": TorchBackend(segmenter, inpainters)}
    joint = read_checkpoint(Path(paths.joint) / "best.ckpt", "finetune_joint")
    models["joint_mel"] = TorchBackend(segmenter_from(joint), inpainters_from(joint))
    ablation = Path(paths.joint_ablation) / "best.ckpt"
    if ablation.is_file():
        checkpoint = read_checkpoint(ablation, "finetune_joint_ablation")
        models["joint_no_mel"] = TorchBackend(segmenter_from(checkpoint), inpainters_from(checkpoint))
    return models


def run(params: Params, experiment: str = "object-removal") -> dict:
    p, reports = params.evaluate, Path(params.paths.reports)
    models = load_models(params)
    canny_sigma = params.pretrain_inpainter.canny_sigma
    config, categories, targets = pairs_config(params.paths.pairs, params.networks.image_size, canny_sigma, 0)
    dataset = WithBuckets(config, p.split, augment=False)
    loader = DataLoader(dataset, batch_size=p.batch_size, shuffle=False, num_workers=0)
    buckets = bucket_order(dataset.records)
    perceptual: dict[str, str] = {}
    lpips = None
    if p.lpips_vgg16_weights and p.lpips_heads:
        lpips, perceptual["lpips"] = load_lpips(p.lpips_vgg16_weights, p.lpips_heads), "computed"
    else:
        perceptual["lpips"] = ("skipped: evaluate.lpips_vgg16_weights and evaluate.lpips_heads name no local files "
                               "(nothing is downloaded at run time)")
    inception = load_inception(p.fid_inception) if p.fid_inception else None
    perceptual["fid"] = ("computed over the whole split" if inception is not None else
                         "skipped: evaluate.fid_inception names no local TorchScript file (nothing is downloaded)")

    result = evaluate_batches(loader, models, targets, p.dilation_px, buckets, canny_sigma, lpips,
                              visible_threshold=p.visible_threshold / 255, clean_share=p.clean_share)
    metrics = {
        "split": p.split, "pairs": len(dataset), "image_size": params.networks.image_size, "buckets": buckets,
        "visible_threshold": p.visible_threshold, "clean_share": p.clean_share,
        "methods": summarize(result.rows, PER_PAIR, "method", buckets),
        "photos": summarize_photos(result.photos),
        "perceptual": perceptual,
        "fid": fid_scores(result, inception) if inception is not None else None,
    }
    grid, picked = sample_grid(result, "joint_mel", p.samples_per_case)
    by_bucket, clean = plot_rows(metrics)
    section = {"evaluate": p.model_dump(mode="json"), "networks": params.networks.model_dump(mode="json")}
    with start_stage_run(experiment, STAGE, section) as tracked:
        write_json(reports / "metrics.json", metrics)
        joint = metrics["methods"]["joint_mel"]["all"]  # the joint model on the whole test split
        write_headline(reports, STAGE, {"psnr": joint["psnr"], "ssim": joint["ssim"], "psnr_mask": joint["psnr_mask"],
                                        "mask_iou": joint["iou"], "coverage": joint["coverage"],
                                        "clean": joint["clean"]})
        write_json(reports / "plots" / "evaluate_buckets.json", by_bucket)
        write_json(reports / "plots" / "evaluate_clean.json", clean)
        cv2.imwrite(str(reports / "samples.png"), grid[..., ::-1])
        (reports / "evaluation.md").write_text(markdown_report(metrics, "samples.png"))
        mlflow.log_metrics(flat_metrics({"methods": metrics["methods"], "photos": metrics["photos"],
                                         "fid": metrics["fid"] or {}}))
        for name in ("metrics.json", "evaluation.md", "samples.png"):
            mlflow.log_artifact(str(reports / name), artifact_path="evaluation")
        mlflow.set_tag("samples", str(picked))
    log.info("evaluate: %s", {m: v["all"]["psnr"] for m, v in metrics["methods"].items()})
    return {**metrics, "params_hash": params_hash(section), "mlflow_run_id": tracked.run_id}


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
