"""python benchmarks/inference_latency.py [--model models/onnx] [--checkpoint models/joint] [--repeats 30]

Latency of one removal (components.inference: segment, select, windows, refine, edges, inpaint,
composite) on photos of 256 x 256 and 512 x 512 pixels, PyTorch vs ONNX Runtime, in one run on the same
images: median and p90 over `--repeats` calls after warm-up, the share of it spent in the networks
(the backend's two calls), and the ratio PyTorch / ONNX Runtime. The photos are test scenes of the
built-in data scaled up, so the default target (person) is found and filled. Both engines use the
same number of threads. Writes benchmarks/results/inference_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Timed:
    """Wraps a backend and adds up the seconds spent in its calls."""

    def __init__(self, backend):
        self.backend, self.name, self.seconds = backend, backend.name, 0.0

    def segment(self, image):
        start = time.perf_counter()
        out = self.backend.segment(image)
        self.seconds += time.perf_counter() - start
        return out

    def probabilities(self, image):
        return self.segment(image)[0]

    def fill(self, *arrays):
        start = time.perf_counter()
        out = self.backend.fill(*arrays)
        self.seconds += time.perf_counter() - start
        return out


def photos(pairs: Path, size: int, count: int) -> list[np.ndarray]:
    files = sorted((pairs / "test" / "images").glob("*.png"))[:count]
    if not files:
        raise FileNotFoundError(f"no test pairs in {pairs}/test/images (run `dvc repro synthesize`)")
    return [cv2.resize(cv2.imread(str(f))[..., ::-1], (size, size), interpolation=cv2.INTER_CUBIC) for f in files]


def measure(remover, images: list[np.ndarray], repeats: int) -> dict:
    timed = Timed(remover.backend)
    remover.backend = timed
    for image in images[:3]:
        remover.remove(image)  # warm-up: sessions allocate, PyTorch picks kernels
    seconds, networks = [], []
    for i in range(repeats):
        timed.seconds = 0.0
        start = time.perf_counter()
        remover.remove(images[i % len(images)])
        seconds.append(time.perf_counter() - start)
        networks.append(timed.seconds)
    remover.backend = timed.backend
    ordered = sorted(seconds)
    return {"median_ms": round(1000 * statistics.median(seconds), 2),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2),
            "networks_share": round(sum(networks) / sum(seconds), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", default="models/onnx")
    parser.add_argument("--checkpoint", default="models/joint")
    parser.add_argument("--pairs", default="data/pairs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/inference_latency.json"))
    args = parser.parse_args()

    import torch

    from pipelines.predict import load_remover

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    removers = {"onnx": load_remover(args.model, "onnx"), "torch": load_remover(args.checkpoint, "torch")}
    rows = []
    for size in args.sizes:
        images = photos(Path(args.pairs), size, 10)
        found = [int(removers["onnx"].remove(i).mask.sum()) for i in images]
        row = {"size": size, "images": len(images), "mean_removed_pixels": round(float(np.mean(found)))}
        for name, remover in removers.items():
            row[name] = measure(remover, images, args.repeats)
        row["torch_vs_onnx_latency"] = round(row["torch"]["median_ms"] / row["onnx"]["median_ms"], 2)
        rows.append(row)
        print(json.dumps(row))
    import onnxruntime as ort

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": args.threads,
              "working_resolution": removers["onnx"].image_size, "torch": torch.__version__,
              "onnxruntime": ort.__version__, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
