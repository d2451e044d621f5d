"""Procedurally generated, photo-like synthetic scenes: the project's built-in dataset (arrays only).

Design:
- One scene = textured "stuff" layout + a few anti-aliased "things", made in three pure steps that
  ``generate_scene`` chains: ``layout_stuff`` (horizon, sky or brick wall above, one or two ground
  classes below, slightly wavy boundaries; the label map is exact per pixel), ``place_things``
  (persons, cars, balls, dogs standing on the ground, scaled by distance to the horizon, plus an
  optional occluder in front of a person and an optional crowd group) and ``composite``.
- Every thing is one ``Sprite`` (premultiplied colour and sub-pixel coverage alpha, see
  ``scene_figures``). Layers are painted back to front (ground contact lower in the image = nearer =
  later). A pixel belongs to the last layer whose alpha >= 0.5 there; that single owner map gives both
  the label map and the instance masks, so they agree exactly and masks are disjoint. Layers left with
  fewer than ``MIN_PIXELS`` visible pixels are dropped *before* painting (dropping only uncovers
  earlier layers), so every painted thing is annotated and every annotation is non-empty.
- A crowd (several small balls or tiny people) is one layer with many sprites and ``iscrowd=True``,
  as in COCO's crowd annotations.
- All randomness comes from the passed generator; the same seed gives byte-identical scenes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from components import scene_figures as figs
from components import scene_textures as tex

F32 = np.float32
MIN_PIXELS = 12  # smallest visible instance kept


@dataclass(frozen=True)
class Category:
    id: int  # COCO category id, >= 1; 0 in label maps means "unlabeled"
    name: str
    isthing: bool
    supercategory: str


PERSON, CAR, BALL, DOG = 1, 2, 3, 4
SKY, GRASS, WALL, WATER, ROAD, SAND = 101, 102, 103, 104, 105, 106
CATEGORIES: tuple[Category, ...] = (
    Category(PERSON, "person", True, "person"),
    Category(CAR, "car", True, "vehicle"),
    Category(BALL, "ball", True, "sports"),
    Category(DOG, "dog", True, "animal"),
    Category(SKY, "sky", False, "sky"),
    Category(GRASS, "grass", False, "plant"),
    Category(WALL, "wall-brick", False, "wall"),
    Category(WATER, "water", False, "water"),
    Category(ROAD, "road", False, "ground"),
    Category(SAND, "sand", False, "ground"),
)


@dataclass(frozen=True)
class SceneConfig:
    size: int = 128  # output images are size x size
    min_things: int = 1
    max_things: int = 4
    person_prob: float = 0.6  # probability that each thing is a person
    occlusion_prob: float = 0.3  # probability that an extra object is placed overlapping a person
    crowd_prob: float = 0.1  # probability that the image has a "crowd" group
    supersample: int = 2  # shapes are drawn at size*supersample then area-downsampled (anti-aliasing)


@dataclass
class Instance:
    category_id: int
    mask: np.ndarray  # (H, W) bool, visible pixels only (after occlusion by later things), never empty
    iscrowd: bool = False


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8, category id of every pixel (stuff or thing)
    instances: list[Instance]


@dataclass
class Stuff:
    rgb: np.ndarray  # (3, H, W) float32, about [0, 1], planar RGB
    labels: np.ndarray  # (H, W) uint8 stuff category ids
    horizon: float  # mean row of the upper/lower boundary
    stand_top: float  # first row where things may stand (below any water)


@dataclass
class Layer:
    """One annotated thing (or crowd): its sprites are painted in order, after all layers with less depth."""

    category_id: int
    depth: float  # ground-contact row; larger = nearer the viewer
    sprites: list[figs.Sprite] = field(default_factory=list)
    iscrowd: bool = False
    shadow: tuple[float, float, float] | None = None  # contact shadow ellipse (cx, cy, half width)


def _boundary(rng: np.random.Generator, size: int, row: float, amplitude: float) -> np.ndarray:
    """A slightly wavy boundary: one row (float) per column, (size,)."""
    wave = tex.value_noise(rng, 1, size, 1, int(rng.integers(2, 6)))[0]
    return row + amplitude * (2.0 * wave - 1.0)


def layout_stuff(rng: np.random.Generator, size: int) -> Stuff:
    """Sky or brick wall above a wavy horizon; grass, grass + road, road, or water + grass/sand below."""
    n = size
    rows = np.arange(n, dtype=F32)[:, None]  # (H, 1)
    horizon = rng.uniform(0.25, 0.6) * n
    upper = SKY if rng.random() < 0.7 else WALL
    top = rows < _boundary(rng, n, horizon, (0.03 if upper == SKY else 0.004) * n)  # (H, W) upper region
    # grass, grass + road, road, water + grass, water + sand (water only under an open sky)
    lower = tex.choose(rng, (0.25, 0.3, 0.1, 0.15, 0.2) if upper == SKY else (0.4, 0.4, 0.2, 0.0, 0.0))
    near = (GRASS, GRASS, ROAD, GRASS, SAND)[lower]
    labels = np.where(top, np.uint8(upper), np.uint8(near))
    stand_top, stripe = horizon + 0.03 * n, None
    if lower == 1:  # a road band crossing the grass
        r0 = horizon + (n - horizon) * rng.uniform(0.15, 0.55)
        r1 = r0 + (n - horizon) * rng.uniform(0.2, 0.4)
        band = (rows >= _boundary(rng, n, r0, 0.006 * n)) & (rows < _boundary(rng, n, r1, 0.006 * n))
        labels[band & ~top] = ROAD
        stripe = (r0 + r1) / 2
    elif lower >= 3:  # water from the horizon down to a wavy shore
        shore = horizon + (n - horizon) * rng.uniform(0.25, 0.6)
        labels[(rows < _boundary(rng, n, shore, 0.02 * n)) & ~top] = WATER
        stand_top = shore + 0.03 * n
    rgb = np.empty((3, n, n), F32)
    for cid in np.flatnonzero(np.bincount(labels.ravel(), minlength=256)):  # the classes present
        y0, y1 = np.flatnonzero((labels == cid).any(axis=1))[[0, -1]] + (0, 1)  # texture only these rows
        h = int(y1 - y0)
        if cid == SKY:
            t = tex.sky(rng, h, n, horizon + 0.03 * n - y0)
        elif cid == WALL:
            t = tex.brick_wall(rng, h, n)
        elif cid == GRASS:
            t = tex.grass(rng, h, n)
        elif cid == ROAD:
            t = tex.road(rng, h, n, (stripe if stripe is not None else rng.uniform(horizon, n)) - y0)
        elif cid == WATER:
            t = tex.water(rng, h, n, horizon - y0)
        else:
            t = tex.sand(rng, h, n)
        np.copyto(rgb[:, y0:y1], t, where=labels[y0:y1] == cid)
    if upper == SKY:  # aerial perspective: the ground fades towards the sky colour at the horizon
        haze = np.clip(1.0 - (rows - horizon) / (0.35 * n), 0.0, 1.0) ** 2 * F32(rng.uniform(0.1, 0.4))
        far = rgb[:, max(0, int(horizon) - 2)].mean(axis=1)[:, None, None]  # (3, 1, 1)
        rgb = np.where(top, rgb, rgb + (far - rgb) * haze)
    return Stuff(rgb, labels, horizon, min(stand_top, n - 2.0))


def _thing(rng: np.random.Generator, kind: int, cx: float, gy: float, scale: float, size: int, ss: int,
           lx: float) -> Layer:
    """One layer of category ``kind`` at ground point (cx, gy); ``scale`` = a standing person's height."""
    if kind == PERSON:
        sprite, half = figs.draw_person(rng, cx, gy, scale, size, ss, lx), 0.22 * scale
    elif kind == CAR:
        length = min(scale * rng.uniform(1.5, 2.1), 1.1 * size)
        sprite, half = figs.draw_car(rng, cx, gy, length, size, ss, lx), 0.55 * length
    elif kind == DOG:
        h = scale * rng.uniform(0.3, 0.45)
        sprite, half = figs.draw_dog(rng, cx, gy, h, size, ss, lx), 0.6 * h
    else:
        r = scale * rng.uniform(0.06, 0.14)
        lift = r * rng.uniform(0.5, 3.0) if rng.random() < 0.15 else 0.0  # a bouncing ball
        sprite = figs.draw_ball(rng, cx, gy - r - lift, r, size, ss, lx)
        half = r * max(0.3, 1.0 - lift / (3 * r))  # the shadow shrinks as the ball rises
    return Layer(kind, gy, [sprite] if sprite is not None else [], shadow=(cx - 0.3 * lx * half, gy, half))


