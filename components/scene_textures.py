"""Procedural "stuff" textures for the synthetic scenes: sky, grass, brick wall, water, road, sand.

Design:
- Every texture is a pure function ``(rng, h, w, ...) -> (3, h, w) float32 RGB, about [0, 1]`` built
  from two noise primitives: low-frequency value noise (a small uniform grid upsampled with
  ``cv2.resize``: bicubic to 1/4 size, then bilinear, ~10x cheaper than bicubic all the way) and
  per-pixel uniform grain (4x cheaper to draw than Gaussian). All of it is vectorised numpy over the
  full frame (~0.2-0.6 ms per texture at 128 px), so the layout renders whole frames and cuts regions out.
- Colour planes are kept planar, (3, h, w): a per-pixel shade (h, w) then multiplies a colour along the
  leading axis, which numpy does several times faster than broadcasting over a trailing axis of 3.
- Colours, scales and frequencies are drawn per call from the passed generator, so one class looks
  different from image to image (clear or dusk sky, lush or dry grass, red or yellow bricks).
- Feature sizes are relative to the width ``w``, so a scene looks the same at 128 and 256 px.
- Nothing here is clipped; the compositor clips once at the end.
"""

from __future__ import annotations

import cv2
import numpy as np

F32 = np.float32


def value_noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth noise, (h, w) float32 roughly in [0, 1]: a (cells_y+1, cells_x+1) grid, upsampled."""
    grid = rng.random((max(1, cells_y) + 1, max(1, cells_x) + 1), dtype=F32)
    mid = cv2.resize(grid, (max(w // 4, 2 * grid.shape[1]), max(h // 4, 2 * grid.shape[0])),
                     interpolation=cv2.INTER_CUBIC)
    return cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR)


def fractal_noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int,
                  octaves: int = 3) -> np.ndarray:
    """Sum of ``octaves`` value noises, each twice as fine and half as strong; (h, w) in about [0, 1]."""
    total = np.zeros((h, w), F32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(rng, h, w, cells_y << o, cells_x << o)
        norm += amp
        amp *= 0.5
    return total / F32(norm)


def grain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Per-pixel uniform noise with zero mean and unit variance, (h, w) float32."""
    return (rng.random((h, w), dtype=F32) - F32(0.5)) * F32(12 ** 0.5)


def choose(rng: np.random.Generator, probs: tuple[float, ...]) -> int:
    """An index drawn with the given probabilities (summing to 1); ~10x cheaper than ``rng.choice(p=)``."""
    u, acc = rng.random(), 0.0
    for i, p in enumerate(probs):
        acc += p
        if u < acc:
            return i
    return len(probs) - 1


def frac(x: np.ndarray) -> np.ndarray:
    """x mod 1 for float arrays (``x - floor(x)`` is ~10x faster than numpy's float ``%``)."""
    return x - np.floor(x)


def jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    """A colour with independent Gaussian jitter per channel, (3, 1, 1) float32 in [0, 1]."""
    return np.clip(np.asarray(rgb, F32) + rng.normal(0.0, amount, 3).astype(F32), 0.0, 1.0)[:, None, None]


def _rows(h: int) -> np.ndarray:
    return np.arange(h, dtype=F32)[:, None]  # (h, 1)


def _cols(w: int) -> np.ndarray:
    return np.arange(w, dtype=F32)[None, :]  # (1, w)


_SKIES = (  # (zenith, horizon) colours
    ((0.20, 0.40, 0.80), (0.66, 0.80, 0.95)),  # clear
    ((0.36, 0.56, 0.86), (0.86, 0.90, 0.96)),  # hazy
    ((0.26, 0.28, 0.56), (0.97, 0.68, 0.45)),  # dusk
    ((0.52, 0.56, 0.62), (0.80, 0.82, 0.85)),  # overcast
)


def sky(rng: np.random.Generator, h: int, w: int, horizon: float) -> np.ndarray:
    """Vertical zenith-to-horizon gradient with soft, horizontally stretched clouds."""
    zenith, low = (jitter(rng, c, 0.04) for c in _SKIES[rng.integers(len(_SKIES))])
    t = np.clip(_rows(h) / max(horizon, 1.0), 0.0, 1.0) ** F32(rng.uniform(0.6, 1.5))  # (h, 1)
    n = fractal_noise(rng, h, w, 2, int(rng.integers(2, 5)), octaves=3)
    cover = rng.uniform(0.0, 0.75)  # cloudiness: 0 = clear, 0.75 = mostly cloudy
    clouds = np.clip((n - (0.75 - 0.5 * cover)) * rng.uniform(2.5, 6.0), 0.0, 1.0)  # (h, w)
    cloud = jitter(rng, (0.95, 0.95, 0.96), 0.02)
    img = (zenith * (1 - t) + low * t) * (1 - clouds)  # (3, h, w)
    return img + cloud * (clouds * (0.8 + 0.25 * n) + 0.006 * grain(rng, h, w))  # darker thin clouds


def grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Green with dry patches, vertical blade streaks and fine grain."""
    lush, dry = jitter(rng, (0.20, 0.45, 0.10), 0.05), jitter(rng, (0.55, 0.54, 0.22), 0.05)
    dryness = value_noise(rng, h, w, 3, 4) * F32(rng.uniform(0.0, 0.8))
    blade = max(2, int(w * rng.uniform(0.02, 0.05)))  # blade length in px
    streaks = cv2.resize(rng.random((h // blade + 2, w), dtype=F32), (w, h), interpolation=cv2.INTER_LINEAR)
    light = (1.0 + 0.45 * (streaks - 0.5) + 0.08 * grain(rng, h, w)
             + 0.35 * (value_noise(rng, h, w, 4, 6) - 0.5))
    return (lush + (dry - lush) * dryness) * light


_BRICKS = ((0.62, 0.26, 0.18), (0.72, 0.40, 0.26), (0.55, 0.30, 0.24), (0.78, 0.66, 0.46), (0.50, 0.48, 0.46))


def brick_wall(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Running-bond bricks: offset rows, mortar lines, per-brick colour jitter, bevel shading, dirt."""
    bh = w * rng.uniform(0.035, 0.07)  # brick height in px
    bw = bh * rng.uniform(2.0, 3.2)
    mortar = max(1.0, bh * rng.uniform(0.12, 0.22))
    y = (_rows(h) + F32(rng.uniform(0, bh))) / F32(bh)  # in brick heights, (h, 1)
    row = np.floor(y)
    u = (_cols(w) + (row % 2) * F32(bw / 2) + F32(rng.uniform(0, bw))) / F32(bw)  # in brick widths, (h, w)
    col = np.floor(u)
    ncols = int(col.max()) + 1
    brick_id = (row.astype(np.intp) * ncols + col.astype(np.intp)).ravel()
    per_brick = rng.normal(0.0, 1.0, (2, (int(row.max()) + 1) * ncols)).astype(F32)
    bright, hue = (np.take(t, brick_id).reshape(h, w) for t in per_brick)  # per-brick jitter, (h, w) each
    brick = jitter(rng, _BRICKS[rng.integers(len(_BRICKS))], 0.04)
    bevel = 1.08 - 0.18 * frac(y)  # top-lit bricks, (h, 1)
    brick_rgb = (brick * (1 + 0.12 * bright) + np.array([0.03, 0.0, -0.03], F32)[:, None, None] * hue) * bevel
    is_mortar = (frac(y) < mortar / bh) | (frac(u) < mortar / bw)
    img = np.where(is_mortar, jitter(rng, (0.70, 0.68, 0.63), 0.04), brick_rgb)
    return img * (1.0 + 0.25 * (fractal_noise(rng, h, w, 3, 3, octaves=2) - 0.5) + 0.05 * grain(rng, h, w))


def water(rng: np.random.Generator, h: int, w: int, horizon: float) -> np.ndarray:
    """Blue water: wave bands that widen towards the viewer, bent by a slow sine, glints and grain."""
    far, near = jitter(rng, (0.38, 0.58, 0.74), 0.05), jitter(rng, (0.05, 0.22, 0.40), 0.05)
    d = np.clip((_rows(h) - horizon) / max(h - horizon, 1.0), 0.0, 1.0)  # (h, 1): 0 at horizon
    bands = rng.uniform(6.0, 14.0)
    bend = np.sin(_cols(w) * F32(2 * np.pi / (w * rng.uniform(0.3, 0.9))) + F32(rng.uniform(0, 6.3)))
    phase = (F32(2 * np.pi * bands) * d ** 0.6 + (0.3 + d) * bend
             + 4.0 * value_noise(rng, h, w, 3, 5))  # (h, w)
    waves = np.sin(phase)
    mix = np.sqrt(d)
    glint = np.clip((waves - 0.85) * 6.0, 0.0, 1.0) * value_noise(rng, h, w, 4, 8)
    return (far + (near - far) * mix) * (1 + 0.14 * waves) + (0.35 * glint + 0.02 * grain(rng, h, w))


def road(rng: np.random.Generator, h: int, w: int, stripe_y: float | None) -> np.ndarray:
    """Grey asphalt grain and stains; a dashed lane marking centred on row ``stripe_y`` if given."""
    grey = rng.uniform(0.25, 0.45)
    base = jitter(rng, (grey, grey, grey * 1.03), 0.015)
    coarse = cv2.resize(grain(rng, h // 2 + 1, w // 2 + 1), (w, h), interpolation=cv2.INTER_LINEAR)
    shade = (1.0 + 0.07 * grain(rng, h, w) + 0.05 * coarse
             + 0.22 * (fractal_noise(rng, h, w, 3, 4, octaves=2) - 0.5))
    img = base * shade
    if stripe_y is not None:
        half = max(0.6, w * rng.uniform(0.006, 0.012))
        dash = w * rng.uniform(0.08, 0.16)
        period = dash * rng.uniform(1.6, 2.4)
        on = (np.abs(_rows(h) - stripe_y) < half) & (((_cols(w) + rng.uniform(0, period)) % period) < dash)
        paint = jitter(rng, ((0.92, 0.92, 0.90), (0.92, 0.78, 0.22))[rng.integers(2)], 0.02)
        img = np.where(on, paint * (0.85 + 0.15 * shade), img)
    return img


def sand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Beige sand with wind ripples (noisy horizontal sine) and grain."""
    base = jitter(rng, (0.82, 0.71, 0.52), 0.04)
    period = w * rng.uniform(0.03, 0.06)
    ripples = np.sin(_rows(h) * F32(2 * np.pi / period) + 5.0 * value_noise(rng, h, w, 3, 4))
    patches = value_noise(rng, h, w, 3, 4) - 0.5
    return base * (1.0 + 0.05 * ripples + 0.06 * grain(rng, h, w) + 0.18 * patches)
