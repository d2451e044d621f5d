"""Data contracts over the generated output: the built-in COCO root and the synthesized pairs.

Checked on a small dataset built here by the real stages, and also on the repository's own
`data/` when `dvc repro` has produced it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.coco import decode_annotation, load_coco
from pipelines.params import Params, parse_params
from pipelines.stages import scenes, synthesize
from tests.conftest import REPO, tiny_params_raw


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Params:
    tmp = tmp_path_factory.mktemp("built")
    raw = tiny_params_raw(tmp)
    raw["scenes"].update(num_images=80, workers=2)
    raw["synthesize"].update(pairs={"train": 40, "val": 12, "test": 12}, workers=2)
    params = parse_params(raw)
    scenes.run(params)
    synthesize.run(params)
    return params


def _roots(built: Params) -> list[tuple[Path, Path]]:
    roots = [(Path(built.paths.scenes), Path(built.paths.pairs))]
    if (REPO / "data" / "pairs" / "summary.json").is_file() and (REPO / "data" / "scenes").is_dir():
        roots.append((REPO / "data" / "scenes", REPO / "data" / "pairs"))
    return roots


def _records(pairs: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (pairs / split / "manifest.jsonl").read_text().splitlines()]


def test_scenes_are_a_valid_coco_root(built):
    for scenes_root, _ in _roots(built):
        instances = load_coco(scenes_root / "annotations" / "instances.json")
        stuff = load_coco(scenes_root / "annotations" / "stuff.json")
        names = {c["name"]: c for c in instances.dataset["categories"] + stuff.dataset["categories"]}
        assert "person" in names and names["person"]["isthing"] == 1
        assert sum(c["isthing"] == 0 for c in names.values()) >= 4
        assert sum(c["isthing"] == 1 for c in names.values()) >= 3
        assert len({a["id"] for a in instances.dataset["annotations"]}) == len(instances.dataset["annotations"])
        kinds = {"polygon": 0, "rle": 0, "crowd": 0}
        for image in instances.dataset["images"][:60]:
            labels = cv2.imread(str(scenes_root / "labels" / (Path(image["file_name"]).stem + ".png")),
                                cv2.IMREAD_UNCHANGED)
            assert labels.shape == (image["height"], image["width"]) and labels.dtype == np.uint8
            assert set(np.unique(labels)) <= set(c["id"] for c in names.values())
            pixels = cv2.imread(str(scenes_root / "images" / image["file_name"]))
            assert pixels.shape == (image["height"], image["width"], 3)
            for ann in instances.imgToAnns[image["id"]] + stuff.imgToAnns[image["id"]]:
                mask = decode_annotation(ann["segmentation"], image["height"], image["width"])
                assert mask.any() and ann["area"] == mask.sum()
                x, y, w, h = ann["bbox"]
                assert w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]
                # annotations agree exactly with the label map
                assert (labels[mask] == ann["category_id"]).all()
                if ann in instances.imgToAnns[image["id"]]:
                    kind = "crowd" if ann["iscrowd"] else "polygon" if isinstance(ann["segmentation"], list) else "rle"
                    kinds[kind] += 1
        assert kinds["polygon"] > 0 and kinds["crowd"] > 0


def test_pairs_contract(built):
    for _, pairs in _roots(built):
        summary = json.loads((pairs / "summary.json").read_text())
        edges = summary["bucket_edges"]
        for split in ("train", "val", "test"):
            records = _records(pairs, split)
            assert len(records) == summary["pairs"][split] > 0
            for record in records[:40]:
                files = {k: pairs / split / v for k, v in record["files"].items()}
                image = cv2.imread(str(files["images"]))
                background = cv2.imread(str(files["backgrounds"]))
                mask = cv2.imread(str(files["masks"]), cv2.IMREAD_UNCHANGED)
                size = summary["image_size"]
                assert image.shape == background.shape == (size, size, 3) and image.dtype == np.uint8
                assert mask.shape == (size, size) and set(np.unique(mask)) <= {0, 255}
                inside = mask > 0
                assert edges[0] < inside.mean() <= edges[-1]
                assert record["mask_ratio"] == pytest.approx(inside.mean(), abs=1e-6)
                assert np.array_equal(image[~inside], background[~inside])
                assert record["bucket"] is not None
                # what was pasted is an object of a target class, labeled as such in S
                assert record["object"]["category_id"] in summary["target_category_ids"]
                seg = cv2.imread(str(files["segs"]), cv2.IMREAD_UNCHANGED)
                assert (seg[inside] == record["object"]["category_id"]).mean() > 0.3
                # the instance maps (where the source keeps them): 16-bit, on exactly the thing pixels
                things = [c["id"] for c in summary["categories"] if c.get("isthing", 1)]
                for ids_kind, labels_kind in (("instances", "segs"), ("bg_instances", "bg_segs")):
                    if ids_kind in files:
                        ids = cv2.imread(str(files[ids_kind]), cv2.IMREAD_UNCHANGED)
                        labels = cv2.imread(str(files[labels_kind]), cv2.IMREAD_UNCHANGED)
                        assert ids.dtype == np.uint16 and np.array_equal(ids > 0, np.isin(labels, things))


def test_no_split_leakage(built):
    for _, pairs in _roots(built):
        sources = {}
        for split in ("train", "val", "test"):
            sources[split] = {r["object"]["image_id"] for r in _records(pairs, split)} | {
                r["background"]["image_id"] for r in _records(pairs, split)}
        assert not sources["train"] & sources["val"]
        assert not sources["train"] & sources["test"]
        assert not sources["val"] & sources["test"]


def test_ratios_spread_over_all_buckets(built):
    for _, pairs in _roots(built):
        summary = json.loads((pairs / "summary.json").read_text())
        train = summary["buckets"]["train"]
        total = sum(train.values())
        assert all(count >= 0.1 * total for count in train.values()), train
        assert all(summary["blend"]["train"][mode] > 0 for mode in ("none", "gaussian", "poisson", "motion_blur"))
