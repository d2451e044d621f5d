"""The procedural scene generator: determinism, exact labels and masks, content, anti-aliasing, occlusion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from components import scene_figures as figs
from components.scenes import (
    BALL,
    CATEGORIES,
    MIN_PIXELS,
    PERSON,
    Layer,
    SceneConfig,
    Stuff,
    composite,
    generate_scene,
    layer_mask,
    layout_stuff,
    place_things,
)

THING_IDS = {c.id for c in CATEGORIES if c.isthing}
STUFF_IDS = {c.id for c in CATEGORIES if not c.isthing}
N_SCENES = 200


def _planned(seed: int, config: SceneConfig):
    """generate_scene's steps one by one, so tests can see the layers behind a scene."""
    rng = np.random.default_rng(seed)
    stuff = layout_stuff(rng, config.size)
    layers = place_things(rng, config, stuff)
    return stuff, layers, composite(stuff, layers)


@pytest.fixture(scope="module")
def corpus():
    config = SceneConfig()
    return [_planned(seed, config) for seed in range(N_SCENES)]


def test_categories_contract():
    ids = [c.id for c in CATEGORIES]
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    flags = [c.isthing for c in CATEGORIES]
    assert flags == sorted(flags, reverse=True), "things come first"
    assert CATEGORIES[0].name == "person" and CATEGORIES[0].id == 1
    names = {c.name for c in CATEGORIES}
    assert {"person", "car", "ball", "sky", "grass", "wall-brick", "water", "road"} <= names
    assert len(STUFF_IDS) >= 5 and min(STUFF_IDS) >= 100 and max(THING_IDS) < 100


def test_steps_compose_to_generate_scene(corpus):
    for seed in (0, 1, 2):
        scene = generate_scene(np.random.default_rng(seed), SceneConfig())
        assert scene.image.tobytes() == corpus[seed][2].image.tobytes()


def test_same_seed_same_bytes_different_seed_differs():
    config = SceneConfig(crowd_prob=0.5)
    a, b, c = (generate_scene(np.random.default_rng(s), config) for s in (11, 11, 12))
    assert a.image.tobytes() == b.image.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert [(i.category_id, i.iscrowd, i.mask.tobytes()) for i in a.instances] == \
           [(i.category_id, i.iscrowd, i.mask.tobytes()) for i in b.instances]
    assert a.image.tobytes() != c.image.tobytes()


def test_global_numpy_rng_untouched():
    state = np.random.get_state()
    generate_scene(np.random.default_rng(5), SceneConfig(crowd_prob=1.0, occlusion_prob=1.0))
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


@pytest.mark.parametrize("size, supersample", [(128, 2), (96, 1), (64, 3)])
def test_shapes_and_dtypes(size, supersample):
    scene = generate_scene(np.random.default_rng(3), SceneConfig(size=size, supersample=supersample))
    assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
    assert scene.labels.shape == (size, size) and scene.labels.dtype == np.uint8
    for inst in scene.instances:
        assert inst.mask.shape == (size, size) and inst.mask.dtype == bool


def test_labels_and_instance_masks_agree_exactly(corpus):
    valid = np.array(sorted(THING_IDS | STUFF_IDS))
    for _, _, scene in corpus:
        assert np.isin(scene.labels, valid).all(), "every pixel labelled with a known category, no 0"
        owners = np.zeros(scene.labels.shape, np.int32)
        for inst in scene.instances:
            assert inst.mask.sum() >= MIN_PIXELS
            assert (scene.labels[inst.mask] == inst.category_id).all()
            owners += inst.mask
        assert owners.max() <= 1, "instance masks are pairwise disjoint"
        for cid in THING_IDS:  # the thing pixels of the label map are exactly the union of the masks
            union = np.zeros(scene.labels.shape, bool)
            for inst in scene.instances:
                if inst.category_id == cid:
                    union |= inst.mask
            assert np.array_equal(union, scene.labels == cid)


def test_persons_common_and_varied_in_size(corpus):
    with_person = sum(any(i.category_id == PERSON and not i.iscrowd for i in scene.instances)
                      for _, _, scene in corpus)
    assert with_person > 0.5 * N_SCENES
    heights = []
    for _, _, scene in corpus:
        for inst in scene.instances:
            rows = np.flatnonzero(inst.mask.any(axis=1))
            inside = rows[0] > 0 and rows[-1] < scene.labels.shape[0] - 1
            if inst.category_id == PERSON and not inst.iscrowd and inside:
                heights.append((rows[-1] - rows[0] + 1) / scene.labels.shape[0])  # not cut by the border
    assert min(heights) < 0.35 and max(heights) > 0.6


def test_all_thing_and_stuff_classes_appear(corpus):
    seen = set()
    for _, _, scene in corpus:
        seen |= set(np.unique(scene.labels).tolist())
    assert STUFF_IDS <= seen and THING_IDS <= seen


def test_things_stand_below_the_horizon(corpus):
    for stuff, layers, _ in corpus:
        assert all(layer.depth > stuff.horizon for layer in layers)


