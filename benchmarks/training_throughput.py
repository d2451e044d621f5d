"""python benchmarks/training_throughput.py [--steps 6] [--only default|paper] [--device cpu|cuda]

Training throughput (images/s) and peak memory of each training module's real step (the Lightning
modules the stages use, on random tensors so no data is read), at the CPU default profile (64 px,
narrow networks, params.yaml) and at the paper's size (256 px, EdgeConnect widths: 64, 8 residual
blocks, discriminator 64; segmenter width 32, depth 4). Each configuration runs in its own
subprocess, so peak RSS (CPU) or peak CUDA memory is its own. On a GPU, `--precision bf16-mixed`
and `--channels-last` select those variants. Results go to benchmarks/results/training_throughput*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 11  # the built-in dataset: 10 categories + unlabeled
CONFIGS = {
    "default": {"size": 64, "seg": (16, 3), "inp": (16, 4, 16), "batch": {"segmenter": 16, "inpainter": 8}},
    "paper": {"size": 256, "seg": (32, 4), "inp": (64, 8, 64), "batch": {"segmenter": 4, "inpainter": 2}},
}


def _one(module_name: str, profile: str, steps: int, device: str, precision: str, channels_last: bool) -> dict:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from components.inpainting import InpaintingSizes
    from components.segmenter import SegmenterConfig
    from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig
    from pipelines.training.segmenter_module import SegmenterModule

    cfg = CONFIGS[profile]
    size, batch = cfg["size"], cfg["batch"][module_name]

    class Random(Dataset):
        def __len__(self) -> int:
            return batch * (steps + 2)

        def __getitem__(self, i: int) -> dict:
            g = torch.Generator().manual_seed(i)
            mask = torch.zeros(1, size, size)
            mask[:, size // 4 : size // 2, size // 4 : 3 * size // 4] = 1
            image, background = torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g)
            return {"image": image, "background": background,
                    "mask": mask, "seg": torch.randint(0, NUM_CLASSES, (size, size), generator=g),
                    "bg_seg": torch.randint(0, NUM_CLASSES, (size, size), generator=g),
                    "edges": (torch.rand(1, size, size, generator=g) > 0.9).float(),
                    "bg_edges": (torch.rand(1, size, size, generator=g) > 0.9).float()}

    if module_name == "segmenter":
        module = SegmenterModule(SegmenterConfig(NUM_CLASSES, *cfg["seg"]), [1], 1e-3, 0.0)
    else:
        w, blocks, dw = cfg["inp"]
        module = InpainterModule(InpaintingSizes(NUM_CLASSES, w, blocks, 2, dw), LossWeights(), OptimConfig())
    if channels_last:
        module = module.to(memory_format=torch.channels_last)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:  # skip warm-up steps
                if device == "cuda":
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            if device == "cuda":
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    trainer = L.Trainer(accelerator=device, devices=1, precision=precision, max_steps=-1, max_epochs=1,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, DataLoader(Random(), batch_size=batch))
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"module": module_name, "profile": profile, "image_size": size, "batch": batch, "device": device,
            "precision": precision, "channels_last": channels_last, "timed_steps": steps,
            "images_per_s": round(batch * steps / timer.seconds, 2), "peak_memory_mib": round(peak / 2**20, 1),
            "parameters_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--only", choices=list(CONFIGS), nargs="+", default=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one(*args.child, args.steps, args.device, args.precision, args.channels_last)))
        return
    rows = []
    for profile in args.only:
        for module in ("segmenter", "inpainter"):
            cmd = [sys.executable, __file__, "--child", module, profile, "--steps", str(args.steps),
                   "--device", args.device, "--precision", args.precision]
            cmd += ["--channels-last"] if args.channels_last else []
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                  env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
            if done.returncode:
                raise RuntimeError(done.stderr[-3000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{profile:8s} {module:10s} {r['image_size']:4d}px batch {r['batch']:2d}: "
                  f"{r['images_per_s']:8.2f} img/s, peak {r['peak_memory_mib']:8.1f} MiB, {r['parameters_m']} M params")
    suffix = "" if args.device == "cpu" else f"_{args.device}_{args.precision}" + ("_cl" if args.channels_last else "")
    out = REPO / "benchmarks" / "results" / f"training_throughput{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
