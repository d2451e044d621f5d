"""The synthesize stage on a tiny real-COCO-layout root: outputs, splits, determinism, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.coco import CROWD, DatasetError, mask_bbox
from pipelines.params import parse_params
from pipelines.stages.synthesize import main, run
from tests.conftest import tiny_params_raw


def _records(pairs: Path) -> list[dict]:
    return [json.loads(line) for split in ("train", "val", "test")
            for line in (pairs / split / "manifest.jsonl").read_text().splitlines()]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "summary.json"}


def test_pairs_are_complete_and_consistent(coco_params):
    summary = run(coco_params)
    pairs = Path(coco_params.paths.pairs)
    records = _records(pairs)
    assert summary["pairs"] == {"train": 16, "val": 4, "test": 4} and len(records) == 24
    assert summary["skipped"] == {"image file missing": 1, "annotation on a missing image": 1, "crowd annotation": 1}
    modes = set()
    for record in records:
        split_dir = pairs / record["split"]
        image = cv2.imread(str(split_dir / record["files"]["images"]))
        background = cv2.imread(str(split_dir / record["files"]["backgrounds"]))
        mask = cv2.imread(str(split_dir / record["files"]["masks"]), cv2.IMREAD_UNCHANGED) > 0
        seg = cv2.imread(str(split_dir / record["files"]["segs"]), cv2.IMREAD_UNCHANGED)
        bg_seg = cv2.imread(str(split_dir / record["files"]["bg_segs"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (48, 48, 3) and seg.shape == (48, 48) and seg.dtype == np.uint8
        assert np.array_equal(image[~mask], background[~mask])  # M_G is every changed pixel
        assert record["bbox"] == mask_bbox(mask)
        assert record["mask_ratio"] == pytest.approx(mask.mean(), abs=1e-6)
        assert np.array_equal(seg[~mask], bg_seg[~mask])
        assert (seg[mask] == 1).mean() > 0.5  # the pasted person is labeled person in S
        assert set(np.unique(bg_seg)) <= {0, 1, 2, 101, 102}
        bg_ids = cv2.imread(str(split_dir / record["files"]["bg_instances"]), cv2.IMREAD_UNCHANGED)
        ids = cv2.imread(str(split_dir / record["files"]["instances"]), cv2.IMREAD_UNCHANGED)
        assert bg_ids.dtype == ids.dtype == np.uint16  # cropped and flipped with the labels: on their thing pixels
        assert np.array_equal(bg_ids > 0, np.isin(bg_seg, [1, 2])) and np.array_equal(ids > 0, np.isin(seg, [1, 2]))
        pasted = ids == ids[ids != CROWD].max()  # the pasted person, one more instance, where S labels it
        assert np.array_equal(ids[~pasted], bg_ids[~pasted]) and (seg[pasted] == 1).all()
        assert np.array_equal(pasted, mask)  # label_alpha 0.1 (params.yaml): every pixel the paste changed
        assert record["object"]["category"] == "person"
        modes.add(record["blend"])
    assert modes == {"none", "gaussian", "poisson", "motion_blur"}
    assert sum(summary["buckets"]["train"].values()) == 16
    assert all(summary["buckets"]["train"][b] >= 2 for b in ("0-10", "10-20", "20-30", "30-40"))


def test_label_alpha_leaves_the_faint_edge_out_of_the_labels(tmp_path, tiny_coco):
    """At label_alpha 0.5 S and the instance map label the pasted object's core only: inside M_G, and short
    of it on the feathered and blurred edges (M_G still holds every changed pixel)."""
    raw = tiny_params_raw(tmp_path, tiny_coco)
    raw["synthesize"]["label_alpha"] = 0.5
    params = parse_params(raw)
    run(params)
    pairs, short = Path(params.paths.pairs), 0
    for record in _records(pairs):
        split_dir = pairs / record["split"]
        mask = cv2.imread(str(split_dir / record["files"]["masks"]), cv2.IMREAD_UNCHANGED) > 0
        ids = cv2.imread(str(split_dir / record["files"]["instances"]), cv2.IMREAD_UNCHANGED)
        pasted = ids == ids[ids != CROWD].max()
        assert (pasted <= mask).all()
        short += record["blend"] in ("gaussian", "motion_blur") and (pasted < mask).any()
    assert short > 0


def test_splits_share_no_source_image(coco_params):
    run(coco_params)
    used: dict[str, set[int]] = {}
    for record in _records(Path(coco_params.paths.pairs)):
        used.setdefault(record["split"], set()).update(
            {record["object"]["image_id"], record["background"]["image_id"]})
        assert record["object"]["image_id"] != record["background"]["image_id"]
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]


def test_same_seed_same_bytes_for_any_worker_count(tmp_path, tiny_coco):
    digests = []
    for name, workers, seed in (("a", 1, 0), ("b", 2, 0), ("c", 1, 1)):
        raw = tiny_params_raw(tmp_path / name, tiny_coco)
        raw["synthesize"].update(workers=workers, seed=seed)
        run(parse_params(raw))
        digests.append(_digest(tmp_path / name / "pairs"))
    assert digests[0] == digests[1]
    assert digests[0].keys() == digests[2].keys() and digests[0] != digests[2]


@pytest.mark.parametrize("segmentation", ["panoptic", "label_maps", "instances"])
def test_every_segmentation_source(tmp_path, tiny_coco, segmentation):
    raw = tiny_params_raw(tmp_path, tiny_coco)
    raw["dataset"]["segmentation"] = segmentation
    summary = run(parse_params(raw))
    assert summary["pairs"]["train"] == 16
    bg_seg = cv2.imread(str(tmp_path / "pairs" / "train" / "bg_segs" / "000000.png"), cv2.IMREAD_UNCHANGED)
    stuff_present = bool(np.isin(bg_seg, [101, 102]).any())
    assert stuff_present == (segmentation != "instances")
    kept = segmentation != "label_maps"  # label maps keep no instances: no files, no manifest entries
    record = _records(tmp_path / "pairs")[0]
    assert ("instances" in record["files"]) == ("bg_instances" in record["files"]) == kept
    assert (tmp_path / "pairs" / "train" / "instances").is_dir() == kept
    assert ("instances" in json.loads((tmp_path / "pairs" / "summary.json").read_text())["files"]) == kept


def _fails(raw: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        run(parse_params(raw))


def test_bad_roots_and_files_are_named(tmp_path, tiny_coco):
    raw = tiny_params_raw(tmp_path, tiny_coco)
    raw["dataset"]["root"] = str(tmp_path / "nowhere")
    _fails(raw, r"dataset root \(dataset.root\) not found: .*nowhere")
    raw = tiny_params_raw(tmp_path, tiny_coco)
    raw["dataset"]["instances"] = "annotations/missing.json"
    _fails(raw, r"instances file \(dataset.instances\) not found: .*missing.json")
    raw = tiny_params_raw(tmp_path, tiny_coco)
    raw["synthesize"]["target_categories"] = ["unicorn"]
    _fails(raw, r"unknown target categories \['unicorn'\]; the dataset has: \['person', 'sports ball'\]")
    (tiny_coco / "annotations" / "stuff.json").write_text('{"images": [}')
    _fails(tiny_params_raw(tmp_path, tiny_coco), r"stuff file .*stuff.json is not valid JSON")


def test_too_many_bad_annotations_fail_and_keep_old_output(tmp_path, tiny_coco, coco_params):
    run(coco_params)
    pairs = Path(coco_params.paths.pairs)
    before = _digest(pairs)
    instances = tiny_coco / "annotations" / "instances.json"
    data = json.loads(instances.read_text())
    persons = [a for a in data["annotations"] if a["category_id"] == 1 and not a["iscrowd"] and a["image_id"] != 6]
    for ann in persons[:6]:  # image 6's file is missing: its annotation is skipped for that
        ann["segmentation"] = [[1, 2, 3]]
    instances.write_text(json.dumps(data))
    _fails(tiny_params_raw(tmp_path, tiny_coco), r"target annotations are unusable .*malformed: polygon")
    assert _digest(pairs) == before
    assert not [p for p in pairs.parent.iterdir() if ".tmp-" in p.name]
    # under the threshold they are skipped and counted instead
    raw = tiny_params_raw(tmp_path, tiny_coco)
    raw["synthesize"]["max_bad_fraction"] = 0.5
    summary = run(parse_params(raw))
    assert summary["skipped"]["malformed: polygon with fewer than 3 points or an odd number of coordinates"] == 6


def test_too_many_missing_images_fail(tmp_path, tiny_coco):
    for path in sorted((tiny_coco / "train").iterdir())[:5]:
        path.unlink()
    _fails(tiny_params_raw(tmp_path, tiny_coco), r"6 of 20 images .* are missing from .*train")


def test_main_reports_errors_without_traceback(tmp_path, tiny_coco, caplog):
    import yaml

    raw = tiny_params_raw(tmp_path, tiny_coco)
    raw["synthesize"]["target_categories"] = ["unicorn"]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    assert main(["--params", str(params_file)]) == 1
    assert "unknown target categories ['unicorn']" in caplog.text
    params_file.write_text("synthesize: {bogus: 1}\n")
    assert main(["--params", str(params_file)]) == 1
    assert "synthesize.bogus" in caplog.text
