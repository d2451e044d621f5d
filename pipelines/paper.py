"""python -m pipelines.paper [--repo .] [--force] [--report-only]

`make paper`: the paper's Tables I-V as DVC experiments of this pipeline, and `reports/paper.md` with every
table beside the paper's numbers and a verdict per table.

The workspace is the baseline (`make run` first; a stage that is not up to date is reproduced here). Each
other cell of a table is one experiment: params set with `-S` on the baseline, queued with
`dvc exp run --queue` and run by one queue worker (`dvc exp run --run-all -j 1`), so `dvc exp show` lists
them with their params and headline metrics. `paper` in params.yaml says which:

    Table I    the baseline's `evaluate_inpainter` stage (the true mask eroded / dilated)
    Table II   paper-t2-random: the inpainter trained on free-form random masks only
    Table III  paper-t3-pairs<N>: the same random-mask epochs, then fine-tuned on the first N object-mask pairs
               (N: each of paper.finetune_pairs, at most the training split's pairs)
    Table IV   paper-t4-alpha<a>-seed<s>: the joint fine-tuning at MEL alpha a, seed s
               (`-s finetune_joint evaluate`: only the joint model is retrained; its row is joint_mel)
    Table V    paper-t5-seed<s>: the joint fine-tuning and its MEL-off ablation at seed s, every method

An experiment already run on this baseline with exactly these params (all but `paper` itself) is reused
(a killed `make paper` resumes); `--force` runs all again. The stages' MLflow runs (they log into the
repository's store, also from DVC's temporary experiment folders) are grouped under one parent run
`paper-<time>`, which carries the report, the tables as JSON and the plots.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines import paper_tables
from pipelines.common import setup_logging
from pipelines.params import Params, load_params
from pipelines.tracking import PIPELINE_RUN_ENV, absolute_uri, start_stage_run, tracking_uri

log = logging.getLogger("paper")
EXPERIMENT = "object-removal"
INPAINTER_REPORT = "inpainter_evaluation.json"  # under paths.reports: stage evaluate_inpainter
METHODS_REPORT = "metrics.json"  # under paths.reports: stage evaluate


class PaperError(RuntimeError):
    """`make paper` cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Planned:
    """One DVC experiment of the plan: a cell (or a column) of a table."""

    name: str  # the DVC experiment name (`dvc exp show`, `dvc queue logs <name>`)
    table: str
    overrides: Mapping[str, Any]  # dotted params.yaml key -> value (`-S key=value`)
    targets: tuple[str, ...]
    single_item: bool = False  # `-s`: only the targets, not their changed upstream stages
    key: Any = None  # the cell: a size (Table III), (alpha, seed) (Table IV), a seed (Table V)

    def command(self, copy_paths: tuple[str, ...] = ()) -> list[str]:
        sets = [arg for key, value in self.overrides.items() for arg in ("-S", f"{key}={_yaml_value(value)}")]
        copies = [arg for path in copy_paths for arg in ("-C", path)]
        return ["dvc", "exp", "run", "--queue", "-n", self.name, *(["-s"] if self.single_item else []), *sets,
                *copies, *self.targets]


def _yaml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def alpha_key(alpha: float) -> str:
    return f"{alpha:g}"


def object_pairs(sizes: list[int], train_pairs: int) -> list[int]:
    """Table III's set sizes (`paper.finetune_pairs`) on a training split of `train_pairs`: a size above it
    is the whole split (synthesize drops a pair whose object never reaches min_mask_ratio, so 2,000
    planned pairs can be 1,999)."""
    capped = [min(n, train_pairs) for n in sizes]
    if len(set(capped)) != len(capped):
        raise PaperError(f"paper.finetune_pairs {sizes} on a training split of {train_pairs} pairs are the sizes "
                         f"{capped}, not distinct: use sizes of at most {train_pairs}")
    for n, c in zip(sizes, capped, strict=True):
        if n != c:
            log.info("Table III: %d pairs asked, the training split has %d: all of them", n, c)
    return capped


def train_pairs(params: Params, root: Path) -> int:
    """How many pairs the baseline's training split has (its manifest, stage synthesize's)."""
    manifest = root / params.paths.pairs / "train" / "manifest.jsonl"
    if not manifest.is_file():
        raise PaperError(f"{manifest} is missing: run `make run` (or `dvc repro synthesize`) first")
    return sum(1 for line in manifest.read_text().splitlines() if line.strip())