def place_things(rng: np.random.Generator, config: SceneConfig, stuff: Stuff) -> list[Layer]:
    """Things standing on the ground, an optional occluder and crowd, sorted back to front."""
    n, ss = config.size, config.supersample
    lx = rng.uniform(-1.0, 1.0)  # light direction, shared by all things

    def scale_at(gy: float) -> float:  # a standing person's height for a ground row
        depth = (gy - stuff.horizon) / max(n - stuff.horizon, 1.0)
        return n * float(np.clip(0.18 + 0.65 * depth + rng.normal(0, 0.06), 0.25, 0.9))

    def other_kind() -> int:
        return (CAR, BALL, DOG)[tex.choose(rng, (0.35, 0.35, 0.3))]

    specs = []  # (kind, cx, gy, scale)
    for _ in range(int(rng.integers(config.min_things, config.max_things + 1))):
        kind = PERSON if rng.random() < config.person_prob else other_kind()
        gy, cx = rng.uniform(stuff.stand_top, 1.08 * n), rng.uniform(-0.1, 1.1) * n
        specs.append((kind, cx, gy, scale_at(gy)))
    persons = [s for s in specs if s[0] == PERSON]
    if persons and rng.random() < config.occlusion_prob:  # an extra thing just in front of a person
        _, pcx, pgy, height = persons[int(rng.integers(len(persons)))]
        kind = PERSON if rng.random() < 0.25 else other_kind()
        cx = pcx + rng.uniform(-0.35, 0.35) * height * (0.5 if kind == PERSON else 0.3)
        specs.append((kind, cx, pgy + rng.uniform(0.01, 0.06) * n, height * rng.uniform(1.0, 1.1)))
    layers = [_thing(rng, kind, cx, gy, scale, n, ss, lx) for kind, cx, gy, scale in specs]
    if rng.random() < config.crowd_prob:
        layers.append(_crowd(rng, n, ss, lx, stuff))
    layers = [layer for layer in layers if layer.sprites]
    layers.sort(key=lambda layer: layer.depth)  # stable: ties keep their drawing order
    return layers


