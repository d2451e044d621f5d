"""`make paper`: the experiment plan (pipelines.paper), and the whole machinery on the session's tiny
flow-built repository: real queued DVC experiments, one worker, reports/paper.md with all five tables, the
MLflow runs under one parent. The tables and verdicts themselves: tests/code/test_paper_tables.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.paper import PaperError, Planned, alpha_key, apply_overrides, object_pairs, plan, stage_params
from pipelines.params import parse_params
from tests.conftest import built_repo_copy, repo_params_raw


def _paper_params(**paper) -> dict:
    raw = repo_params_raw()
    raw["paper"].update(paper)
    return raw


def test_plan_names_one_experiment_per_cell_beyond_the_baseline():
    params = parse_params(_paper_params(seeds=[0, 1], alphas=[0.01, 0.03], finetune_pairs=[400, 2000]))
    planned = {p.name: p for p in plan(params, train_pairs=1999)}
    assert set(planned) == {"paper-t2-random", "paper-t3-pairs400", "paper-t3-pairs1999", "paper-t5-seed1",
                            "paper-t4-alpha0.01-seed0", "paper-t4-alpha0.01-seed1"}
    r = params.paper.random_mask_epochs
    assert planned["paper-t2-random"].overrides == {"pretrain_inpainter.epochs": r,
                                                    "pretrain_inpainter.random_mask_epochs": r}
    t3 = planned["paper-t3-pairs400"]
    assert t3.overrides["pretrain_inpainter.object_pairs"] == 400 and t3.targets == ("evaluate_inpainter",)
    t4 = planned["paper-t4-alpha0.01-seed1"]
    assert t4.single_item and t4.command() == ["dvc", "exp", "run", "--queue", "-n", "paper-t4-alpha0.01-seed1", "-s",
                                               "-S", "finetune_joint.mel.alpha=0.01", "-S", "finetune_joint.seed=1",
                                               "finetune_joint", "evaluate"]
    assert not planned["paper-t5-seed1"].single_item  # its ablation is retrained with the seed too
    # applied as DVC applies -S, the experiment's params validate
    parse_params(apply_overrides(_paper_params(), t3.overrides))
    assert alpha_key(0.05) == "0.05" and isinstance(Planned("x", "I", {}, ()).command(), list)
    assert t4.command(("reports",))[-4:] == ["-C", "reports", "finetune_joint", "evaluate"]


def test_table3_sizes_are_at_most_the_training_split_and_must_differ():
    assert object_pairs([400, 1200, 2000], 1999) == [400, 1200, 1999]
    with pytest.raises(PaperError, match=r"finetune_pairs \[8, 20\] on a training split of 8 pairs are the sizes "
                                         r"\[8, 8\], not distinct"):
        object_pairs([8, 20], 8)


def test_an_experiment_is_the_same_whatever_the_paper_section_says():
    raw = _paper_params()
    other = _paper_params(seeds=[5, 6])
    assert stage_params(raw) == stage_params(other) and raw != other
    assert stage_params(raw) != stage_params(apply_overrides(raw, {"finetune_joint.seed": 9}))


# ---- the machinery on the tiny repository --------------------------------------------------------------


def _sh(repo: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_make_paper_runs_queued_experiments_and_writes_every_table(flow_run, tmp_path):
    repo = built_repo_copy(flow_run, tmp_path / "repo")
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    # one seed: three experiments, one of each kind (II, III, a single-item IV); a second seed would add two
    # more (minutes on two cores) for what the plan test and tests/code/test_paper_tables.py check already
    raw["paper"] = {"seeds": [0], "alphas": [0.03, 0.05], "random_mask_epochs": 1, "finetune_epochs": 1,
                    "finetune_pairs": [8]}
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = _sh(repo, sys.executable, "-m", "pipelines.paper")
    assert "reports/paper.md written: 3 experiments (3 run, 0 reused)" in out

    text = (repo / "reports" / "paper.md").read_text()
    for title in ("Table I", "Table II", "Table III", "Table IV", "Table V"):
        assert f"## {title}" in text
    assert text.count("Verdict: ") >= 6
    result = json.loads((repo / "reports" / "paper.json").read_text())
    tables = result["tables"]
    t5 = tables["table5"]["rows"]
    assert t5["joint_mel"]["psnr"]["all"]["n"] == 1 and math.isfinite(t5["joint_mel"]["psnr"]["all"]["mean"])
    assert t5["joint_no_mel"]["psnr"]["all"]["n"] == 1 and t5["oracle"]["psnr"]["all"]["sd"] == 0.0
    assert set(tables["table4"]["rows"]) == {"0.03", "0.05"}
    assert all(math.isfinite(r["psnr"]["mean"]) for r in tables["table4"]["rows"].values())
    assert set(tables["table3"]["rows"]) == {"random", "8 pairs"}
    for row in (*tables["table1"]["rows"].values(), *tables["table2"]["rows"].values()):
        assert math.isfinite(row["all"]["psnr"])
    # the random-mask inpainter is another model than the baseline's: Table II compares two trainings
    assert tables["table2"]["rows"]["random"]["all"]["psnr"] != tables["table2"]["rows"]["object"]["all"]["psnr"]
    assert all((repo / "reports" / "paper" / f"{n}.png").is_file() for n in ("table1", "table2_3", "table4", "table5"))

    shown = json.loads(_sh(repo, "dvc", "exp", "show", "--json"))
    names = {e["name"]: e for b in shown for r in (b.get("experiments") or []) for e in r["revs"]}
    assert set(names) >= {"paper-t2-random", "paper-t3-pairs8", "paper-t4-alpha0.05-seed0"}
    t4 = names["paper-t4-alpha0.05-seed0"]["data"]
    assert t4["params"]["params.yaml"]["data"]["finetune_joint"]["mel"]["alpha"] == 0.05
    assert "reports/headline/evaluate.json" in t4["metrics"]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    experiment = client.get_experiment_by_name("object-removal")
    paper_run = client.search_runs([experiment.experiment_id], "tags.stage = 'paper'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{paper_run.info.run_id}'")
    assert {r.data.tags["dvc_experiment"] for r in children} == set(result["meta"]["experiment_names"])
    assert {r.data.tags["stage"] for r in children} == {"pretrain_inpainter", "evaluate_inpainter", "finetune_joint",
                                                        "evaluate"}  # the single-item IV retrains no ablation
    assert paper_run.info.status == "FINISHED"

    again = _sh(repo, sys.executable, "-m", "pipelines.paper")  # everything exists: reused, nothing trains
    assert "3 experiments (0 run, 3 reused)" in again
