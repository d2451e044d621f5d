"""COCO reading and writing: round trips through pycocotools, structural checks, label-map sources."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from components.coco import (
    CROWD,
    DatasetError,
    Layer,
    SegmentationRecipe,
    annotation_problem,
    category_ids,
    decode_annotation,
    encode_rle,
    encode_uncompressed_rle,
    load_coco,
    mask_bbox,
    mask_to_polygons,
    render_label_map,
    render_maps,
    segmentation_recipe,
)


@pytest.fixture
def blob() -> np.ndarray:
    mask = np.zeros((30, 40), bool)
    mask[5:20, 8:30] = True
    mask[0:3, 0:2] = True  # touches the corner: runs start with object pixels
    return mask


def test_rle_round_trips(blob):
    assert np.array_equal(decode_annotation(encode_rle(blob), 30, 40), blob)
    uncompressed = encode_uncompressed_rle(blob)
    assert uncompressed["counts"][0] == 0  # first run counts zeros, here none
    assert sum(uncompressed["counts"]) == blob.size
    assert np.array_equal(decode_annotation(uncompressed, 30, 40), blob)
    # and pycocotools agrees with the conversion
    rle = mask_utils.frPyObjects(uncompressed, 30, 40)
    assert np.array_equal(mask_utils.decode(rle).astype(bool), blob)


def test_polygons_cover_the_mask_and_refuse_holes(blob):
    polygons = mask_to_polygons(blob)
    assert polygons is not None and len(polygons) == 2
    assert np.array_equal(decode_annotation(polygons, 30, 40), blob)
    limb = np.zeros((64, 64), np.uint8)
    cv2.line(limb, (10, 10), (50, 40), 1, 2)  # thin diagonal strokes survive the round trip exactly
    cv2.circle(limb, (30, 52), 6, 1, -1)
    assert np.array_equal(decode_annotation(mask_to_polygons(limb.astype(bool)), 64, 64), limb.astype(bool))
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False
    assert mask_to_polygons(ring) is None


def test_mask_bbox(blob):
    assert mask_bbox(blob) == [0, 0, 30, 20]
    assert mask_bbox(np.zeros((4, 4), bool)) == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("segmentation", "problem"),
    [
        ([[1, 2, 3, 4]], "fewer than 3 points"),
        ([[1, 2, 3, 4, 5, 6, 7]], "odd number"),
        ([], "empty polygon"),
        ([[1, 2, "x", 4, 5, 6]], "non-numeric"),
        ({"size": [10, 10], "counts": [5, 5]}, "do not add up"),
        ({"size": [9, 10], "counts": "abc"}, "does not match"),
        ({"size": [10, 10]}, "without 'counts'"),
        (None, "missing"),
    ],
)
def test_annotation_problems(segmentation, problem):
    image = {"height": 10, "width": 10}
    assert problem in annotation_problem({"segmentation": segmentation}, image)


def test_sound_annotations_pass(blob):
    image = {"height": 30, "width": 40}
    for seg in (mask_to_polygons(blob), encode_rle(blob), encode_uncompressed_rle(blob)):
        assert annotation_problem({"segmentation": seg}, image) is None


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="instances not found: .*nope.json"):
        load_coco(tmp_path / "nope.json", "instances")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"broken.json is not valid JSON: .* line 1"):
        load_coco(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="has no 'categories' list"):
        load_coco(partial)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"images": [], "categories": [],
                                 "annotations": [{"id": 7, "image_id": 1}, {"id": 7, "image_id": 2}]}))
    with pytest.raises(DatasetError, match=r"'annotations' ids are not unique, e.g. \[7\]"):
        load_coco(twice)
    no_size = tmp_path / "no_size.json"
    no_size.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match=r"lacks \['height', 'width'\]"):
        load_coco(no_size)


def test_unknown_category_lists_known(tiny_coco):
    coco = load_coco(tiny_coco / "annotations" / "instances.json")
    assert category_ids(coco, ["person"]) == [1]
    with pytest.raises(DatasetError, match=r"unknown target categories \['dog'\].*\['person', 'sports ball'\]"):
        category_ids(coco, ["dog"])


def test_label_map_sources_agree(tiny_coco):
    """stuff json + instances, panoptic PNG and label-map PNG describe the same image."""
    instances = load_coco(tiny_coco / "annotations" / "instances.json")
    stuff = load_coco(tiny_coco / "annotations" / "stuff.json")
    panoptic_json = json.loads((tiny_coco / "annotations" / "panoptic.json").read_text())
    panoptic = {e["image_id"]: e for e in panoptic_json["annotations"]}
    image = instances.imgs[4]  # RLE person + uncompressed-RLE crowd: exact
    maps = {}
    for kind in ("stuff", "panoptic", "label_maps", "instances"):
        recipe = segmentation_recipe(image, instances, kind, stuff, panoptic,
                                     tiny_coco / "panoptic", tiny_coco / "labels")
        maps[kind] = render_label_map(recipe, image["height"], image["width"])
    truth = cv2.imread(str(tiny_coco / "labels" / "000000000004.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(truth)) >= {1, 101, 102}
    for kind in ("stuff", "panoptic", "label_maps"):
        assert np.array_equal(maps[kind], truth), kind
    # instances only: things labeled, everything else 0
    assert np.array_equal(maps["instances"] > 0, np.isin(truth, [1, 2]))


def test_instance_maps_follow_the_label_maps(tiny_coco):
    """Every source that keeps instances gives one id per thing annotation (panoptic: per thing segment), on
    exactly the label map's thing pixels, and CROWD on a crowd annotation; a label-map source gives none."""
    instances = load_coco(tiny_coco / "annotations" / "instances.json")
    stuff = load_coco(tiny_coco / "annotations" / "stuff.json")
    panoptic_json = json.loads((tiny_coco / "annotations" / "panoptic.json").read_text())
    panoptic = {e["image_id"]: e for e in panoptic_json["annotations"]}
    image = instances.imgs[4]  # a person and a crowd of people
    crowd = next(a for a in instances.imgToAnns[4] if a["iscrowd"])
    for kind in ("stuff", "panoptic", "instances"):
        recipe = segmentation_recipe(image, instances, kind, stuff, panoptic, tiny_coco / "panoptic",
                                     tiny_coco / "labels")
        labels, ids = render_maps(recipe, image["height"], image["width"])
        assert ids.dtype == np.uint16 and np.array_equal(ids > 0, np.isin(labels, [1, 2])), kind
        assert np.array_equal(labels, render_label_map(recipe, image["height"], image["width"])), kind
        if kind != "panoptic":  # the fixture's panoptic PNG keeps one segment per category
            assert set(np.unique(ids)) == {0, 1, CROWD}, kind
            assert (ids[decode_annotation(crowd["segmentation"], image["height"], image["width"])] == CROWD).all()
    two = SegmentationRecipe("instances", layers=(Layer(1, encode_rle(np.eye(8, dtype=bool)), instance=True),
                                                  Layer(1, encode_rle(np.eye(8, dtype=bool)[::-1]), instance=True)))
    labels, ids = render_maps(two, 8, 8)
    assert set(np.unique(ids)) == {0, 1, 2} and ids[0, 7] == 2 and ids[3, 4] == 2 and ids[0, 0] == 1
    recipe = segmentation_recipe(image, instances, "label_maps", label_dir=tiny_coco / "labels")
    assert render_maps(recipe, image["height"], image["width"])[1] is None


def test_missing_label_map_is_named(tiny_coco):
    instances = load_coco(tiny_coco / "annotations" / "instances.json")
    image = dict(instances.imgs[1], file_name="ghost.jpg")
    recipe = segmentation_recipe(image, instances, "label_maps", label_dir=tiny_coco / "labels")
    with pytest.raises(DatasetError, match="label map not found or unreadable: .*ghost.png"):
        render_label_map(recipe, image["height"], image["width"])


def test_malformed_background_regions_are_left_out():
    recipe = SegmentationRecipe("stuff", layers=(
        Layer(101, encode_rle(np.ones((8, 8), bool))),
        Layer(7, [[1, 2, 3]]),  # broken polygon: skipped, not fatal
        Layer(1, {"size": [4, 4], "counts": "0"}),  # RLE of the wrong size: skipped
    ))
    assert (render_label_map(recipe, 8, 8) == 101).all()
