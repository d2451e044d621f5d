"""python benchmarks/load_test.py [--model models/onnx] [--clients 64] [--seconds 60] [--size 512] [--label NAME]

A load test of the real service on loopback: `bentoml serve serving.service:ObjectRemoval` in a
subprocess (its model imported from `--model` into a temporary BentoML store), then `--clients`
concurrent clients post `/remove` requests (test scenes of the built-in data at `--size` px, PNG,
the default target) back to back for `--seconds`. Reports throughput, p50 / p90 / p99 latency, the
count of each status code (zero 5xx is required), the refusals (429 "busy") and whether each one came
after the request had waited the queue's bound (`OBJREMOVAL_QUEUE_TIMEOUT`, 30 s) or because the queue
was full (`OBJREMOVAL_MAX_QUEUE`, 64), and the server's resident memory (its whole process tree) after a
warm-up (`--warmup` s), at the end and at its peak, with a sample every `--sample` s: its growth after
the warm-up is the leak check. A few malformed requests are mixed in (`--bad-share`) to show that bad
input under load is answered 4xx and costs nothing else. Writes benchmarks/results/load_test.json, one
record per `--label`.
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


def client(url: str, bodies: list[bytes], stop: float, bad_every: int, out: list, refusals: list,
           lock: threading.Lock) -> None:
    with httpx.Client(timeout=120) as http:
        i = 0
        while time.perf_counter() < stop:
            bad = bad_every and i % bad_every == bad_every - 1
            files = {"image": ("x.png", b"not an image" if bad else bodies[i % len(bodies)], "image/png")}
            start = time.perf_counter()
            try:
                response = http.post(f"{url}/remove", files=files)
                status = response.status_code
            except httpx.HTTPError as err:
                status, response = type(err).__name__, None
            seconds = time.perf_counter() - start
            with lock:
                out.append((status, seconds, bool(bad)))
                if status == 429:
                    refusals.append({"seconds": round(seconds, 2), "retry_after": response.headers.get("Retry-After"),
                                     "queue_full": "already waiting" in response.json().get("error", "")})
            i += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", default="models/onnx")
    parser.add_argument("--pairs", default="data/pairs")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--bad-share", type=float, default=0.05, help="share of malformed requests")
    parser.add_argument("--warmup", type=float, default=30, help="seconds of load before the memory baseline")
    parser.add_argument("--sample", type=float, default=10, help="seconds between memory samples")
    parser.add_argument("--queue-timeout", type=int, default=30, help="the server's OBJREMOVAL_QUEUE_TIMEOUT")
    parser.add_argument("--label", default="64 clients, 60 s")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/load_test.json"))
    args = parser.parse_args()

    bodies = scene_pngs(Path(args.pairs), args.size, 10)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OBJREMOVAL_")}, "BENTOML_HOME": home,
               "BENTOML_DO_NOT_TRACK": "true", "OBJREMOVAL_QUEUE_TIMEOUT": str(args.queue_timeout)}
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
            refusals: list = []
            lock = threading.Lock()
            bad_every = round(1 / args.bad_share) if args.bad_share > 0 else 0
            stop = time.perf_counter() + args.seconds
            threads = [threading.Thread(target=client, args=(url, bodies, stop, bad_every, results, refusals, lock))
                       for _ in range(args.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            peak, samples, baseline, next_sample = rss_before, [], None, start
            while any(t.is_alive() for t in threads):
                rss, now = tree_rss_mib(process), time.perf_counter()
                peak = max(peak, rss)
                if baseline is None and now - start >= args.warmup:
                    baseline = rss
                if now >= next_sample:
                    samples.append((round(now - start), round(rss, 1)))
                    next_sample += args.sample
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
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average_1m_end": round(os.getloadavg()[0], 2),
        "clients": args.clients,
        "seconds": round(elapsed, 1), "image_size": args.size, "requests": len(results),
        "removals_per_s": round(len(good) / elapsed, 2), "latency_ms": {
            "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
            "mean": round(1000 * statistics.mean(good), 1) if good else None},
        "status_counts": statuses,
        "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "transport_errors": sum(n for s, n in statuses.items() if not s.isdigit()),
        "queue_timeout_s": args.queue_timeout,
        "refusals_429": {"count": len(refusals), "queue_full": sum(r["queue_full"] for r in refusals),
                         "before_the_bound": sum(not r["queue_full"] and r["seconds"] < args.queue_timeout
                                                 for r in refusals),
                         "examples": refusals[:5]},
        "server_rss_mib": {"before": round(rss_before, 1), "after_warmup": round(baseline or rss_before, 1),
                           "after": round(rss_after, 1), "peak": round(peak, 1),
                           "growth_after_warmup_pct": round(100 * (rss_after / (baseline or rss_before) - 1), 1),
                           "samples_s_mib": samples},
        "server_alive_after": alive,
    }
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    records = previous if "machine" not in previous else {}  # the older single-record file is replaced
    records[args.label] = result
    out.write_text(json.dumps(records, indent=1) + "\n")
    return 0 if result["server_errors_5xx"] == 0 and result["transport_errors"] == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
