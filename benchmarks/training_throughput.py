"""python benchmarks/training_throughput.py [--steps 6] [--only default cpu128 paper] [--device cpu|cuda]
    [--variants fp32 fp32_channels_last fp32_compile bf16 ...] [--threads N]

Training throughput (images/s) and peak memory of each training module's real step (the Lightning
modules the stages use: segmenter, inpainters, and the joint segmenter -> inpainters step), on random
tensors so no data is read, at the CPU default profile (64 px, narrow networks, params.yaml), at
128 px with the same networks (`cpu128`: the scenes' own size), and at the paper's size (256 px,
EdgeConnect widths: 64, 8 residual blocks, discriminator 64; segmenter width 32, depth 4). Each module
x profile runs in its own subprocess, so peak RSS (CPU) is its own; on the CPU the variants (fp32,
channels-last, torch.compile, bf16 autocast) run one after the other in it.

On a GPU every variant in `--variants` runs in that subprocess one after the other (peak CUDA memory
is reset between them): fp32, bf16-mixed, bf16 + channels-last, bf16 + torch.compile of every
network. FLOPs of one training step (forward and backward of every network, discriminator updates
included) are counted once with torch's FlopCounterMode, so each row also gives achieved TFLOP/s and
its share of the GPU's peak (`--peak-tflops`; H100 SXM: 989 dense bf16, 495 TF32, which cuDNN uses for
fp32 convolutions by default). Results go to benchmarks/results/training_throughput[_cuda].json.
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
sys.path.insert(0, str(REPO))
NUM_CLASSES = 11  # the built-in dataset: 10 categories + unlabeled
CONFIGS = {
    "default": {"size": 64, "seg": (16, 3), "inp": (16, 4, 16),
                "batch": {"segmenter": 16, "inpainter": 8, "joint": 8}},
    "cpu128": {"size": 128, "seg": (16, 3), "inp": (16, 4, 16),
               "batch": {"segmenter": 16, "inpainter": 8, "joint": 8}},
    "paper": {"size": 256, "seg": (32, 4), "inp": (64, 8, 64), "batch": {"segmenter": 4, "inpainter": 2, "joint": 2}},
}
MODULES = ("segmenter", "inpainter", "joint")
VARIANTS = {"fp32": ("32-true", False, False), "fp32_channels_last": ("32-true", True, False),
            "fp32_compile": ("32-true", False, True), "bf16": ("bf16-mixed", False, False),
            "bf16_channels_last": ("bf16-mixed", True, False), "bf16_compile": ("bf16-mixed", False, True)}
PEAK_TFLOPS = {"32-true": 495.0, "bf16-mixed": 989.0}  # H100 SXM dense: TF32, bf16


def _module(name: str, profile: str):
    from components.inpainting import InpaintingConfig
    from components.segmenter import SegmenterConfig
    from pipelines.training.inpainter_module import InpainterModule, LossWeights, OptimConfig
    from pipelines.training.joint_module import JointConfig, JointModule
    from pipelines.training.segmenter_module import SegmenterModule

    cfg = CONFIGS[profile]
    w, blocks, dw = cfg["inp"]
    inpainting = InpaintingConfig(NUM_CLASSES, w, blocks, 2, dw, "smooth", "residual01")
    segmenter = SegmenterConfig(NUM_CLASSES, *cfg["seg"])
    if name == "segmenter":
        return SegmenterModule(segmenter, [1], 1e-3, 0.0)
    if name == "inpainter":
        return InpainterModule(inpainting, LossWeights(), OptimConfig())
    return JointModule(inpainting, segmenter, JointConfig((1,)), LossWeights(), OptimConfig())


def _compile_networks(module) -> None:
    """torch.compile each network (the step logic has CPU work, instance selection, that stays eager)."""
    import torch

    for owner in (module, getattr(module, "nets", None), getattr(module, "discs", None)):
        if owner is None:
            continue
        for child in ("net", "segmenter", "edge", "seg", "image"):
            if isinstance(getattr(owner, child, None), torch.nn.Module) and not isinstance(
                    getattr(owner, child), torch.nn.ModuleList):
                setattr(owner, child, torch.compile(getattr(owner, child)))


def _fit(module, batch: int, size: int, steps: int, device: str, precision: str, warmup: int = 2) -> float:
    """Seconds for `steps` training steps after `warmup` steps (warm-up and compilation)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from pipelines.data import RandomPairs

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            if device == "cuda":
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                        max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, DataLoader(RandomPairs(size, batch * (steps + warmup), NUM_CLASSES), batch_size=batch,
                                   num_workers=2 if device == "cuda" else 0))
    return timer.seconds


