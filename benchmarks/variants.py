"""The loop shared by the variant benchmarks (joint_balance.py, segmenter_recipes.py): parse
`--variant NAME KEY=VALUE ...` and `--out`, run each variant into a temporary folder with its own MLflow
store, print a line per variant, and merge the rows into `--out` by variant name (a variant run again
replaces its row, the others stay)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path


def run_variants(doc: str, defaults: dict[str, list[str]], out: Path, prefix: str, note: str,
                 run_variant: Callable[[str, list[str], Path], dict], describe: Callable[[dict], str]) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                        help="a variant: its name, then the params it changes (repeatable)")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args()
    variants = {v[0]: v[1:] for v in args.variant} if args.variant else defaults
    rows = {}
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        for name, settings in variants.items():
            rows[name] = run_variant(name, settings, Path(tmp))
            print(f"{name:>20}: {describe(rows[name])}", flush=True)
    stored = json.loads(args.out.read_text())["variants"] if args.out.is_file() else {}
    result = {"host": platform.node(), "note": note, "variants": {**stored, **rows}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