def plan(params: Params, train_pairs: int) -> list[Planned]:
    """Every experiment the tables need beyond the baseline (the workspace's params), for a training split
    of `train_pairs` pairs."""
    p, joint = params.paper, params.finetune_joint
    alpha0, seed0 = joint.mel.alpha, joint.seed
    random = {"pretrain_inpainter.epochs": p.random_mask_epochs,
              "pretrain_inpainter.random_mask_epochs": p.random_mask_epochs}
    planned = [Planned("paper-t2-random", "II", random, ("evaluate_inpainter",))]
    for n in object_pairs(list(p.finetune_pairs), train_pairs):
        overrides = {"pretrain_inpainter.epochs": p.random_mask_epochs + p.finetune_epochs,
                     "pretrain_inpainter.random_mask_epochs": p.random_mask_epochs,
                     "pretrain_inpainter.object_pairs": n}
        planned.append(Planned(f"paper-t3-pairs{n}", "III", overrides, ("evaluate_inpainter",), key=n))
    for seed in p.seeds:
        if seed != seed0:
            planned.append(Planned(f"paper-t5-seed{seed}", "V", {"finetune_joint.seed": seed}, ("evaluate",),
                                   key=seed))
        for alpha in p.alphas:
            if alpha == alpha0:  # the baseline or the Table V experiment of this seed
                continue
            planned.append(Planned(f"paper-t4-alpha{alpha_key(alpha)}-seed{seed}", "IV",
                                   {"finetune_joint.mel.alpha": alpha, "finetune_joint.seed": seed},
                                   ("finetune_joint", "evaluate"), single_item=True, key=(alpha, seed)))
    return planned


def apply_overrides(raw: Mapping, overrides: Mapping[str, Any]) -> dict:
    """`raw` (params.yaml as loaded) with each dotted key set, as `dvc exp run -S` writes it."""
    out = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return out


# ---- git and DVC ----------------------------------------------------------------------------------------


def _run(root: Path, *args: str, env: Mapping[str, str] | None = None, capture: bool = True) -> str:
    done = subprocess.run(list(args), cwd=root, env=dict(env) if env is not None else None, text=True,
                          capture_output=capture, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip()[-3000:] if capture else "(output above)"
        raise PaperError(f"`{' '.join(args)}` failed (exit {done.returncode}): {detail}")
    return done.stdout if capture else ""


def baseline_revision(root: Path) -> str:
    try:
        return _run(root, "git", "rev-parse", "HEAD").strip()
    except PaperError as err:
        raise PaperError(f"{root} is not a git repository with a commit: DVC experiments need one ({err})") from None


def experiment_refs(root: Path, baseline: str) -> dict[str, str]:
    """name -> git ref of the experiments DVC has committed on `baseline`."""
    prefix = f"refs/exps/{baseline[:2]}/{baseline[2:]}/"
    refs = _run(root, "git", "for-each-ref", "--format=%(refname)", prefix).split()
    return {ref.removeprefix(prefix): ref for ref in refs}


def read_at(root: Path, ref: str, path: str) -> str:
    return _run(root, "git", "show", f"{ref}:{path}")


def untracked_outputs(root: Path) -> tuple[str, ...]:
    """The baseline's git-tracked kind of outputs (`cache: false`: reports, headlines, plot data) that git
    does not track yet, and dvc.lock if it is new. A queued experiment starts from HEAD plus the changes to
    tracked files only, so without these (`dvc exp run -C`) it would see those stages' outputs missing and
    run them again, and everything after them. A path in a folder git has nothing of is given as that
    folder (DVC copies a -C path only into a folder that is already there)."""
    untracked = set(_run(root, "git", "ls-files", "--others", "--exclude-standard", "-z").split("\0")) - {""}
    tracked = set(_run(root, "git", "ls-files", "-z").split("\0")) - {""}
    tracked_folders = {"/".join(Path(p).parts[:i]) for p in tracked for i in range(1, len(Path(p).parts))}
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        raise PaperError(f"{lock_file} is missing: run `make run` (or `dvc repro`) first")
    lock = yaml.safe_load(lock_file.read_text()) or {}
    outs = {out["path"] for stage in (lock.get("stages") or {}).values() for out in stage.get("outs", [])}
    paths = {"dvc.lock"} & untracked
    for out in outs:
        if out in untracked or any(path.startswith(f"{out.rstrip('/')}/") for path in untracked):
            parts = Path(out).parts
            new_folder = next((i for i in range(1, len(parts)) if "/".join(parts[:i]) not in tracked_folders), None)
            paths.add(out if new_folder is None else "/".join(parts[:new_folder]))
    return tuple(sorted(paths))


def queued_entries(root: Path, env: Mapping[str, str]) -> dict[str, str]:
    """name -> status of the entries in DVC's experiment queue (`dvc queue status`)."""
    entries = {}
    for line in _run(root, "dvc", "queue", "status", env=env).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and re.fullmatch(r"[0-9a-f]{7}", parts[0]):
            entries[parts[1]] = parts[-1]
    return entries


@dataclass
class Outcome:
    baseline: str
    reused: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)


