"""Real `dvc repro` runs in temporary copies of the repository, on tiny params: the data stages in a fresh
copy; then, in a copy of the repository the session's retraining flow built (every stage through `evaluate`,
`export` and `package`, each a `dvc repro` of the flow; tests.conftest.flow_run), the state DVC reports
(`dvc status` clean, `dvc metrics show` a narrow headline per stage), an experiment that changes MEL's alpha
seen by `dvc metrics diff`, a local-folder remote, and a training stage killed and re-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import built_repo_copy, tiny_repo

pytestmark = pytest.mark.slow


def _sh(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", NO_ALBUMENTATIONS_UPDATE="1",
               **(env or {}))
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)  # a shared 2-core box
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh tiny copy: nothing reproduced yet."""
    return tiny_repo(tmp_path_factory.mktemp("dvc") / "repo")


@pytest.fixture(scope="module")
def built(tmp_path_factory, flow_run) -> Path:
    """A copy of the repository after the session's retraining flow: the whole graph reproduced."""
    return built_repo_copy(flow_run, tmp_path_factory.mktemp("dvc-built") / "repo")


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


def test_whole_graph_then_an_alpha_experiment_changes_the_metrics(built, flow_run):
    repo = built
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db", "BENTOML_HOME": str(repo.parent / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "True"}
    ran = flow_run[1].result()["stages"]  # the flow's `dvc repro <stage>` of each stage
    for stage in ("pretrain_segmenter", "pretrain_inpainter", "finetune_joint", "finetune_joint_ablation", "evaluate",
                  "evaluate_inpainter", "export", "package"):
        assert ran[stage] == "ran", stage
    assert "up to date" in _sh(repo, "dvc", "status", env=env)  # the copy too: dvc.lock matches its files
    assert {p.name for p in (repo / "models" / "onnx").iterdir()} == {"segmenter.onnx", "inpainter.onnx", "model.json"}
    assert {p.name for p in (repo / "models" / "bento").iterdir()} == {"object-removal.bento", "bento.json"}
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert {"joint_mel", "joint_no_mel", "oracle"} <= set(metrics["methods"])
    assert (repo / "reports" / "samples.png").is_file() and (repo / "reports" / "evaluation.md").is_file()
    # `dvc metrics show`: one narrow headline per stage; the full tables are outputs, not metrics
    shown = json.loads(_sh(repo, "dvc", "metrics", "show", "--json", env=env))[""]["data"]
    headlines = {f"reports/headline/{stage}.json" for stage in ("scenes", "synthesize", "pretrain_segmenter",
                 "pretrain_inpainter", "finetune_joint", "finetune_joint_ablation", "evaluate",
                                                                       "evaluate_inpainter")}
    assert set(shown) == headlines | {"reports/export.json"}
    evaluate_headline = shown["reports/headline/evaluate.json"]["data"]
    assert evaluate_headline["psnr"] == round(metrics["methods"]["joint_mel"]["all"]["psnr"], 4)
    assert set(evaluate_headline) == {"psnr", "ssim", "psnr_mask", "mask_iou", "coverage", "clean"}
    table = _sh(repo, "dvc", "metrics", "show", env=env).splitlines()
    assert len(table) == 1 + len(shown) and max(map(len, table)) < 300, table  # was 13,000 characters a line
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline", "--allow-empty")
    out = _sh(repo, "dvc", "exp", "run", "-S", "finetune_joint.mel.alpha=0.3", "evaluate", env=env)
    assert "Running stage 'finetune_joint'" in out and "Running stage 'finetune_joint_ablation'" not in out
    diff = json.loads(_sh(repo, "dvc", "metrics", "diff", "--json", env=env))
    assert any(value["diff"] for value in diff["reports/headline/evaluate.json"].values())
    assert any(value["diff"] for value in diff["reports/headline/finetune_joint.json"].values())
    assert not any(value["diff"] for value in diff.get("reports/headline/finetune_joint_ablation.json", {}).values())
    # back to the committed baseline, its outputs from the cache (the tests below use `built` as the flow left it)
    _sh(repo, "git", "reset", "-q", "--hard")
    _sh(repo, "dvc", "checkout", "--force", env=env)
    assert "up to date" in _sh(repo, "dvc", "status", env=env)


