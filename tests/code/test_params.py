"""The params schema accepts the committed file and rejects bad values by their key."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from pipelines.params import ParamsError, load_params, parse_params
from tests.conftest import REPO, repo_params_raw


def test_committed_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.synthesize.target_categories == ["person"]
    assert params.mask_ratio_buckets == [0.0, 0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("synthesize", "blendng"), {}, "synthesize.blendng: Extra inputs are not permitted"),
        (("scenes", "size"), 8, "scenes.size"),
        (("synthesize", "splits", "train"), 0.95, "synthesize.splits: Value error, split fractions must sum to 1"),
        (("synthesize", "blending", "poisson"), -1.0, "synthesize.blending.poisson"),
        (("synthesize", "blending", "cubist"), 1.0, "synthesize.blending.cubist"),
        (("dataset", "segmentation"), "semantic", "dataset.segmentation"),
        (("synthesize", "feather_sigma"), [2.0, 1.0], "synthesize.feather_sigma"),
        (("mask_ratio_buckets",), [0.0, 0.2, 0.1], "mask_ratio_buckets"),
        (("seed",), -3, "seed"),
        (("scenes", "min_things"), 9, "min_things (9) > max_things"),
        (("networks", "segmenter", "image_size"), 96, "segmenter.image_size 96 must divide networks.image_size 128"),
        (("networks", "segmenter", "image_size"), 8, "image_size 8 must be a multiple of 2**depth = 16"),
    ],
)
def test_bad_values_are_named(path, value, message):
    raw = copy.deepcopy(repo_params_raw())
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert message in str(err.value)


def test_missing_key_is_named():
    raw = repo_params_raw()
    del raw["synthesize"]["workers"]
    with pytest.raises(ParamsError, match=r"synthesize\.workers: Field required"):
        parse_params(raw)


def test_segmentation_source_needs_its_file():
    raw = repo_params_raw()
    raw["dataset"].update(segmentation="panoptic", panoptic=None)
    with pytest.raises(ParamsError, match=r"needs dataset\.panoptic"):
        parse_params(raw)


def test_params_are_frozen():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ValidationError, match="frozen"):
        params.synthesize.seed = 3  # type: ignore[misc]


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
