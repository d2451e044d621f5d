"""python benchmarks/segmenter_recipes.py [--variant NAME KEY=VALUE ...]... [--out FILE]

Which pretraining recipe gives the segmenter masks closest to the pasted object? Each variant is the
`pretrain_segmenter` stage with some params changed (YAML values), trained into a temporary folder, then
the `evaluate` stage on the test split with that segmenter as the `pretrained` method (the workspace's
pretrained inpainters fill its masks; `dvc repro finetune_joint_ablation` first, evaluate needs the joint
models to exist). Per variant: the stage's validation mask IoU (the selected instance against M_G) and
target-class IoU; on the test split the pretrained method's whole-image PSNR, mask IoU, coverage,
clean-removal rate and leftover share; on the test pairs' backgrounds I_G its person IoU and false-alarm
rate (pipelines/evaluation.py: photo_scores); and on scenes of two touching people (the behaviour test's,
tests/model/test_behaviour.py, seeds 30-39) how often a click on the left one removes it (IoU >= 0.8) and
at most 5 % of the other. MLflow runs go to a temporary store. Without --variant,
the variants of the README's table. Results are merged into --out by variant name.
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
    "default_seed1": ["pretrain_segmenter.seed=1"],
    "dice_1": ["pretrain_segmenter.dice_weight=1"],
    "dice_1_seed1": ["pretrain_segmenter.dice_weight=1", "pretrain_segmenter.seed=1"],
    "dice_0": ["pretrain_segmenter.dice_weight=0"],
    "offset_3": ["pretrain_segmenter.offset_weight=3"],
    "offset_3_seed1": ["pretrain_segmenter.offset_weight=3", "pretrain_segmenter.seed=1"],
    "offset_0.3": ["pretrain_segmenter.offset_weight=0.3"],
    "no_offsets": ["networks.segmenter.offsets=false"],
    "size_128": ["networks.segmenter.image_size=128"],
}


TOUCHING_SEEDS = range(30, 40)


def touching_scores(segmenter_folder: Path, inpainter_folder: Path) -> dict:
    """Clicks on the left of two touching people through the inference path: the share of scenes where the
    removal is that person (IoU >= 0.8, <= 5 % of the other) and the mean IoU with it."""
    import cv2
    import numpy as np

    from components.inference import ObjectRemover, Target, model_info
    from components.torch_backend import TorchBackend
    from pipelines.checkpoints import inpainters_from, read_checkpoint, segmenter_from
    from tests.model.test_behaviour import plain_background, two_touching_people

    meta = json.loads((segmenter_folder / "segmenter.json").read_text())
    # the model's resolution is the inpainters' (networks.image_size); the segmenter may work below it
    size = json.loads((inpainter_folder / "inpainter.json").read_text())["image_size"]
    backend = TorchBackend(segmenter_from(read_checkpoint(segmenter_folder / "best.ckpt", "pretrain_segmenter")),
                           inpainters_from(read_checkpoint(inpainter_folder / "best.ckpt", "pretrain_inpainter")))
    remover = ObjectRemover(backend, model_info({**meta, "image_size": size}))
    passed, ious = 0, []
    for seed in TOUCHING_SEEDS:
        image, left, right = two_touching_people(plain_background(seed, size)[0], seed, size)
        distance = cv2.distanceTransform(left.astype(np.uint8), cv2.DIST_L2, 3)
        y, x = np.unravel_index(int(distance.argmax()), distance.shape)
        mask = remover.remove(image, Target(points=((x + 0.5, y + 0.5),))).mask
        iou = float((mask & left).sum() / max(1, (mask | left).sum()))
        passed += iou >= 0.8 and (mask & right).sum() <= 0.05 * right.sum()
        ious.append(iou)
    return {"touching_pass": passed / len(TOUCHING_SEEDS), "touching_iou": round(float(np.mean(ious)), 4)}


def run_variant(name: str, settings: list[str], folder: Path) -> dict:
    from benchmarks.joint_gradients import overridden
    from pipelines.stages import evaluate, pretrain_segmenter

    params = overridden(str(REPO / "params.yaml"), [*settings, f"paths.segmenter={folder / name / 'segmenter'}",
                                                    f"paths.reports={folder / name / 'reports'}"])
    started = time.perf_counter()
    pretrain_segmenter.run(params, experiment="segmenter-recipes")
    trained = time.perf_counter() - started
    val = json.loads((folder / name / "reports" / "pretrain_segmenter.json").read_text())
    metrics = evaluate.run(params, experiment="segmenter-recipes")
    test, photos = metrics["methods"]["pretrained"]["all"], metrics["photos"]["pretrained"]
    return {"settings": settings, "train_s": round(trained, 1),
            "val_mask_iou": val["val_mask_iou"], "val_target_iou": val["val_target_iou"],
            "test_psnr": test["psnr"], "test_mask_iou": test["iou"], "test_coverage": test["coverage"],
            "test_clean": test["clean"], "test_leftover": test["leftover_share"],
            "photo_target_iou": photos["target_iou"], "photo_false_alarm": photos["false_alarm"],
            **touching_scores(folder / name / "segmenter", Path(params.paths.inpainter))}


def describe(r: dict) -> str:
    return (f"val mask IoU {r['val_mask_iou']:.3f} (target {r['val_target_iou']:.3f}); test PSNR "
            f"{r['test_psnr']:.2f}, IoU {r['test_mask_iou']:.3f}, coverage {r['test_coverage']:.3f}, clean "
            f"{r['test_clean']:.3f}, leftover {r['test_leftover']:.3f}; photos: IoU {r['photo_target_iou']:.3f}, "
            f"false alarms {r['photo_false_alarm']:.3f}; touching: pass {r['touching_pass']:.1f}, IoU "
            f"{r['touching_iou']:.3f}; {r['train_s']:.0f} s")


def main() -> None:
    run_variants(__doc__, VARIANTS, REPO / "benchmarks" / "results" / "segmenter_recipes.json",
                 "segmenter-recipes-", "pretrain_segmenter variants, one seed each unless named, evaluated as the "
                 "pretrained method with the workspace's inpainters (benchmarks/segmenter_recipes.py); settings "
                 "relative to params.yaml (the offset head, pairs labelled at label_alpha 0.1); the rows of the "
                 "previous revision's contact head are in segmenter_recipes_contact.json", run_variant, describe)


if __name__ == "__main__":
    main()
