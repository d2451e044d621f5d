"""python benchmarks/bento_footprint.py [--bento models/bento/object-removal.bento] [--label after]

What the Bento costs to install and to start, measured the way a deployment meets it:

    1. environment   a fresh virtual environment with exactly the Bento's python packages
                     (bentofile.yaml `python.packages`, PyTorch's CPU wheel from a local folder when there
                     is one), then `du -sh` of it and whether `torch` is importable in it
    2. start         `bentoml import` of the Bento file into an empty store, then `bentoml serve <tag>`
                     from that environment, timed from launch to the first 200 of /readyz and of /info;
                     whether any of the server's processes mapped libtorch

Appends one record under `--label` to benchmarks/results/bento_footprint.json (`before` and `after` of
the torch-free serving change are kept side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "bento_footprint.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def du_bytes(folder: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True, check=True)
               .stdout.split()[0])


def make_env(packages: list[str], folder: Path, wheels: Path) -> float:
    """A fresh venv at `folder` with `packages` (copied, not linked from uv's cache); seconds it took."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    start = time.monotonic()
    subprocess.run([uv, "venv", "-q", str(folder), "--python", sys.executable], check=True)
    links = ["--find-links", str(wheels)] if any(wheels.glob("torch-*.whl")) else \
        ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    subprocess.run([uv, "pip", "install", "-q", "--link-mode", "copy", "--python", str(folder / "bin" / "python"),
                    *links, *packages], check=True)
    return time.monotonic() - start


def time_start(env: Path, bento: Path, tmp: Path) -> dict:
    """Import `bento` into an empty store and serve it from `env`; seconds to the first 200s."""
    home = {**{k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "OBJREMOVAL_"))},
            "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml = str(env / "bin" / "bentoml")
    subprocess.run([bentoml, "import", str(bento.resolve())], env=home, check=True, capture_output=True)
    tag = yaml.safe_load(next((tmp / "bentoml" / "bentos").glob("*/*/bento.yaml")).read_text())
    tag = f"{tag['name']}:{tag['version']}"
    port, log = free_port(), tmp / "serve.log"
    url, found = f"http://127.0.0.1:{port}", {}
    start = time.monotonic()
    with log.open("wb") as out:
        server = subprocess.Popen([bentoml, "serve", tag, "--host", "127.0.0.1", "--port", str(port)], env=home,
                                  cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while len(found) < 2 and time.monotonic() - start < 300:
            if server.poll() is not None:
                raise RuntimeError(f"bentoml serve exited {server.returncode}:\n{log.read_text()[-2000:]}")
            for path in ("/readyz", "/info"):
                try:
                    if path not in found and httpx.get(url + path, timeout=2).status_code == 200:
                        found[path] = round(time.monotonic() - start, 2)
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        torch_loaded = any("libtorch" in Path(f"/proc/{p.pid}/maps").read_text()
                           for p in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)])
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"bento": tag, "readyz_s": found.get("/readyz"), "info_s": found.get("/info"),
            "torch_loaded_by_server": torch_loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--bento", type=Path, default=REPO / "models" / "bento" / "object-removal.bento")
    parser.add_argument("--bentofile", type=Path, default=REPO / "bentofile.yaml")
    parser.add_argument("--wheels", type=Path, default=Path("/opt/wheels"))
    parser.add_argument("--label", default="after")
    parser.add_argument("--starts", type=int, default=3, help="serve this many times; the median is reported")
    args = parser.parse_args()
    packages = yaml.safe_load(args.bentofile.read_text())["python"]["packages"]
    with tempfile.TemporaryDirectory(prefix="bento-footprint-") as tmp:
        env = Path(tmp) / "env"
        install_s = make_env(packages, env, args.wheels)
        size = du_bytes(env)
        has_torch = subprocess.run([str(env / "bin" / "python"), "-c", "import torch"],
                                   capture_output=True).returncode == 0
        starts = []
        for i in range(args.starts):
            run_dir = Path(tmp) / f"start{i}"
            run_dir.mkdir()
            starts.append(time_start(env, args.bento, run_dir))
    median = lambda key: sorted(s[key] for s in starts)[len(starts) // 2]  # noqa: E731
    record = {"packages": packages, "env_bytes": size, "env_mib": round(size / 2**20), "torch_installed": has_torch,
              "install_s": round(install_s, 1), "starts": starts, "readyz_s_median": median("readyz_s"),
              "info_s_median": median("info_s"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[args.label] = record
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "packages"}, indent=2))


if __name__ == "__main__":
    main()
