"""python benchmarks/synthesis_throughput.py [--pairs 800] [--root data/scenes]

Synthesis throughput (pairs/s) per worker count, against a plain loop that only reads the same
two source images per pair and writes five PNGs of the same size (the I/O floor of the five files the
stage wrote when this was measured; it now also writes two 16-bit instance maps), plus peak
memory (RSS of the stage process and its workers). Each configuration runs the real stage entry
point in a subprocess, at N and at 4N pairs: the steady rate is 3N / (t(4N) - t(N)), which removes
start-up (imports, COCO index, annotation checks), and the peak RSS at 4N vs N shows memory is flat. Results go to
`benchmarks/results/synthesis_throughput.json` and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run_stage(params: dict, workdir: Path) -> tuple[float, float]:
    """Run the synthesize stage on `params`; returns (seconds, peak RSS in MiB of the process tree)."""
    params_file = workdir / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.stages.synthesize", "--params", str(params_file)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr.read().decode()[-2000:])
    return seconds, peak / 2**20


def _plain_loop(pairs_dir: Path, root: Path, images: str, size: int, out: Path) -> tuple[float, int]:
    """Read each pair's two source images, resize the background, write five PNGs: no synthesis."""
    records = [json.loads(line) for line in (pairs_dir / "train" / "manifest.jsonl").read_text().splitlines()]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, record in enumerate(records):
        obj = cv2.imread(str(root / images / record["object"]["file_name"]))
        bg = cv2.resize(cv2.imread(str(root / images / record["background"]["file_name"])), (size, size))
        assert obj is not None
        gray = cv2.cvtColor(bg, cv2.COLOR_BGR2GRAY)
        for kind, array in (("i", bg), ("g", bg), ("m", gray), ("s", gray), ("b", gray)):
            cv2.imwrite(str(out / f"{i:06d}_{kind}.png"), array)
    return time.perf_counter() - start, len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=800)
    parser.add_argument("--root", default="data/scenes", help="a COCO-format root (run `dvc repro scenes` first)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "synthesis_throughput.json"))
    args = parser.parse_args()
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    root = (REPO / args.root).resolve()
    if not (root / base["dataset"]["instances"]).is_file():
        sys.exit(f"no COCO root at {root}: run `dvc repro scenes` first or pass --root")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def params_for(name: str, pairs: int, workers: int) -> dict:
            raw = json.loads(json.dumps(base))
            raw["paths"] = {"scenes": str(root), "pairs": str(tmp / name / "pairs"), "reports": str(tmp / name / "r")}
            raw["dataset"]["root"] = str(root)
            raw["synthesize"].update(workers=workers, pairs={"train": pairs, "val": 0, "test": 0})
            (tmp / name).mkdir()
            return raw

        for workers in args.workers:
            t1, peak1 = _run_stage(params_for(f"w{workers}", args.pairs, workers), tmp / f"w{workers}")
            t4, peak4 = _run_stage(params_for(f"w{workers}x4", 4 * args.pairs, workers), tmp / f"w{workers}x4")
            rows.append({"config": f"synthesize, {workers} worker(s)", "seconds_N": round(t1, 2),
                         "seconds_4N": round(t4, 2), "startup_s": round(t1 - (t4 - t1) / 3, 2),
                         "pairs_per_s": round(3 * args.pairs / (t4 - t1), 1),
                         "peak_rss_mib_N": round(peak1, 1), "peak_rss_mib_4N": round(peak4, 1)})
        size = base["synthesize"]["image_size"]
        seconds, count = _plain_loop(tmp / "w1" / "pairs", root, base["dataset"]["images"], size, tmp / "plain")
        plain = round(count / seconds, 1)
    one = rows[0]["pairs_per_s"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "image_size": size,
        "pairs_N": args.pairs,
        "rows": rows,
        "plain_loop_pairs_per_s": plain,
        "synthesize_1_worker_vs_plain_loop": round(one / plain, 3),
        "speedup_by_workers": {r["config"]: round(r["pairs_per_s"] / one, 2) for r in rows},
        "peak_rss_4N_vs_N": {r["config"]: round(r["peak_rss_mib_4N"] / r["peak_rss_mib_N"], 3) for r in rows},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'config':28s} {'pairs/s':>8s} {'start-up s':>10s} {'RSS MiB N':>10s} {'RSS MiB 4N':>10s}")
    for r in rows:
        print(f"{r['config']:28s} {r['pairs_per_s']:8.1f} {r['startup_s']:10.2f} {r['peak_rss_mib_N']:10.1f} "
              f"{r['peak_rss_mib_4N']:10.1f}")
    print(f"{'plain read/write loop':28s} {plain:8.1f}")
    print(f"synthesize (1 worker) / plain loop = {result['synthesize_1_worker_vs_plain_loop']}; "
          f"speed-up by workers {result['speedup_by_workers']}; peak RSS 4N/N {result['peak_rss_4N_vs_N']}")

if __name__ == "__main__":
    main()