def test_a_local_folder_remote_lets_a_fresh_clone_pull_then_predict_and_serve_with_no_training(built, tmp_path):
    """`dvc push` to a local-folder remote from the repository the whole-graph test built; a fresh `git clone`
    has no data or models; `dvc pull` brings them, `dvc status` is clean (nothing to re-run), and the batch
    command line and the packaged Bento's service work there."""
    import httpx

    from tests.code.test_package import bentoml_env
    from tests.code.test_service import encode, scene_image, serve

    repo = built
    remote = tmp_path / "remote"
    _sh(repo, "dvc", "remote", "add", "--default", "storage", str(remote))
    pushed = _sh(repo, "dvc", "push")
    assert "pushed" in pushed and any(remote.rglob("*"))
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote", "--allow-empty")
    clone = tmp_path / "clone"
    _sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models" / "onnx").exists() and not (clone / "data" / "pairs").exists()  # not in git
    _sh(clone, "dvc", "pull")
    assert "Data and pipelines are up to date" in _sh(clone, "dvc", "status")
    assert (clone / "models" / "onnx" / "model.json").is_file() and (clone / "data" / "pairs").is_dir()

    image, point = scene_image(97, 61)
    (tmp_path / "photo.png").write_bytes(encode(image))
    _sh(clone, sys.executable, "-m", "pipelines.predict", str(tmp_path / "photo.png"), str(tmp_path / "out"),
        "--model", "models/onnx", "--points", f"{point[0]:.0f},{point[1]:.0f}")
    [line] = [json.loads(line) for line in (tmp_path / "out" / "summary.jsonl").read_text().splitlines()]
    assert (line["width"], line["height"]) == (97, 61) and (tmp_path / "out" / "photo.mask.png").is_file()

    info = json.loads((clone / "models" / "bento" / "bento.json").read_text())
    store_home = tmp_path / "bentoml"
    subprocess.run([sys.executable, "-m", "bentoml", "import", str(clone / "models" / "bento" / info["file"])],
                   env=bentoml_env(store_home), check=True, capture_output=True, timeout=120)
    with serve(None, tmp_path, service=info["bento"], cwd=clone, home=store_home) as url:
        answer = httpx.post(f"{url}/remove", files={"image": ("a.png", encode(image), "image/png")}, timeout=60)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert httpx.get(f"{url}/info", timeout=10).json()["model"]["fingerprint"] == info["fingerprint"]


def test_a_training_stage_killed_then_rerun_keeps_the_plot_rows_of_every_epoch(built):
    """DVC deletes a stage's plot file before it runs the stage; the resumed stage rebuilds the rows of the
    epochs before the kill from its checkpoint. After the whole-graph test the segmenter has trained one epoch;
    with 8 epochs, `dvc repro` resumes it, is SIGKILLed (with its stage process) once epoch 1's checkpoint is
    written, and a second `dvc repro` resumes again and finishes. (With 4 epochs a busy CI machine once let the
    killed run finish all of them before the kill landed, leaving the re-run nothing to resume.)"""
    import signal
    import time

    import yaml

    repo = built
    _sh(repo, "dvc", "repro", "pretrain_segmenter")  # one epoch (a no-op after the whole-graph test)
    plot = repo / "reports" / "plots" / "pretrain_segmenter.json"
    first = json.loads(plot.read_text())
    assert [row["epoch"] for row in first] == [0]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain_segmenter"]["epochs"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", NO_ALBUMENTATIONS_UPDATE="1")
    process = subprocess.Popen(["dvc", "repro", "pretrain_segmenter"], cwd=repo, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rows() -> list[int]:
        try:
            return [row["epoch"] for row in json.loads(plot.read_text())]
        except (OSError, ValueError):  # not there yet: DVC removed it
            return []

    def checkpointed() -> bool:  # epoch 1's row is written, then its last.ckpt (taken right after the row)
        last = repo / "models" / "segmenter" / "last.ckpt"
        return 1 in rows() and last.is_file() and last.stat().st_mtime_ns >= plot.stat().st_mtime_ns

    deadline = time.monotonic() + 300
    while not checkpointed() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage's python, at once (last.ckpt is renamed in whole)
    process.wait(30)
    killed_at = rows()
    assert 1 in killed_at and killed_at[0] == 0, killed_at  # resumed at epoch 1, epoch 0's row rebuilt
    assert max(killed_at) < 7, f"the killed run finished every epoch before the kill: {killed_at}"

    out = _sh(repo, "dvc", "repro", "pretrain_segmenter")
    assert "Running stage 'pretrain_segmenter'" in out
    assert "(resumed at step" in out and f"epoch 8/8 done: step {first[0]['step'] * 8}, " in out  # ProgressLog
    assert "ETA 0 s" in out
    curve = json.loads(plot.read_text())
    assert [row["epoch"] for row in curve] == list(range(8))
    assert curve[0] == first[0]  # the row of the epoch trained before both resumes, unchanged
    saved = json.loads((repo / "models" / "segmenter" / "segmenter.json").read_text())
    assert saved["started_at_step"] > first[0]["step"]  # the re-run resumed from the killed run's checkpoint
    assert [row["step"] for row in curve] == [first[0]["step"] * (e + 1) for e in range(8)]
    assert "up to date" in _sh(repo, "dvc", "status", "pretrain_segmenter")
