"""python benchmarks/synthesis_throughput.py [--pairs 800] [--root data/scenes]

Synthesis throughput (pairs/s) per worker count, against a plain loop that only reads the same
two source images per pair and writes five PNGs of the same size (the I/O floor), plus peak
memory (RSS of the stage process and its workers) at N and 4N pairs, to show it stays flat.
Each configuration runs the real stage entry point in a subprocess. Results go to
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
            seconds, peak = _run_stage(params_for(f"w{workers}", args.pairs, workers), tmp / f"w{workers}")
            rows.append({"config": f"synthesize, {workers} worker(s)", "pairs": args.pairs, "seconds": round(seconds, 2),
                         "pairs_per_s": round(args.pairs / seconds, 1), "peak_rss_mib": round(peak, 1)})
        seconds, peak = _run_stage(params_for("big", 4 * args.pairs, 1), tmp / "big")
        rows.append({"config": "synthesize, 1 worker, 4x pairs", "pairs": 4 * args.pairs, "seconds": round(seconds, 2),
                     "pairs_per_s": round(4 * args.pairs / seconds, 1), "peak_rss_mib": round(peak, 1)})
        size = base["synthesize"]["image_size"]
        seconds, count = _plain_loop(tmp / "w1" / "pairs", root, base["dataset"]["images"], size, tmp / "plain")
        rows.append({"config": "plain read/write loop (I/O floor)", "pairs": count, "seconds": round(seconds, 2),
                     "pairs_per_s": round(count / seconds, 1), "peak_rss_mib": None})
    plain = rows[-1]["pairs_per_s"]
    one = rows[0]["pairs_per_s"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "image_size": size,
        "rows": rows,
        "synthesize_1_worker_vs_plain_loop": round(one / plain, 3),
        "speedup_by_workers": {r["config"]: round(r["pairs_per_s"] / one, 2) for r in rows[: len(args.workers)]},
        "peak_rss_4x_vs_1x": round(rows[len(args.workers)]["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3),
        "note": "pairs/s include process start and COCO index loading (about a second)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'config':40s} {'pairs':>6s} {'s':>7s} {'pairs/s':>8s} {'peak MiB':>9s}")
    for r in rows:
        print(f"{r['config']:40s} {r['pairs']:6d} {r['seconds']:7.2f} {r['pairs_per_s']:8.1f} {str(r['peak_rss_mib']):>9s}")
    print(f"synthesize (1 worker) / plain loop = {result['synthesize_1_worker_vs_plain_loop']}; "
          f"peak RSS at 4x pairs / 1x = {result['peak_rss_4x_vs_1x']}")


if __name__ == "__main__":
    main()
