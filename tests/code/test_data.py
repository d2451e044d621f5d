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


def test_the_contact_target_covers_the_whole_photo_where_the_instances_are_kept(pairs, tmp_path):
    """With the background's instance map the contact target marks every pair of touching instances (the
    pasted object is one) and is supervised everywhere; pairs without the map (a label-map dataset) fall
    back to M_G's contacts, supervised near it."""
    import json
    import shutil

    import numpy as np

    from components.instances import contact_target

    config, _, _ = pairs_config(pairs, 32, 1.0, seed=0, contact_band=1)
    touching = 0
    for augment in (False, True):  # flipped with the image: the band stays on thing pixels
        dataset = PairsDataset(config, "train", augment=augment)
        for index in range(len(dataset)):
            item = dataset[index]
            crowd = item["contact_weight"][0] == 0  # unsupervised only on crowds, which are things
            assert set(item["seg"][crowd].tolist()) <= set(config.thing_classes)
            on = item["contact"][0] > 0
            assert set(item["seg"][on].tolist()) <= set(config.thing_classes)
            touching += bool(on.any())
    assert touching > 0
    bare = tmp_path / "bare"  # the same pairs without their instance maps
    shutil.copytree(pairs, bare)
    manifest = bare / "train" / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for record in records:
        del record["files"]["instances"], record["files"]["bg_instances"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    item = PairsDataset(pairs_config(str(bare), 32, 1.0, seed=0, contact_band=1)[0], "train", augment=False)[0]
    target, weight = contact_target(item["mask"][0].numpy() > 0, item["seg"].numpy(), config.thing_classes, 1)
    assert np.array_equal(item["contact"][0].numpy(), target)
    assert np.array_equal(item["contact_weight"][0].numpy(), weight)
    assert item["contact_weight"].min() == 0