def stage_params(raw: Mapping) -> dict:
    """params.yaml less its `paper` section, which no stage reads: what makes two experiments the same."""
    return {key: value for key, value in raw.items() if key != "paper"}


def run_experiments(root: Path, planned: list[Planned], raw: Mapping, env: Mapping[str, str],
                    force: bool = False) -> Outcome:
    """Queue what is missing (or stale, or all with `force`) and run the queue with one worker."""
    outcome = Outcome(baseline_revision(root))
    existing = experiment_refs(root, outcome.baseline)
    stale = []
    for exp in planned:
        ref = existing.get(exp.name)
        if ref is not None and not force and stage_params(yaml.safe_load(read_at(root, ref, "params.yaml"))) == \
                stage_params(apply_overrides(raw, exp.overrides)):
            outcome.reused.append(exp.name)
            continue
        if ref is not None:
            stale.append(exp.name)
        outcome.ran.append(exp.name)
    if stale:
        log.info("removing %d experiment(s) run with other params: %s", len(stale), ", ".join(stale))
        _run(root, "dvc", "exp", "remove", *stale, env=env)
    waiting = [n for n, status in queued_entries(root, env).items() if n in outcome.ran]
    if waiting:  # queued or failed by an earlier make paper: queued again below
        _run(root, "dvc", "queue", "remove", *waiting, env=env)
    if not outcome.ran:
        log.info("all %d experiments exist on baseline %s: reused", len(planned), outcome.baseline[:10])
        return outcome
    by_name = {exp.name: exp for exp in planned}
    copy_paths = untracked_outputs(root)
    if copy_paths:
        log.info("the baseline's outputs git does not track yet go into each experiment (-C): %s",
                 ", ".join(copy_paths))
    for name in outcome.ran:
        exp = by_name[name]
        log.info("queue %s (Table %s): %s", name, exp.table, " ".join(exp.command()[4:]))
        _run(root, *exp.command(copy_paths), env=env)
    log.info("running %d experiment(s) with one worker (`dvc queue status` shows them)", len(outcome.ran))
    done = subprocess.run(["dvc", "exp", "run", "--run-all", "-j", "1"], cwd=root, env=dict(env), check=False)
    finished = experiment_refs(root, outcome.baseline)
    failed = [name for name in outcome.ran if name not in finished]
    if failed or done.returncode != 0:
        raise PaperError(f"{len(failed)} experiment(s) failed: {', '.join(failed) or '(see above)'}; "
                         "`dvc queue logs <name>` shows each one's output; run `make paper` again to retry them")
    return outcome


# ---- results --------------------------------------------------------------------------------------------


def collect(root: Path, params: Params, planned: list[Planned], baseline: str) -> tuple[dict, dict]:
    """The tables (pipelines.paper_tables) from the baseline's reports and the experiments' committed ones."""
    reports = Path(params.paths.reports)
    if reports.is_absolute():
        raise PaperError(f"paths.reports is {reports}: make paper reads the experiments' reports from git, "
                         "so it must be inside the repository")
    refs = experiment_refs(root, baseline)

    def report(name: str | None, file: str) -> dict:
        if name is None:
            path = root / reports / file
            if not path.is_file():
                raise PaperError(f"the baseline has no {path}: run `make run` (or `dvc repro`) first")
            return json.loads(path.read_text())
        if name not in refs:
            raise PaperError(f"experiment {name} has no results on baseline {baseline[:10]}: run `make paper`")
        return json.loads(read_at(root, refs[name], f"{reports.as_posix()}/{file}"))

    p, joint = params.paper, params.finetune_joint
    alpha0, seed0 = joint.mel.alpha, joint.seed
    by_table: dict[str, list[Planned]] = {}
    for exp in planned:
        by_table.setdefault(exp.table, []).append(exp)
    base_inpainter, base_methods = report(None, INPAINTER_REPORT), report(None, METHODS_REPORT)
    random = report("paper-t2-random", INPAINTER_REPORT)
    finetuned = {f"{exp.key} pairs": report(exp.name, INPAINTER_REPORT) for exp in by_table.get("III", [])}

    def methods_at(seed: int, alpha: float) -> dict:
        if seed == seed0 and alpha == alpha0:
            return base_methods["methods"]
        name = f"paper-t5-seed{seed}" if alpha == alpha0 else f"paper-t4-alpha{alpha_key(alpha)}-seed{seed}"
        return report(name, METHODS_REPORT)["methods"]

    buckets = base_methods["buckets"]
    cells4 = {alpha_key(a): {s: methods_at(s, a)["joint_mel"] for s in p.seeds} for a in p.alphas}
    cells5 = {s: methods_at(s, alpha0) for s in p.seeds}
    tables = {
        "table1": paper_tables.table1(base_inpainter),
        "table2": paper_tables.table2(base_inpainter, random),
        "table3": paper_tables.table3(random, finetuned),
        "table4": paper_tables.table4(cells4, buckets),
        "table5": paper_tables.table5(cells5, buckets),
    }
    meta = {"buckets": buckets, "pairs": base_methods["pairs"], "split": base_methods["split"],
            "image_size": base_methods["image_size"], "seeds": list(p.seeds), "alpha": alpha0,
            "table3_sizes": " / ".join(f"{exp.key}" for exp in by_table.get("III", [])), "baseline": baseline}
    return tables, meta