def _crowd(rng: np.random.Generator, n: int, ss: int, lx: float, stuff: Stuff) -> Layer:
    """Several small balls, or several tiny distant people, annotated together as one crowd instance."""
    gy = rng.uniform(stuff.stand_top, stuff.stand_top + 0.3 * (n - stuff.stand_top))
    cx = rng.uniform(0.15, 0.85) * n
    balls = rng.random() < 0.5
    unit = n * (rng.uniform(0.02, 0.035) if balls else rng.uniform(0.12, 0.2))  # ball radius or height
    count = int(rng.integers(5, 12) if balls else rng.integers(4, 9))
    spread = (2.5, 1.5) if balls else (0.5, 0.04)  # std of x and y, in units
    xs, ys = cx + rng.normal(0, spread[0] * unit, count), gy + rng.normal(0, spread[1] * unit, count)
    sprites = []
    for i in np.lexsort((xs, ys)):  # back to front inside the group
        s = rng.uniform(0.8, 1.2) * unit
        if balls:
            sprites.append(figs.draw_ball(rng, xs[i], ys[i] - s, s, n, ss, lx))
        else:
            sprites.append(figs.draw_person(rng, xs[i], ys[i], s, n, ss, lx))
    return Layer(BALL if balls else PERSON, gy, [s for s in sprites if s is not None], iscrowd=True)