def _step_flops(name: str, profile: str, batch: int, device: str) -> int:
    """FLOPs of one training step of a fresh module (fp32, counted by torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        _fit(_module(name, profile), batch, CONFIGS[profile]["size"], 1, device, "32-true", warmup=0)
    return counter.get_total_flops()


def _child(name: str, profile: str, steps: int, device: str, variants: list[str], batch: int | None,
           threads: int | None = None) -> list[dict]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    cfg = CONFIGS[profile]
    size, batch = cfg["size"], batch or cfg["batch"][name]
    flops = _step_flops(name, profile, batch, device) if device == "cuda" else None
    rows = []
    for variant in variants:
        precision, channels_last, compiled = VARIANTS[variant]
        torch.manual_seed(0)
        module = _module(name, profile)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        if compiled:
            _compile_networks(module)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = _fit(module, batch, size, steps, device, precision)
        peak = (torch.cuda.max_memory_allocated() if device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        row = {"module": name, "profile": profile, "image_size": size, "batch": batch, "device": device,
               "threads": torch.get_num_threads(),
               "variant": variant, "precision": precision, "channels_last": channels_last, "compile": compiled,
               "timed_steps": steps, "images_per_s": round(batch * steps / seconds, 2),
               "peak_memory_mib": round(peak / 2**20, 1),
               "parameters_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 3)}
        if flops:
            achieved = flops * steps / seconds / 1e12
            row.update(step_gflops=round(flops / 1e9, 2), achieved_tflops=round(achieved, 2),
                       peak_share=round(achieved / PEAK_TFLOPS[precision], 4))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--only", choices=list(CONFIGS), nargs="+", default=list(CONFIGS))
    parser.add_argument("--modules", choices=MODULES, nargs="+", default=list(MODULES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", choices=list(VARIANTS), nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=None, help="override the profile's batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = args.variants or (["fp32"] if args.device == "cpu" else list(VARIANTS))
    if args.child:
        _child(*args.child, args.steps, args.device, variants, args.batch, args.threads)
        return
    rows = []
    for profile in args.only:
        for module in args.modules:
            cmd = [sys.executable, __file__, "--child", module, profile, "--steps", str(args.steps),
                   "--device", args.device, "--variants", *variants]
            cmd += ["--batch", str(args.batch)] if args.batch else []
            cmd += ["--threads", str(args.threads)] if args.threads else []
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                  env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
            found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode:
                print(f"{profile} {module} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            rows += found
            for r in found:
                extra = (f", {r['achieved_tflops']} TFLOP/s ({100 * r['peak_share']:.2f} % of peak)"
                         if "peak_share" in r else "")
                print(f"{profile:8s} {module:10s} {r['variant']:18s} {r['image_size']:4d}px batch {r['batch']:3d}: "
                      f"{r['images_per_s']:9.2f} img/s, peak {r['peak_memory_mib']:8.1f} MiB{extra}", flush=True)
    device = "cpu"
    if args.device == "cuda":
        import torch

        device = torch.cuda.get_device_name()
    suffix = "" if args.device == "cpu" else "_cuda"
    out = args.out or REPO / "benchmarks" / "results" / f"training_throughput{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {device}"
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
