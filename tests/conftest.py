"""Shared fixtures: a tiny COCO root written to disk, and tiny params built from the real params.yaml."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations must not look for updates

from components.coco import encode_rle, encode_uncompressed_rle, mask_to_polygons
from pipelines.params import Params, parse_params

REPO = Path(__file__).resolve().parents[1]
STUFF_IDS = {"sky": 101, "ground": 102}
BEHAVIOUR_TESTS = REPO / "tests" / "model" / "test_behaviour.py"
SMALL_MODEL_TIMEOUT = 45 * 60  # seconds the behaviour tests wait for their small model (about 5 min when idle)
_small_model = pytest.StashKey[tuple[subprocess.Popen | None, Path]]()  # (background training, its folder)


def _lowest_priority_child() -> None:
    """In the forked child: the lowest CPU priority, and killed with the test session (PR_SET_PDEATHSIG)."""
    os.nice(19)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the behaviour tests will run and the checkout has no pipeline model, start training their small
    model now (tests/model/small_model.py), in a background process at the lowest priority: it takes the
    cores the tests before them leave idle, instead of minutes of its own at the end of the session."""
    if session.config.option.collectonly or (REPO / "models" / "joint" / "best.ckpt").is_file():
        return
    if not any(Path(item.path) == BEHAVIOUR_TESTS for item in session.items):
        return
    folder = Path(tempfile.mkdtemp(prefix="behaviour-model-"))
    # one thread: it runs on the core the tests leave idle. With two, every parallel region of its convolutions
    # waits for the thread the tests' own work keeps off the CPU (at nice 19), and it finished minutes late.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(folder / "train.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.model.small_model", str(folder)], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, preexec_fn=_lowest_priority_child)
    session.config.stash[_small_model] = (process, folder)


