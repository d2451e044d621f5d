"""python benchmarks/load_test.py [--model models/onnx] [--clients 16] [--seconds 60] [--size 512]

A load test of the real service on loopback: `bentoml serve serving.service:ObjectRemoval` in a
subprocess (its model imported from `--model` into a temporary BentoML store), then `--clients`
concurrent clients post `/remove` requests (test scenes of the built-in data at `--size` px, PNG,
the default target) back to back for `--seconds`. Reports throughput, p50 / p90 / p99 latency, the
count of each status code (zero 5xx is required), and the server's resident memory (its whole process
tree) before the load, after it, and at its peak (sampled every 0.5 s). A few malformed requests are
mixed in (`--bad-share`) to show that bad input under load is answered 4xx and costs nothing else.
Writes benchmarks/results/load_test.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mib(process: psutil.Process) -> float:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def scene_pngs(pairs: Path, size: int, count: int) -> list[bytes]:
    files = sorted((pairs / "test" / "images").glob("*.png"))[:count]
    if not files:
        raise FileNotFoundError(f"no test pairs in {pairs}/test/images (run `dvc repro synthesize`)")
    return [cv2.imencode(".png", cv2.resize(cv2.imread(str(f)), (size, size), interpolation=cv2.INTER_CUBIC))[1]
            .tobytes() for f in files]


def client(url: str, bodies: list[bytes], stop: float, bad_every: int, out: list, lock: threading.Lock) -> None:
    with httpx.Client(timeout=120) as http:
        i = 0
        while time.perf_counter() < stop:
            bad = bad_every and i % bad_every == bad_every - 1
            files = {"image": ("x.png", b"not an image" if bad else bodies[i % len(bodies)], "image/png")}
            start = time.perf_counter()
            try:
                status = http.post(f"{url}/remove", files=files).status_code
            except httpx.HTTPError as err:
                status = type(err).__name__
            with lock:
                out.append((status, time.perf_counter() - start, bool(bad)))
            i += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", default="models/onnx")
    parser.add_argument("--pairs", default="data/pairs")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--bad-share", type=float, default=0.05, help="share of malformed requests")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/load_test.json"))
    args = parser.parse_args()

    bodies = scene_pngs(Path(args.pairs), args.size, 10)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "serving.store", args.model], env=env, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        server = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "serving.service:ObjectRemoval",
                                   "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError("the service did not become ready in 120 s")
            process = psutil.Process(server.pid)
            httpx.post(f"{url}/remove", files={"image": ("x.png", bodies[0], "image/png")}, timeout=120)  # warm-up
            rss_before = tree_rss_mib(process)
            results: list = []
            lock = threading.Lock()
            bad_every = round(1 / args.bad_share) if args.bad_share > 0 else 0
            stop = time.perf_counter() + args.seconds
            threads = [threading.Thread(target=client, args=(url, bodies, stop, bad_every, results, lock))
                       for _ in range(args.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            peak = rss_before
            while any(t.is_alive() for t in threads):
                peak = max(peak, tree_rss_mib(process))
                time.sleep(0.5)
            elapsed = time.perf_counter() - start
            rss_after = tree_rss_mib(process)
            alive = server.poll() is None and httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        finally:
            server.terminate()
            server.wait(30)
    good = [seconds for status, seconds, bad in results if status == 200 and not bad]
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ordered = sorted(good)

    def pct(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "clients": args.clients,
        "seconds": round(elapsed, 1), "image_size": args.size, "requests": len(results),
        "removals_per_s": round(len(good) / elapsed, 2), "latency_ms": {
            "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
            "mean": round(1000 * statistics.mean(good), 1) if good else None},
        "status_counts": statuses,
        "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "transport_errors": sum(n for s, n in statuses.items() if not s.isdigit()),
        "server_rss_mib": {"before": round(rss_before, 1), "after": round(rss_after, 1), "peak": round(peak, 1)},
        "server_alive_after": alive,
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["server_errors_5xx"] == 0 and result["transport_errors"] == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
