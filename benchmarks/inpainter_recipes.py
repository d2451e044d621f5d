"""python benchmarks/inpainter_recipes.py pack | run [--device cuda] [--steps 4000]

Which pretraining recipe makes the image inpainter beat OpenCV Telea inside the true masks, and after
how many generator updates? Each recipe (hole fill, image head, learning rate, loss weights, width)
trains the real `InpainterModule` step from scratch on the default pairs at 64 px, batch 8, and is
scored on the 200 validation pairs (PSNR of the composite inside `M_G`) at fixed update counts, so the
curves transfer from the GPU that ran the sweep to the 2-core CPU that runs `dvc repro` (same updates,
same numbers up to float noise).

`pack` (here, after `dvc repro synthesize`) writes the train/val pairs at the working resolution,
un-augmented, to one compressed file (~50 MB) that travels to a GPU machine without DVC, MLflow or
albumentations; `run` trains the recipes in parallel subprocesses (flip augmentation and Canny edges
done in the loader) and writes benchmarks/results/inpainter_recipes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PACKED = REPO / ".sweep" / "pairs64.npz"
MILESTONES = (0, 50, 250, 500, 750, 1000, 1250, 1500, 2000, 3000, 4000)
BASE = {"hole_fill": "white", "image_head": "tanh01", "lr": 2e-4, "betas": (0.0, 0.9), "schedule": "constant",
        "width": 16, "losses": {}}
RECIPES = {
    "edgeconnect": {},
    "edgeconnect_lr1e-3": {"lr": 1e-3},
    "smooth_tanh": {"hole_fill": "smooth"},
    "smooth_residual": {"hole_fill": "smooth", "image_head": "residual01"},
    "smooth_residual_lr5e-4": {"hole_fill": "smooth", "image_head": "residual01", "lr": 5e-4},
    "smooth_residual_lr1e-3": {"hole_fill": "smooth", "image_head": "residual01", "lr": 1e-3},
    "smooth_residual_l1only_lr1e-3": {"hole_fill": "smooth", "image_head": "residual01", "lr": 1e-3,
                                      "losses": {"image_adv": 0.0, "image_perceptual": 0.0, "image_style": 0.0}},
    "smooth_residual_l1only": {"hole_fill": "smooth", "image_head": "residual01",
                               "losses": {"image_adv": 0.0, "image_perceptual": 0.0, "image_style": 0.0}},
    "smooth_residual_nostyle_lr5e-4": {"hole_fill": "smooth", "image_head": "residual01", "lr": 5e-4,
                                       "losses": {"image_style": 0.0}},
    "smooth_residual_l1only_adam09_lr1e-3": {"hole_fill": "smooth", "image_head": "residual01", "lr": 1e-3,
                                             "betas": (0.9, 0.999),
                                             "losses": {"image_adv": 0.0, "image_perceptual": 0.0, "image_style": 0.0}},
    "smooth_residual_l1only_cosine": {"hole_fill": "smooth", "image_head": "residual01", "schedule": "cosine",
                                      "losses": {"image_adv": 0.0, "image_perceptual": 0.0, "image_style": 0.0}},
    "smooth_residual_l1only_cosine_lr5e-4": {"hole_fill": "smooth", "image_head": "residual01", "schedule": "cosine",
                                             "lr": 5e-4, "losses": {"image_adv": 0.0, "image_perceptual": 0.0,
                                                                    "image_style": 0.0}},
    "smooth_residual_l1only_cosine_perimage_kw0": {
        "hole_fill": "smooth", "image_head": "residual01", "schedule": "cosine",
        "losses": {"image_adv": 0.0, "image_perceptual": 0.0, "image_style": 0.0, "known_weight": 0.0,
                   "normalize_by": "image"}},
    "smooth_residual_l1only_cosine_perimage_kw01": {
        "hole_fill": "smooth", "image_head": "residual01", "schedule": "cosine",
        "losses": {"image_adv": 0.0, "image_perceptual": 0.0, "image_style": 0.0, "known_weight": 0.1,
                   "normalize_by": "image"}},
    "smooth_residual_w32_lr5e-4": {"hole_fill": "smooth", "image_head": "residual01", "lr": 5e-4, "width": 32},
}


def pack(out: Path) -> None:
    import numpy as np
    import torch

    from pipelines.data import PairsDataset, pairs_config

    config, categories, _ = pairs_config(str(REPO / "data" / "pairs"), 64, 1.0, 0)
    arrays: dict[str, np.ndarray] = {"num_classes": np.array(len(categories) + 1)}
    for split in ("train", "val"):
        dataset = PairsDataset(config, split, augment=False)
        items = [dataset[i] for i in range(len(dataset))]
        for key in ("image", "background", "mask"):
            arrays[f"{split}_{key}"] = (torch.stack([it[key] for it in items]) * 255).round().to(torch.uint8).numpy()
        for key in ("seg", "bg_seg"):
            arrays[f"{split}_{key}"] = torch.stack([it[key] for it in items]).to(torch.uint8).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


def _child(name: str, data: Path, steps: int, device: str, max_seconds: float) -> dict:
    import lightning as L
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from components.inpainting import InpaintingConfig
    from components.masks import canny_edges, to_gray
    from components.metrics import psnr
    from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig, telea_fill

    recipe = {**BASE, **RECIPES[name]}
    packed = np.load(data)
    num_classes = int(packed["num_classes"])

    class Packed(Dataset):
        def __init__(self, split: str, flip: bool):
            self.arrays = {k: packed[f"{split}_{k}"] for k in ("image", "background", "mask", "seg", "bg_seg")}
            self.flip, self.draws = flip, 0

        def __len__(self) -> int:
            return len(self.arrays["image"])

        def __getitem__(self, i: int) -> dict:
            item = {k: torch.from_numpy(v[i].copy()) for k, v in self.arrays.items()}
            if self.flip and np.random.default_rng([0, i, self.draws]).random() < 0.5:
                item = {k: v.flip(-1) for k, v in item.items()}
            self.draws += 1
            out = {k: item[k].float() / 255 for k in ("image", "background", "mask")}
            out.update(seg=item["seg"].long(), bg_seg=item["bg_seg"].long())
            for key, src in (("edges", "image"), ("bg_edges", "background")):
                gray = to_gray(np.ascontiguousarray(item[src].permute(1, 2, 0).numpy()))
                out[key] = torch.from_numpy(canny_edges(gray, 1.0))[None]
            return out

    val = next(iter(DataLoader(Packed("val", False), batch_size=200)))
    val = {k: v.to(device) for k, v in val.items()}
    telea = psnr(telea_fill(val["image"], val["mask"]), val["background"], mask=val["mask"]).nanmean().item()
    curve: list[dict] = []

    class Score(L.Callback):
        def on_train_start(self, trainer, module):
            self.on_train_batch_end(trainer, module, None, None, 0)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            step = trainer.global_step // 6  # six optimizers step per update
            if step in MILESTONES and (not curve or curve[-1]["updates"] != step):
                module.eval()
                with torch.no_grad():
                    fake = module._generate(val)
                module.train()
                curve.append({"updates": step, "seconds": round(time.perf_counter() - start, 1),
                              "psnr_mask": round(psnr(fake["composite"], val["background"], mask=val["mask"])
                                                 .nanmean().item(), 3),
                              "psnr": round(psnr(fake["composite"], val["background"]).mean().item(), 3)})
                print(name, curve[-1], flush=True)
            if time.perf_counter() - start > max_seconds:  # a time box for shared machines: report what we have
                trainer.should_stop = True

    L.seed_everything(0, verbose=False)
    config = InpaintingConfig(num_classes, recipe["width"], 4, 2, 16, recipe["hole_fill"], recipe["image_head"])
    optim = OptimConfig(recipe["lr"], 0.1, tuple(recipe["betas"]), recipe["schedule"])
    module = InpainterModule(config, LossWeights(**recipe["losses"]), optim)
    loader = DataLoader(Packed("train", True), batch_size=8, shuffle=True, drop_last=True, num_workers=1,
                        persistent_workers=True, generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=6 * steps,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Score()])
    start = time.perf_counter()
    trainer.fit(module, loader)
    return {"recipe": name, **recipe, "telea_psnr_mask": round(telea, 3), "curve": curve}


def run(args: argparse.Namespace) -> None:
    names = args.recipes or list(RECIPES)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS=str(args.threads))
    procs = {}
    for name in names:
        cmd = [sys.executable, __file__, "child", name, "--data", str(args.data), "--steps", str(args.steps),
               "--device", args.device, "--max-seconds", str(args.max_seconds)]
        procs[name] = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env=env)
    rows = []
    for name, proc in procs.items():
        out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            print(f"{name} failed:\n{err[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(lines[-1]))
    for row in rows:
        curve = " ".join(f"{p['updates']}:{p['psnr_mask']:.2f}" for p in row["curve"])
        print(f"{row['recipe']:32s} telea {row['telea_psnr_mask']:.2f} | {curve}")
    import torch

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {os.cpu_count()} cores"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device, "batch": 8, "image_size": 64, "rows": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["pack", "run", "child"])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--data", type=Path, default=PACKED)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-seconds", type=float, default=1e9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipes", nargs="*")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inpainter_recipes.json")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data)
    elif args.command == "child":
        print(json.dumps(_child(args.name, args.data, args.steps, args.device, args.max_seconds)))
    else:
        run(args)


if __name__ == "__main__":
    main()
