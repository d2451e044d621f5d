"""python benchmarks/stage_throughput.py [--stages ...] [--variants ...] [--steps 12] [--set KEY=VALUE ...]

Training throughput of each training stage as the stage runs it: the Lightning module, data module and
batch size its `build(params)` makes from params.yaml, on the real pairs in `paths.pairs` (run `dvc repro
synthesize` first), in a Trainer with no validation, logger or checkpoints. One subprocess per stage and
variant (its own peak RSS, no compile cache carried over); each times `--steps` steps after 3 warm-up steps
and reports the median seconds per step, images/s and peak RSS.

Variants (every other setting from params.yaml):
    fp32              trainer.channels_last: [] and precision 32-true
    cl_segmenter      channels_last: [segmenter]              (the CPU default)
    cl_all            channels_last: [segmenter, inpainter]
    compile           the default's layout, every network through torch.compile
    bf16              the default's layout, precision bf16-mixed (autocast)
    default           params.yaml as it stands: its layout and the stage's `precision` (`auto` resolved)

`finetune_joint` starts from the pretrained checkpoints when they exist (else fresh weights: the timing
differs only where no instance is found). Results: benchmarks/results/stage_throughput.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STAGES = ("pretrain_segmenter", "pretrain_inpainter", "finetune_joint")
VARIANTS = {"fp32": ([], "32-true", False), "cl_segmenter": (["segmenter"], "32-true", False),
            "cl_all": (["segmenter", "inpainter"], "32-true", False),
            "compile": (["segmenter"], "32-true", True), "bf16": (["segmenter"], "bf16-mixed", False),
            "default": (None, None, False)}
WARMUP = 3


def _params(overrides: list[str], variant: str, stage: str):
    """params.yaml with `--set` overrides and the variant's layout and the stage's precision
    (joint_gradients.overridden); `default` is params.yaml as it stands."""
    from benchmarks.joint_gradients import overridden

    if variant == "default":
        return overridden(str(REPO / "params.yaml"), overrides)
    channels_last, precision, _ = VARIANTS[variant]
    return overridden(str(REPO / "params.yaml"), [*overrides, f"trainer.channels_last={json.dumps(channels_last)}",
                                                  f"{stage}.precision={precision}"])


def _child(stage: str, variant: str, steps: int, overrides: list[str]) -> dict:
    import importlib

    import lightning as L
    import torch

    from benchmarks.training_throughput import _compile_networks
    from pipelines.training.harness import resolve_precision

    params = _params(overrides, variant, stage)
    precision = resolve_precision(getattr(params, stage).precision, params.trainer.accelerator)
    module = importlib.import_module(f"pipelines.stages.{stage}")
    if stage == "finetune_joint":
        pretrained = Path(params.paths.segmenter, "best.ckpt").is_file() and Path(
            params.paths.inpainter, "best.ckpt").is_file()
        fit = module.build(params, load_weights=pretrained)
    else:
        fit = module.build(params)
    if VARIANTS[variant][2]:
        _compile_networks(fit.module)

    class Timer(L.Callback):
        def __init__(self):
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module):
            self.starts.append(time.perf_counter())

    timer = Timer()
    trainer = L.Trainer(accelerator=params.trainer.accelerator, devices=1, precision=precision,
                        max_epochs=1, limit_train_batches=WARMUP + steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer])
    started = time.perf_counter()
    trainer.fit(fit.module, fit.data)
    wall = time.perf_counter() - started
    durations = [b - a for a, b in zip(timer.starts[WARMUP:], timer.starts[WARMUP + 1:])]
    step = statistics.median(durations)
    batch = fit.data.batch_size
    return {"stage": stage, "variant": variant, "image_size": params.networks.image_size, "batch": batch,
            "threads": torch.get_num_threads(), "num_workers": fit.data.num_workers,
            "channels_last": params.trainer.channels_last, "precision": precision,
            "compile": VARIANTS[variant][2], "timed_steps": len(durations), "median_s_per_step": round(step, 4),
            "images_per_s": round(batch / step, 2), "fit_wall_s": round(wall, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "overrides": overrides}


def _cpu_capability() -> str:
    """The vector ISA PyTorch's CPU kernels use here (AVX2, AVX512, ...); bf16 is fast only with AVX512-BF16."""
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return torch.backends.cpu.get_cpu_capability() + (" with avx512_bf16" if "avx512_bf16" in flags else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", choices=STAGES, nargs="+", default=list(STAGES))
    parser.add_argument("--variants", choices=list(VARIANTS), nargs="+", default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml value changed for every row, e.g. pretrain_inpainter.batch_size=16")
    parser.add_argument("--label", default=None, help="name of this run in the results file (default: the --set list)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "stage_throughput.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child, args.steps, args.overrides)), flush=True)
        return
    rows = []
    for stage in args.stages:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", stage, variant, "--steps", str(args.steps)]
            for item in args.overrides:
                cmd += ["--set", item]
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                  env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
            found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not found:
                print(f"{stage} {variant} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            rows += found
            r = found[0]
            print(f"{stage:20s} {variant:13s} batch {r['batch']:3d}: {r['median_s_per_step']:.3f} s/step, "
                  f"{r['images_per_s']:7.2f} img/s, peak {r['peak_rss_mib']:7.1f} MiB", flush=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    label = args.label or (",".join(args.overrides) or "params.yaml")
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}"
    results.setdefault("runs", {})[label] = {"command": " ".join(sys.argv), "cpu_capability": _cpu_capability(),
                                             "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