def pytest_sessionfinish(session: pytest.Session) -> None:
    started = session.config.stash.get(_small_model, None)
    if started is not None:
        process, folder = started
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def small_model_checkpoint(config: pytest.Config) -> Path:
    """The behaviour tests' small model: waits for the background training this session started, or trains
    it here when none was started (the fixture reached another way). A failed training fails with its log."""
    from tests.model.small_model import CHECKPOINT, train

    started = config.stash.get(_small_model, None)
    if started is None:
        folder = Path(tempfile.mkdtemp(prefix="behaviour-model-"))
        config.stash[_small_model] = (None, folder)  # removed at the session's end
        return train(folder)
    process, folder = started
    if process is None:
        return folder / CHECKPOINT
    try:
        code = process.wait(timeout=SMALL_MODEL_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        code = f"killed after {SMALL_MODEL_TIMEOUT} s"
    if code != 0:
        tail = (folder / "train.log").read_text(errors="replace")[-4000:]
        pytest.fail(f"training the behaviour tests' small model failed ({code}); the end of its log:\n{tail}",
                    pytrace=False)
    return folder / CHECKPOINT


def _ellipse(shape: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask.astype(bool)


def write_tiny_coco(root: Path, n_images: int = 20, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """A COCO root as real COCO lays it out: `train/`, `annotations/instances.json`, `stuff.json`,
    `panoptic.json` + `panoptic/` PNGs, and `labels/` label maps.

    Persons (id 1) alternate between polygon and compressed-RLE segmentations; image 3 holds a crowd
    annotation (uncompressed RLE, iscrowd=1); image 5's file is missing on disk; balls (id 2) are
    a second thing class.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    for folder in ("train", "annotations", "panoptic", "labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    images, things, stuff, panoptic = [], [], [], []
    for index in range(n_images):
        image_id = index + 1
        horizon = int(rng.integers(height // 3, 2 * height // 3))
        labels = np.full(size, STUFF_IDS["ground"], np.uint8)
        labels[:horizon] = STUFF_IDS["sky"]
        image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
        image[:horizon] += np.array([90, 140, 190], np.uint8)
        image[horizon:] += np.array([60, 150, 50], np.uint8)
        anns = []
        centre = (int(rng.integers(15, width - 15)), int(rng.integers(15, height - 15)))
        person = _ellipse(size, centre, (6, 14))
        image[person] = (200, 40, 40)
        form = "polygon" if index % 2 == 0 else "rle"
        anns.append((1, person, form))
        if index % 4 == 1:
            ball = _ellipse(size, (width - centre[0], 10), (5, 5)) & ~person
            image[ball] = (240, 220, 30)
            anns.append((2, ball, "polygon"))
        if index == 3:
            crowd = _ellipse(size, (8, height - 8), (6, 4)) & ~person
            image[crowd] = (30, 30, 200)
            anns.append((1, crowd, "crowd"))
        file_name = f"{image_id:012d}.jpg"
        if index != 5:
            cv2.imwrite(str(root / "train" / file_name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        segments_png = np.zeros((height, width), np.int64)
        segments_info = []
        for _name, stuff_id in STUFF_IDS.items():
            region = labels == stuff_id
            stuff.append({"id": len(stuff) + 1, "image_id": image_id, "category_id": stuff_id,
                          "segmentation": encode_rle(region), "area": int(region.sum()), "iscrowd": 0,
                          "bbox": [0, 0, width, height]})
        for category_id, mask, form in anns:
            labels[mask] = category_id
            if form == "polygon":
                segmentation = mask_to_polygons(mask)
            elif form == "rle":
                segmentation = encode_rle(mask)
            else:
                segmentation = encode_uncompressed_rle(mask)
            ys, xs = np.nonzero(mask)
            things.append({"id": len(things) + 1, "image_id": image_id, "category_id": category_id,
                           "segmentation": segmentation, "area": int(mask.sum()), "iscrowd": int(form == "crowd"),
                           "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]})
        for segment_id, category_id in enumerate(np.unique(labels), start=1):
            segments_png[labels == category_id] = segment_id * 1000
            segments_info.append({"id": segment_id * 1000, "category_id": int(category_id)})
        rgb = np.stack([segments_png % 256, segments_png // 256 % 256, segments_png // 65536], -1).astype(np.uint8)
        cv2.imwrite(str(root / "panoptic" / f"{image_id:012d}.png"), rgb[..., ::-1])
        panoptic.append({"image_id": image_id, "file_name": f"{image_id:012d}.png", "segments_info": segments_info})
        cv2.imwrite(str(root / "labels" / f"{image_id:012d}.png"), labels)
    thing_cats = [{"id": 1, "name": "person", "supercategory": "person"},
                  {"id": 2, "name": "sports ball", "supercategory": "sports"}]
    stuff_cats = [{"id": i, "name": n, "supercategory": "stuff"} for n, i in STUFF_IDS.items()]
    (root / "annotations" / "instances.json").write_text(
        json.dumps({"images": images, "annotations": things, "categories": thing_cats}))
    (root / "annotations" / "stuff.json").write_text(
        json.dumps({"images": images, "annotations": stuff, "categories": stuff_cats}))
    pan_cats = [{**c, "isthing": 1} for c in thing_cats] + [{**c, "isthing": 0} for c in stuff_cats]
    (root / "annotations" / "panoptic.json").write_text(
        json.dumps({"images": images, "annotations": panoptic, "categories": pan_cats}))
    return root


def repo_params_raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params_raw(tmp_path: Path, coco_root: Path | None = None) -> dict:
    """The committed params.yaml shrunk to seconds of work, writing under `tmp_path`."""
    raw = repo_params_raw()
    raw["paths"] = {"scenes": str(tmp_path / "scenes"), "pairs": str(tmp_path / "pairs"),
                    "segmenter": str(tmp_path / "models" / "segmenter"),
                    "inpainter": str(tmp_path / "models" / "inpainter"), "joint": str(tmp_path / "models" / "joint"),
                    "joint_ablation": str(tmp_path / "models" / "joint_ablation"),
                    "reports": str(tmp_path / "reports"), "onnx": str(tmp_path / "models" / "onnx"),
                    "bento": str(tmp_path / "models" / "bento")}
    raw["scenes"].update(num_images=40, size=64, workers=1)
    raw["synthesize"].update(image_size=48, pairs={"train": 16, "val": 4, "test": 4}, workers=1,
                             min_object_area=40)
    if coco_root is not None:
        raw["dataset"].update(root=str(coco_root), images="train", instances="annotations/instances.json",
                              segmentation="stuff", stuff="annotations/stuff.json",
                              panoptic="annotations/panoptic.json", panoptic_masks="panoptic", label_maps="labels")
        raw["synthesize"]["max_bad_fraction"] = 0.2
    else:
        raw["dataset"]["root"] = str(tmp_path / "scenes")
    return raw


@pytest.fixture
def tiny_coco(tmp_path: Path) -> Path:
    return write_tiny_coco(tmp_path / "coco")


@pytest.fixture
def coco_params(tmp_path: Path, tiny_coco: Path) -> Params:
    return parse_params(tiny_params_raw(tmp_path, tiny_coco))


def copy_repo(dest: Path) -> Path:
    """The tracked project files (no venv, data or caches) copied to `dest`, for real `dvc repro` runs."""
    ignore = shutil.ignore_patterns(".venv", "data", "models", "reports", "__pycache__", ".pytest_cache", "mlflow.db",
                                    "mlruns", "mlartifacts", "lightning_logs", ".ruff_cache", "*.egg-info", "tmp",
                                    "cache", ".sweep")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def tiny_repo(dest: Path) -> Path:
    """A copy of the repository at `dest` whose params.yaml is the tiny training profile with relative paths,
    committed to git (DVC experiments and the flow read the revision): the whole pipeline in minutes."""
    repo = copy_repo(dest)
    raw = tiny_training_raw(Path("unused"))
    raw["paths"] = {"scenes": "data/scenes", "pairs": "data/pairs", "segmenter": "models/segmenter",
                    "inpainter": "models/inpainter", "joint": "models/joint", "joint_ablation": "models/joint_ablation",
                    "reports": "reports", "onnx": "models/onnx", "bento": "models/bento"}
    raw["dataset"]["root"] = "data/scenes"
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "tiny params", "--allow-empty"], cwd=repo, check=True, env=env)
    return repo


def tiny_training_raw(tmp: Path) -> dict:
    raw = tiny_params_raw(tmp)
    raw["synthesize"].update(image_size=32, pairs={"train": 16, "val": 8, "test": 4})
    raw["paths"].update(segmenter=str(tmp / "models" / "segmenter"), inpainter=str(tmp / "models" / "inpainter"),
                        joint=str(tmp / "models" / "joint"), joint_ablation=str(tmp / "models" / "joint_ablation"))
    raw["networks"] = {"image_size": 32, "segmenter": {"width": 8, "depth": 2, "offsets": True, "image_size": 16},
                       "inpainter": {"width": 8, "residual_blocks": 1, "dilation": 2, "discriminator_width": 8,
                                     "hole_fill": "smooth", "image_head": "residual01"}}
    raw["trainer"].update(num_workers=0, log_every_n_steps=1)
    raw["pretrain_segmenter"].update(epochs=1, batch_size=4)
    raw["pretrain_inpainter"].update(epochs=1, batch_size=4)
    raw["finetune_joint"].update(epochs=1, batch_size=4)
    return raw


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    """Tiny scenes and pairs (32 px) on disk, and the raw params that point at them."""
    from pipelines.stages import scenes, synthesize

    tmp = tmp_path_factory.mktemp("train")
    raw = tiny_training_raw(tmp)
    params = parse_params(raw)
    scenes.run(params)
    synthesize.run(params)
    return tmp, raw


@pytest.fixture(scope="session")
def trained(tiny, tmp_path_factory) -> dict:
    """`tiny` with every training stage run once, into folders of its own (other tests retrain `tiny`'s):
    the raw params of a pipeline whose checkpoints all exist."""
    from pipelines.stages import finetune_joint, finetune_joint_ablation, pretrain_inpainter, pretrain_segmenter

    tmp = tmp_path_factory.mktemp("trained")
    raw = json.loads(json.dumps(tiny[1]))
    for key in ("segmenter", "inpainter", "joint", "joint_ablation", "reports"):
        raw["paths"][key] = str(tmp / key)
    run_stages(raw, (pretrain_segmenter, pretrain_inpainter, finetune_joint, finetune_joint_ablation), tmp)
    return raw


def run_stages(raw: dict, stages, folder: Path) -> None:
    """Each stage module's `run` on the params `raw`, in order, tracked in an MLflow store of its own under
    `folder` (the caller's MLFLOW_TRACKING_URI is restored afterwards)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    try:
        params = parse_params(raw)
        for stage in stages:
            stage.run(params)
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory) -> tuple[dict, dict]:
    """`trained` exported to ONNX (stage `export`) into a folder of its own: (raw params, model.json)."""
    import copy

    from pipelines.stages import export

    raw = copy.deepcopy(trained)
    tmp = tmp_path_factory.mktemp("export")
    raw["paths"].update(onnx=str(tmp / "onnx"), reports=str(tmp / "reports"))
    return raw, export.run(parse_params(raw))


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's test harness (a temporary Prefect server and database) for the session: yields its API URL.
    Flows run in this process report to it; the flow tests read their task runs and logs from it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@contextlib.contextmanager
def flow_environment(repo: Path):
    """The environment the retraining flow runs in for `repo`: MLflow's default store (sqlite:///mlflow.db in
    the repository) and a BentoML store of its own beside it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("BENTOML_HOME", str(repo.parent / "bentoml"))
        patch.setenv("BENTOML_DO_NOT_TRACK", "True")
        yield


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory, prefect_server):
    """A tiny copy of the repository after one run of the retraining flow (every DVC stage, registration,
    promotion, the champion's Bento) on Prefect's test server: (repository, the flow's final state). The flow
    tests use it as it is; the DVC tests take a copy (`built_repo_copy`), so the tiny graph trains once."""
    from pipelines.retrain import retrain

    repo = tiny_repo(tmp_path_factory.mktemp("flow") / "repo")
    with flow_environment(repo):
        state = retrain(repo=str(repo), return_state=True)
    return repo, state


def built_repo_copy(flow_run: tuple[Path, object], dest: Path) -> Path:
    """A copy of the flow-built repository at `dest` (git history, DVC cache, outputs, dvc.lock) without its
    MLflow store, whose runs point at the original's folders; `dvc status` is clean there."""
    source, state = flow_run
    assert state.is_completed(), f"the retraining flow on the tiny repository failed: {state.message}"
    ignore = shutil.ignore_patterns("mlflow.db", "mlruns", "mlartifacts")
    shutil.copytree(source, dest, symlinks=True, ignore=ignore)
    return dest
