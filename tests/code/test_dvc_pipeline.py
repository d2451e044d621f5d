"""A real `dvc repro` in a temporary copy of the repository, on tiny params: the data stages, then the
whole graph through `evaluate`, `export` and `package`, and an experiment that changes MEL's alpha seen
by `dvc metrics diff`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_repo

pytestmark = pytest.mark.slow


def _sh(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", NO_ALBUMENTATIONS_UPDATE="1",
               **(env or {}))
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return tiny_repo(tmp_path_factory.mktemp("dvc") / "repo")


def test_repro_then_status_clean_then_nothing_to_do(repo):
    out = _sh(repo, "dvc", "repro", "synthesize")
    assert "Running stage 'scenes'" in out and "Running stage 'synthesize'" in out
    summary = json.loads((repo / "data" / "pairs" / "summary.json").read_text())
    assert summary["pairs"] == {"train": 16, "val": 8, "test": 4}
    metrics = json.loads((repo / "reports" / "synthesize.json").read_text())
    assert metrics["pairs"]["train"] == 16
    assert "up to date" in _sh(repo, "dvc", "status", "synthesize")
    again = _sh(repo, "dvc", "repro", "synthesize")
    assert "Running stage" not in again and "didn't change, skipping" in again
    assert "/pairs" in (repo / "data" / ".gitignore").read_text()  # an output of DVC, not of git


def test_exp_run_with_another_seed_changes_the_data(repo):
    _sh(repo, "dvc", "repro", "synthesize")
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock", "--allow-empty")
    before = (repo / "data" / "pairs" / "train" / "manifest.jsonl").read_text()
    out = _sh(repo, "dvc", "exp", "run", "-S", "synthesize.seed=7", "synthesize")
    assert "Running stage 'synthesize'" in out and "Running stage 'scenes'" not in out
    after = (repo / "data" / "pairs" / "train" / "manifest.jsonl").read_text()
    assert after != before
    diff = _sh(repo, "dvc", "params", "diff")
    assert "synthesize.seed" in diff and "7" in diff


def test_whole_graph_then_an_alpha_experiment_changes_the_metrics(repo):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db", "BENTOML_HOME": str(repo.parent / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "True"}
    out = _sh(repo, "dvc", "repro", env=env)
    for stage in ("pretrain_segmenter", "pretrain_inpainter", "finetune_joint", "finetune_joint_ablation", "evaluate",
                  "export", "package"):
        assert f"Running stage '{stage}'" in out
    assert {p.name for p in (repo / "models" / "onnx").iterdir()} == {"segmenter.onnx", "inpainter.onnx", "model.json"}
    assert {p.name for p in (repo / "models" / "bento").iterdir()} == {"object-removal.bento", "bento.json"}
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert {"joint_mel", "joint_no_mel", "oracle"} <= set(metrics["methods"])
    assert (repo / "reports" / "samples.png").is_file() and (repo / "reports" / "evaluation.md").is_file()
    assert "up to date" in _sh(repo, "dvc", "status", env=env)
    shown = _sh(repo, "dvc", "metrics", "show", "--json", env=env)
    assert "reports/metrics.json" in shown and "reports/finetune_joint.json" in shown
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline", "--allow-empty")
    out = _sh(repo, "dvc", "exp", "run", "-S", "finetune_joint.mel.alpha=0.3", "evaluate", env=env)
    assert "Running stage 'finetune_joint'" in out and "Running stage 'finetune_joint_ablation'" not in out
    diff = json.loads(_sh(repo, "dvc", "metrics", "diff", "--json", env=env))
    changed = diff["reports/metrics.json"]
    assert any(key.startswith("methods.joint_mel.") and value["diff"] for key, value in changed.items())
    assert not any(key.startswith("methods.joint_no_mel.") and value["diff"] for key, value in changed.items())