def write_report(root: Path, params: Params, tables: dict, meta: dict) -> list[Path]:
    reports = root / params.paths.reports
    reports.mkdir(parents=True, exist_ok=True)
    pngs = paper_tables.plots(tables, meta, reports / "paper")
    (reports / "paper.md").write_text(paper_tables.markdown(tables, meta))
    (reports / "paper.json").write_text(json.dumps({"meta": meta, "tables": tables}, indent=2) + "\n")
    return [reports / "paper.md", reports / "paper.json", *(reports / "paper" / name for name in pngs)]


def group_runs(uri: str, parent_run_id: str, names: list[str], baseline: str) -> int:
    """Make the stage runs of `names` (tagged `dvc_experiment`, `dvc_baseline` by pipelines.tracking)
    children of the paper's run, also those of experiments reused from an earlier `make paper`."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return 0
    linked = 0
    for name in names:
        query = f"tags.dvc_experiment = '{name}' and tags.dvc_baseline = '{baseline}'"
        for run in client.search_runs([experiment.experiment_id], query, max_results=1000):
            if run.data.tags.get("mlflow.parentRunId") != parent_run_id:
                client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_run_id)
            linked += 1
    return linked


def paper(root: Path, force: bool = False, report_only: bool = False) -> dict:
    root = root.resolve()
    params_path = root / "params.yaml"
    params, raw = load_params(params_path), yaml.safe_load(params_path.read_text())
    planned = plan(params, train_pairs(params, root))
    uri = absolute_uri(tracking_uri(), root)
    started = time.monotonic()
    section = {"paper": params.paper.model_dump(mode="json"), "experiments": [e.name for e in planned]}
    with start_stage_run(EXPERIMENT, "paper", section, run_name=f"paper-{time.strftime('%Y%m%d-%H%M%S')}",
                         uri=uri) as parent:
        import mlflow

        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, PIPELINE_RUN_ENV: parent.run_id,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        if report_only:
            outcome = Outcome(baseline_revision(root), reused=[e.name for e in planned])
        else:
            log.info("baseline: dvc repro evaluate evaluate_inpainter (nothing runs when make run is up to date)")
            _run(root, "dvc", "repro", "evaluate", "evaluate_inpainter", env=env, capture=False)
            outcome = run_experiments(root, planned, raw, env, force)
        tables, meta = collect(root, params, planned, outcome.baseline)
        meta.update(experiments=len(planned), experiment_names=[e.name for e in planned], ran=len(outcome.ran),
                    reused=len(outcome.reused),
                    wall_time_min=round((time.monotonic() - started) / 60, 2))
        written = write_report(root, params, tables, meta)
        linked = group_runs(uri, parent.run_id, [e.name for e in planned], outcome.baseline)
        mlflow.log_metric("wall_time_min", meta["wall_time_min"])
        mlflow.set_tags({"baseline": outcome.baseline, "ran": ",".join(outcome.ran) or "-",
                         "reused": ",".join(outcome.reused) or "-"})
        for path in written:
            mlflow.log_artifact(str(path), artifact_path="paper")
    log.info("reports/paper.md written: %d experiments (%d run, %d reused), %d MLflow runs under paper run %s, "
             "%.1f min", len(planned), len(outcome.ran), len(outcome.reused), linked, parent.run_id,
             meta["wall_time_min"])
    return {"tables": tables, "meta": meta, "files": [str(p) for p in written], "mlflow_run_id": parent.run_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project's root (default: .)")
    parser.add_argument("--force", action="store_true", help="run every experiment again, also those that exist")
    parser.add_argument("--report-only", action="store_true",
                        help="write reports/paper.md from the experiments that exist; run nothing")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        paper(args.repo, force=args.force, report_only=args.report_only)
    except PaperError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
