"""The training dataset: tensors, class mapping, augmentation that keeps I == I_G outside M_G."""

from __future__ import annotations

import pytest
import torch

from pipelines.data import PairsDataset, pairs_config
from pipelines.params import parse_params
from pipelines.stages import synthesize
from tests.conftest import tiny_params_raw


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from tests.conftest import write_tiny_coco

    tmp = tmp_path_factory.mktemp("data")
    root = write_tiny_coco(tmp / "coco")
    synthesize.run(parse_params(tiny_params_raw(tmp, root)))
    return str(tmp / "pairs")


def test_items(pairs):
    config, categories, targets = pairs_config(pairs, 32, 1.0, seed=3)
    assert [c["id"] for c in categories] == [1, 2, 101, 102] and targets == [1]
    dataset = PairsDataset(config, "train", augment=True)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["image"].shape == item["background"].shape == (3, 32, 32)
        assert item["mask"].shape == item["edges"].shape == (1, 32, 32)
        assert item["seg"].dtype == torch.long and int(item["seg"].max()) <= len(categories)
        outside = item["mask"][0] == 0
        assert torch.equal(item["image"][:, outside], item["background"][:, outside])
        assert torch.equal(item["seg"][outside], item["bg_seg"][outside])
        assert set(torch.unique(item["edges"]).tolist()) <= {0.0, 1.0}
    again = PairsDataset(config, "train", augment=True)
    assert all(torch.equal(again[5][k], dataset[5][k]) for k in dataset[5])  # (seed, epoch, index) fixes the draw
    epoch0 = [dataset[i]["image"] for i in range(len(dataset))]
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i]["image"], epoch0[i]) for i in range(len(dataset)))


def test_the_pasted_object_is_labelled_on_every_pixel_of_m_g_at_the_working_size(pairs):
    """The pairs label every changed pixel (synthesize.label_alpha 0.1): resized to the working size like
    M_G (any weight), S of I is the pasted person on every pixel of the resized M_G, and so is the
    instance map's pasted instance (the segmenter learns to select what has to be filled)."""
    config, _, targets = pairs_config(pairs, 32, 1.0, seed=0, offsets=True)
    dataset = PairsDataset(config, "train", augment=False)
    for index in range(len(dataset)):
        item = dataset[index]
        inside = item["mask"][0] > 0
        assert (item["seg"][inside] == targets[0]).all()


def test_random_masks_replace_the_object(pairs):
    config, _, _ = pairs_config(pairs, 32, 1.0, seed=0)
    dataset = PairsDataset(config, "train", augment=False, mask_source="random")
    ratios = []
    for index in range(len(dataset)):
        item = dataset[index]
        assert torch.equal(item["image"], item["background"])  # no object: the photo is the background
        ratios.append(item["mask"].mean().item())
    assert min(ratios) > 0 and max(ratios) < 0.4 and max(ratios) > 0.2


def test_missing_pairs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `dvc repro synthesize`"):
        pairs_config(str(tmp_path / "none"), 32, 1.0, 0)


def test_object_pairs_draw_the_object_items_from_the_first_n_pairs(pairs):
    config, _, _ = pairs_config(pairs, 32, 1.0, seed=0)
    full = PairsDataset(config, "train", augment=False)
    few = PairsDataset(config, "train", augment=False, object_pairs=3)
    assert len(few) == len(full)  # as many items (so as many updates) from a smaller set
    for index in range(len(few)):
        assert torch.equal(few[index]["mask"], full[index % 3]["mask"])
        assert torch.equal(few[index]["image"], full[index % 3]["image"])
    few.mask_source = "random"  # the random-mask epochs still see every background
    assert not torch.equal(few[3]["background"], few[0]["background"])
    with pytest.raises(ValueError, match=r"object_pairs is 999, but the train split .* has \d+ pairs"):
        PairsDataset(config, "train", augment=False, object_pairs=999)


def test_the_offset_target_covers_every_instance_where_the_instances_are_kept(pairs, tmp_path):
    """With the pairs' instance maps every thing pixel but the crowds is supervised, each instance's votes
    (position + offset) all landing on one point, its center, also after a flip; pairs without the maps
    (a label-map dataset) fall back to M_G's own offsets, supervised on M_G only."""
    import json
    import shutil

    import numpy as np

    from components.instances import pasted_offsets

    config, categories, _ = pairs_config(pairs, 32, 1.0, seed=0, offsets=True)
    thing_classes = {i + 1 for i, c in enumerate(categories) if c.get("isthing", True)}
    ys, xs = np.mgrid[0:32, 0:32]
    for augment in (False, True):
        dataset = PairsDataset(config, "train", augment=augment)
        for index in range(len(dataset)):
            item = dataset[index]
            supervised = item["offset_weight"][0].numpy() > 0
            assert set(item["seg"][torch.from_numpy(supervised)].tolist()) <= thing_classes
            assert supervised.any()
            offsets = item["offsets"].numpy()
            votes = np.stack([ys + offsets[0], xs + offsets[1]])[:, supervised]  # (2, pixels)
            centers = np.unique(np.round(votes, 3), axis=1)
            assert centers.shape[1] < supervised.sum() / 4  # a few points: one per instance
    bare = tmp_path / "bare"  # the same pairs without their instance maps
    shutil.copytree(pairs, bare)
    manifest = bare / "train" / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for record in records:
        del record["files"]["instances"], record["files"]["bg_instances"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    item = PairsDataset(pairs_config(str(bare), 32, 1.0, seed=0, offsets=True)[0], "train", augment=False)[0]
    target, weight = pasted_offsets(item["mask"][0].numpy() > 0)
    assert np.array_equal(item["offsets"].numpy(), target)
    assert np.array_equal(item["offset_weight"][0].numpy(), weight)
    assert np.array_equal(weight > 0, item["mask"][0].numpy() > 0)
