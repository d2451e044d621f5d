"""Side-effect helpers shared by the stage entry points: logging, seeds, atomic outputs, JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class DropMessages(logging.Filter):
    """Drops a logger's records whose message starts with one of `prefixes` (known, harmless noise)."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    lightning_log = logging.getLogger("lightning.pytorch")
    lightning_log.propagate = False  # Lightning prints its own lines already (its handler, set at its import)
    for handler in lightning_log.handlers:  # ... and an advertisement for its cloud logger in every fit
        handler.addFilter(DropMessages("💡 Tip"))
    # Lightning 2.6 on torch 2.13: a deprecation of torch's LeafSpec inside Lightning, once per fit
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Third-party noise in the stages' logs: the ONNX exporter's optimizer and rewriter log each pass at INFO,
    # and its op registry warns once per torchvision op that torchvision (which no model here uses) is missing.
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").addFilter(
        DropMessages("torchvision is not installed"))
    # albumentations asks a package index for updates at import unless told not to; stages run offline.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def stage_main(run: Callable[[Any], Any], doc: str, argv: list[str] | None = None) -> int:
    """The shared CLI of every stage: `--params`, logging, then `run(params)`. Bad input (params, dataset,
    a missing file) is reported as one line naming the problem, exit code 1; anything else is a bug and
    keeps its traceback."""
    import argparse

    from components.coco import DatasetError
    from pipelines.params import ParamsError, load_params

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(load_params(args.params))
    except (ParamsError, DatasetError, FileNotFoundError) as err:
        logging.getLogger(run.__module__.rsplit(".", 1)[-1]).error("%s", err)
        return 1
    return 0


def stage_seed(base_seed: int, stage_seed_value: int, stage: str) -> np.random.SeedSequence:
    """The seed sequence of one stage: the pipeline's base seed, the stage's own seed, its name."""
    return np.random.SeedSequence([base_seed, stage_seed_value, zlib.crc32(stage.encode())])


def params_hash(params: Any) -> str:
    """First 16 hex digits of the sha256 of params (a pydantic model or a mapping) as sorted JSON."""
    data = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_revision(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def write_headline(reports: Path, stage: str, values: dict[str, Any]) -> None:
    """`<reports>/headline/<stage>.json`: the few numbers of a stage that `dvc metrics show` prints (the
    files dvc.yaml declares as metrics; the stages' full tables are plain outputs), floats to 4 digits.
    Stages share the names of what they share (`psnr`, `mask_iou`, ...), so the table stays narrow."""
    write_json(Path(reports) / "headline" / f"{stage}.json",
               {key: round(value, 4) if isinstance(value, float) else value for key, value in values.items()})


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target` whole.

    On any error the temporary folder is removed and `target` is left as it was, so nothing
    half-written ever sits at the final path looking complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.replace(old)
    tmp.replace(target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of `workers` processes, or None for one worker (work then runs inline, easy to debug).

    Workers are forked, so modules the parent imported (OpenCV, pycocotools) are not imported again.
    """
    if workers == 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool


def bounded_map(fn: Callable[[T], R], items: Iterable[T], pool: ProcessPoolExecutor | None, window: int) -> Iterator[R]:
    """`map(fn, items)` on `pool`, in order, with at most `window` items in flight, so a long lazy
    `items` is never materialized (unlike `Pool.imap`, whose feeder thread drains its input).
    `fn` must be picklable; without a pool it runs inline.
    """
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
