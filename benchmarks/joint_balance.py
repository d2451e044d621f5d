"""python benchmarks/joint_balance.py [--variant NAME KEY=VALUE ...]... [--out benchmarks/results/joint_balance.json]

What does joint fine-tuning at the paper's balance (L_PS weight 1) do to the segmenter, and which part
of the joint loss does it? Each variant is `finetune_joint` with some params changed (YAML values), run
from the workspace's pretrained checkpoints (`dvc repro pretrain_inpainter` first) into a temporary
folder, then the `evaluate` stage on the test split with that joint model as joint_mel. Per variant:
validation PSNR and L_PS of the joint stage; on the test split the joint model's whole-image PSNR, SSIM
and mask IoU with M_G; and on the same pairs' backgrounds I_G (photos with nothing pasted) its
target-class IoU and false-alarm rate (pipelines/evaluation.py: photo_scores); per bucket the PSNR of
joint_mel and of pretrained, and the clean-removal rates; and on 20 stuff-only scenes (the behaviour tests'
generator, tests/model/test_behaviour.py, seeds 10-29) how many a class removal marks anything on. A variant
that gains PSNR on the pairs while its photo figures fall has learned to find paste seams, not people.
MLflow runs go to a temporary store. Without --variant, the variants of the README's table. Results
are merged into --out by variant name (a variant run again replaces its row, the others stay).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.variants import run_variants  # noqa: E402

VARIANTS = {
    "default": [],
    "inputs_w1": ["finetune_joint.segmentation_weight=1"],
    "composite_w1": ["finetune_joint.segmentation_weight=1", "finetune_joint.mask_gradient=composite",
                     "finetune_joint.composite_weight=30"],
    "composite_w1_spare": ["finetune_joint.segmentation_weight=1", "finetune_joint.mask_gradient=composite",
                           "finetune_joint.composite_weight=30", "finetune_joint.spare_others=true"],
    "composite_w100": ["finetune_joint.mask_gradient=composite", "finetune_joint.composite_weight=30"],
}


def run_variant(name: str, settings: list[str], folder: Path) -> dict:
    from benchmarks.joint_gradients import overridden
    from pipelines.stages import evaluate, finetune_joint

    params = overridden(str(REPO / "params.yaml"), [*settings, f"paths.joint={folder / name / 'joint'}",
                                                    f"paths.reports={folder / name / 'reports'}"])
    started = time.perf_counter()
    finetune_joint.run(params, experiment="joint-balance")
    val = json.loads((folder / name / "reports" / "finetune_joint.json").read_text())
    metrics = evaluate.run(params, experiment="joint-balance")
    test, photos = metrics["methods"]["joint_mel"]["all"], metrics["photos"]
    buckets = [b for b in metrics["methods"]["joint_mel"] if b != "all"]
    return {"settings": settings, "wall_s": round(time.perf_counter() - started, 1),
            "val_psnr": val["val_psnr"], "val_loss_ps": val["val_loss_ps"],
            "pretrained_val_psnr": val["pretrained_val_psnr"], "pretrained_val_loss_ps": val["pretrained_val_loss_ps"],
            "test_psnr": test["psnr"], "test_ssim": test["ssim"], "test_mask_iou": test["iou"],
            "photo_target_iou": photos["joint_mel"]["target_iou"],
            "photo_false_alarm": photos["joint_mel"]["false_alarm"],
            "pretrained_photo_target_iou": photos["pretrained"]["target_iou"],
            "pretrained_photo_false_alarm": photos["pretrained"]["false_alarm"],
            "pretrained_test_psnr": metrics["methods"]["pretrained"]["all"]["psnr"],
            "test_clean": test["clean"], "pretrained_test_clean": metrics["methods"]["pretrained"]["all"]["clean"],
            "bucket_psnr": {b: metrics["methods"]["joint_mel"][b]["psnr"] for b in buckets},
            "pretrained_bucket_psnr": {b: metrics["methods"]["pretrained"][b]["psnr"] for b in buckets},
            "plain_false_alarms": plain_false_alarms(Path(params.paths.joint) / "best.ckpt")}


PLAIN_SEEDS = range(10, 30)


def plain_false_alarms(checkpoint: Path) -> int:
    """Of 20 stuff-only scenes at the model's resolution, how many a class removal marks anything on."""
    from pipelines.checkpoints import remover_from
    from tests.model.test_behaviour import plain_background

    remover = remover_from(checkpoint)
    return sum(bool(remover.remove(plain_background(seed, remover.image_size)[1]).mask.any()) for seed in PLAIN_SEEDS)


def describe(r: dict) -> str:
    return (f"val PSNR {r['val_psnr']:.2f} (pretrained {r['pretrained_val_psnr']:.2f}), val L_PS "
            f"{r['val_loss_ps']:.3f}; test PSNR {r['test_psnr']:.2f}, IoU {r['test_mask_iou']:.3f}; photos: "
            f"target IoU {r['photo_target_iou']:.3f} (pretrained {r['pretrained_photo_target_iou']:.3f}), "
            f"false alarms {r['photo_false_alarm']:.3f} ({r['pretrained_photo_false_alarm']:.3f}); test PSNR by bucket "
            f"{' '.join(f'{v:.2f}' for v in r.get('bucket_psnr', {}).values())} (pretrained "
            f"{' '.join(f'{v:.2f}' for v in r.get('pretrained_bucket_psnr', {}).values())}); clean "
            f"{r.get('test_clean', float('nan')):.3f}; plain scenes marked {r.get('plain_false_alarms', '-')}/20")


def main() -> None:
    run_variants(__doc__, VARIANTS, REPO / "benchmarks" / "results" / "joint_balance.json", "joint-balance-",
                 "finetune_joint variants from the same pretrained checkpoints, one seed each; test split and its "
                 "backgrounds I_G (benchmarks/joint_balance.py)", run_variant, describe)


if __name__ == "__main__":
    main()
