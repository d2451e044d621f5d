"""python -m pipelines.stages.evaluate_inpainter [--params params.yaml]

Stage `evaluate_inpainter`: the pretrained inpainters (stage pretrain_inpainter) on the held-out pairs'
true masks M_G, and on M_G eroded or dilated by the paper's Table I offsets, by mask-ratio bucket; OpenCV
Telea on M_G as the classical reference. The offsets are in the paper's pixels (its images are
`evaluate_inpainter.paper_image_size` px) and scale to the working resolution, fractional through the
distance map (components.masks.offset_mask). The inpainters only, so an experiment that retrains them
(`make paper`'s Tables II and III) is scored without the joint stages.

Writes `reports/inpainter_evaluation.json` (per bucket, and per pair for paired comparisons), its headline
`reports/headline/evaluate_inpainter.json` (offset 0, the whole split) and `reports/plots/table1.json`;
logs them to an MLflow run.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import mlflow
from torch.utils.data import DataLoader

from components.torch_backend import TorchBackend
from pipelines.checkpoints import inpainters_from, read_checkpoint, segmenter_from
from pipelines.common import params_hash, stage_main, write_headline, write_json
from pipelines.data import WithBuckets, pairs_config
from pipelines.evaluation import bucket_order, evaluate_inpainter, summarize, table1_rows
from pipelines.params import Params
from pipelines.tracking import flat_metrics, start_stage_run

log = logging.getLogger("evaluate_inpainter")
STAGE = "evaluate_inpainter"
REPORT = "inpainter_evaluation.json"


def working_offsets(offsets_paper_px: list[float], paper_size: int, image_size: int) -> dict[str, float]:
    """Paper px -> px at the working resolution: d x image_size / paper_size (2 paper px = 0.5 px at 64)."""
    return {f"{d:g}": d * image_size / paper_size for d in offsets_paper_px}


def run(params: Params, experiment: str = "object-removal") -> dict:
    p, reports, size = params.evaluate_inpainter, Path(params.paths.reports), params.networks.image_size
    segmenter = segmenter_from(read_checkpoint(Path(params.paths.segmenter) / "best.ckpt", "pretrain_segmenter"))
    inpainters = inpainters_from(read_checkpoint(Path(params.paths.inpainter) / "best.ckpt", "pretrain_inpainter"))
    model = TorchBackend(segmenter, inpainters)
    canny_sigma = params.pretrain_inpainter.canny_sigma
    config, _, _ = pairs_config(params.paths.pairs, size, canny_sigma, 0)
    dataset = WithBuckets(config, p.split, augment=False)
    loader = DataLoader(dataset, batch_size=p.batch_size, shuffle=False, num_workers=0)
    buckets = bucket_order(dataset.records)
    offsets = working_offsets(p.offsets_paper_px, p.paper_image_size, size)
    if "0" not in offsets:
        offsets = {"0": 0.0, **offsets}  # the true mask itself: Tables II and III, the headline
    rows = evaluate_inpainter(loader, model, offsets, canny_sigma)
    summary = summarize(rows, ("psnr", "ssim", "psnr_mask"), "offset", buckets)
    per_pair_buckets = [r["bucket"] for r in rows if r["offset"] == "0"]
    metrics = {
        "split": p.split, "pairs": len(dataset), "image_size": size, "paper_image_size": p.paper_image_size,
        "buckets": buckets, "offsets": offsets,
        "table1": {label: summary[label] for label in offsets},
        "telea": summary["telea"],
        "per_pair": {"buckets": per_pair_buckets,
                     "psnr": {label: [round(r["psnr"], 4) for r in rows if r["offset"] == label] for label in offsets}},
    }
    true_mask = metrics["table1"]["0"]["all"]
    section = {"evaluate_inpainter": p.model_dump(mode="json"), "networks": params.networks.model_dump(mode="json")}
    with start_stage_run(experiment, STAGE, section) as tracked:
        write_json(reports / REPORT, metrics)
        write_headline(reports, STAGE, {"psnr": true_mask["psnr"], "ssim": true_mask["ssim"],
                                        "psnr_mask": true_mask["psnr_mask"],
                                        "psnr_mask_telea": metrics["telea"]["all"]["psnr_mask"]})
        write_json(reports / "plots" / "table1.json", table1_rows(metrics["table1"]))
        mlflow.log_metrics(flat_metrics({"table1": metrics["table1"], "telea": metrics["telea"]}))
        mlflow.log_artifact(str(reports / REPORT), artifact_path="evaluation")
    log.info("evaluate_inpainter: PSNR by offset %s", {k: v["all"]["psnr"] for k, v in metrics["table1"].items()})
    return {**metrics, "params_hash": params_hash(section), "mlflow_run_id": tracked.run_id}


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