def _owners(layers: list[Layer], size: int) -> np.ndarray:
    """(H, W) int32: index of the last layer with alpha >= 0.5 at each pixel, -1 where none."""
    owner = np.full((size, size), -1, np.int32)
    for k, layer in enumerate(layers):
        for s in layer.sprites:
            h, w = s.alpha.shape
            owner[s.y0:s.y0 + h, s.x0:s.x0 + w][s.alpha >= 0.5] = k
    return owner


def layer_mask(layer: Layer, size: int) -> np.ndarray:
    """(H, W) bool: where the layer's alpha >= 0.5, ignoring anything painted over it."""
    return _owners([layer], size) == 0


def composite(stuff: Stuff, layers: list[Layer]) -> Scene:
    """Paint the layers (already sorted back to front) over the stuff; derive labels and instance masks."""
    n = stuff.labels.shape[0]
    # 1. drop layers that would show fewer than MIN_PIXELS; dropping only uncovers earlier layers
    counts = np.bincount(_owners(layers, n).ravel() + 1, minlength=len(layers) + 1)[1:]
    layers = [layer for layer, c in zip(layers, counts) if c >= MIN_PIXELS]
    # 2. paint: soft contact shadow, then premultiplied sprites ("over" operator); planar (3, H, W)
    img = stuff.rgb.copy()
    for layer in layers:
        if layer.shadow is not None:
            _shadow(img, *layer.shadow)
        for s in layer.sprites:
            h, w = s.alpha.shape
            region = img[:, s.y0:s.y0 + h, s.x0:s.x0 + w]
            region *= 1.0 - s.alpha
            region += s.premult
    # 3. labels and instances from one owner map, so they agree exactly
    owner = _owners(layers, n)
    cats = np.array([layer.category_id for layer in layers] + [0], np.uint8)  # index -1 -> 0 (unused)
    labels = np.where(owner >= 0, np.take(cats, owner), stuff.labels)
    instances = [Instance(layer.category_id, owner == k, layer.iscrowd) for k, layer in enumerate(layers)]
    planes = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (3, H, W)
    return Scene(cv2.merge(list(planes)), labels.astype(np.uint8), instances)  # image (H, W, 3)


def _shadow(img: np.ndarray, cx: float, cy: float, half: float) -> None:
    """Darken a soft ellipse on the ground under a thing, in place."""
    n = img.shape[1]
    x0, x1 = max(0, int(cx - 1.3 * half)), min(n, int(cx + 1.3 * half) + 1)
    y0, y1 = max(0, int(cy - 0.3 * half) - 1), min(n, int(cy + 0.3 * half) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    ys = (np.arange(y0, y1, dtype=F32)[:, None] - cy) / F32(max(0.15 * half, 0.7))
    xs = (np.arange(x0, x1, dtype=F32)[None, :] - cx) / F32(max(half, 1.0))
    dark = np.clip(1.2 - np.sqrt(xs * xs + ys * ys), 0.0, 1.0) * 0.45  # (h, w), soft edge
    img[:, y0:y1, x0:x1] *= 1.0 - dark


def generate_scene(rng: np.random.Generator, config: SceneConfig) -> Scene:
    """A random scene: textured stuff layout, things on the ground, exact labels and visible masks."""
    stuff = layout_stuff(rng, config.size)
    return composite(stuff, place_things(rng, config, stuff))