def test_stuff_textures_are_not_flat_and_vary_between_images(corpus):
    means: dict[int, list[float]] = {cid: [] for cid in STUFF_IDS}
    for _, _, scene in corpus:
        grey = scene.image.astype(np.float32).mean(axis=2)
        detail = grey - cv2.blur(grey, (3, 3))  # high-pass: fine texture
        for cid in np.unique(scene.labels):
            if cid not in STUFF_IDS:
                continue
            region = cv2.erode((scene.labels == cid).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            if region.sum() < 400:
                continue
            assert grey[region].std() > 6.0, f"class {cid} looks flat"
            if cid != 101:  # sky is smooth by nature: gradient and soft clouds only
                assert detail[region].std() > 2.5, f"class {cid} has no fine texture"
            means[int(cid)].append(float(scene.image[region].mean()))
    for cid, values in means.items():
        assert len(values) >= 5 and np.std(values) > 4.0, f"class {cid} looks the same in every image"


BACKGROUND = np.array([0.1, 0.8, 0.2], np.float32)  # a colour no person part is close to


def _flat_stuff(size: int) -> Stuff:
    rgb = np.broadcast_to(BACKGROUND[:, None, None], (3, size, size)).copy()
    return Stuff(rgb, np.full((size, size), 102, np.uint8), 10.0, 12.0)


def test_person_edges_are_anti_aliased():
    """Against a hard composite (person colour where alpha >= 0.5, background elsewhere), the boundary
    pixels of the real composite hold blended values, and only because of supersampling."""
    blended = {}
    for ss in (1, 2):  # the geometry does not depend on ss: the same person, drawn hard and anti-aliased
        sprite = figs.draw_person(np.random.default_rng(4), 32.3, 60.0, 48.0, 64, ss, 0.0)
        partial = (sprite.alpha > 0.0) & (sprite.alpha < 1.0)
        assert partial.sum() == 0 if ss == 1 else partial.sum() > 40
        scene = composite(_flat_stuff(64), [Layer(PERSON, 60.0, [sprite])])
        hard = np.broadcast_to(BACKGROUND[:, None, None], (3, 64, 64)).copy()
        h, w = sprite.alpha.shape
        inside = sprite.alpha >= 0.5
        hard[:, sprite.y0:sprite.y0 + h, sprite.x0:sprite.x0 + w][:, inside] = \
            sprite.premult[:, inside] / sprite.alpha[inside]
        hard = (np.clip(hard, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
        mask = scene.instances[0].mask.astype(np.uint8)
        cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
        band = cv2.dilate(mask, cross) != cv2.erode(mask, cross)  # one pixel either side of the boundary
        diff = np.abs(scene.image.astype(int) - hard.astype(int)).max(axis=2)
        blended[ss] = float((diff[band] > 2).mean())
    assert blended[1] == 0.0
    assert blended[2] > 0.2  # ss=2: about half the inner and a tenth of the outer band pixels


def test_person_is_shaded_and_patterned_not_flat():
    sprite = figs.draw_person(np.random.default_rng(8), 32.0, 62.0, 56.0, 64, 2, 0.8)
    colours = sprite.premult[:, sprite.alpha > 0.99] / sprite.alpha[sprite.alpha > 0.99]  # (3, N) interior
    assert len(np.unique(np.round(colours * 255).astype(int), axis=1).T) > 50


def _occluded_persons(stuff: Stuff, layers: list[Layer], scene) -> int:
    """Visible person masks lying inside a strictly larger alpha >= 0.5 silhouette of a person layer."""
    size = scene.labels.shape[0]
    full = [layer_mask(layer, size) for layer in layers if layer.category_id == PERSON and not layer.iscrowd]
    return sum(any((f >= inst.mask).all() and f.sum() > inst.mask.sum() for f in full)
               for inst in scene.instances if inst.category_id == PERSON and not inst.iscrowd)


def test_occluder_is_placed_over_a_person():
    for prob, low, high in ((0.0, 0.0, 0.0), (1.0, 0.7, 1.0)):
        config = SceneConfig(min_things=1, max_things=1, person_prob=1.0, crowd_prob=0.0, occlusion_prob=prob)
        share = np.mean([_occluded_persons(*_planned(seed, config)) > 0 for seed in range(30)])
        assert low <= share <= high


def test_occlusion_happens_at_default_settings(corpus):
    assert sum(_occluded_persons(*planned) > 0 for planned in corpus) > 0.1 * N_SCENES


def test_crowd_is_one_instance_of_several_members():
    crowds = 0
    for seed in range(12):
        _, layers, scene = _planned(seed, SceneConfig(crowd_prob=1.0))
        groups = [layer for layer in layers if layer.iscrowd]
        assert len(groups) == 1 and len(groups[0].sprites) >= 4 and groups[0].category_id in (PERSON, BALL)
        crowd = [inst for inst in scene.instances if inst.iscrowd]
        assert len(crowd) <= 1
        crowds += len(crowd)
    assert crowds >= 8
    for seed in range(12):
        scene = generate_scene(np.random.default_rng(seed), SceneConfig(crowd_prob=0.0))
        assert not any(inst.iscrowd for inst in scene.instances)
