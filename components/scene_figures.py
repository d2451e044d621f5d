"""Procedural "thing" figures for the synthetic scenes: person, car, ball, dog, each one anti-aliased sprite.

Design:
- A figure is drawn as a *part-id map* (uint8; 0 = empty, 1.. = skin, shirt, window, ...) on a canvas
  that covers only the figure's box clipped to the image, at ``ss`` times the output resolution, with
  OpenCV fill functions (circles, ellipses, tapered limb polygons) at sub-pixel precision (``shift``).
  Geometry is given in output pixels, so the random draws never depend on ``ss``.
- The part map is then coloured in one palette lookup (a patterned garment's second colour is a second
  palette row), shaded (directional light, rim darkening, darkened part outlines), and both
  ``colour * coverage`` and ``coverage`` are area-downsampled (``cv2.INTER_AREA``): an anti-aliased,
  premultiplied sprite whose alpha is the exact sub-pixel coverage.
- The person is a small forward kinematics over joint angles (0 = pointing down, positive = towards
  +x); in side view the far limbs are drawn first with darker "far" part ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from components.scene_textures import choose, frac

F32 = np.float32
_SHIFT = 3  # fractional bits of the OpenCV drawing coordinates


@dataclass
class Sprite:
    """One figure at output resolution, placed with its top-left corner at (x0, y0)."""

    x0: int
    y0: int
    premult: np.ndarray  # (3, h, w) float32, colour * alpha (planar RGB)
    alpha: np.ndarray  # (h, w) float32 in [0, 1], anti-aliased coverage


class _Canvas:
    """A part-id map over box = (x0, y0, x1, y1) in output px (clipped to the image), ``ss`` x finer."""

    def __init__(self, box: tuple[float, float, float, float], size: int, ss: int):
        self.x0, self.y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
        self.x1, self.y1 = min(size, math.ceil(box[2])), min(size, math.ceil(box[3]))
        self.box, self.ss, self.k = box, ss, ss * (1 << _SHIFT)
        self.empty = self.x1 <= self.x0 or self.y1 <= self.y0
        shape = (max(0, self.y1 - self.y0) * ss, max(0, self.x1 - self.x0) * ss)
        self.parts = np.zeros(shape, np.uint8)  # (h * ss, w * ss), 0 = empty

    def p(self, xy) -> tuple[int, int]:
        return round((float(xy[0]) - self.x0) * self.k), round((float(xy[1]) - self.y0) * self.k)

    def r(self, radius: float) -> int:
        return max(1, round(radius * self.k))

    def circle(self, c, radius: float, pid: int) -> None:
        cv2.circle(self.parts, self.p(c), self.r(radius), pid, -1, cv2.LINE_8, _SHIFT)

    def ellipse(self, c, axes, pid: int, angle: float = 0.0) -> None:
        cv2.ellipse(self.parts, self.p(c), (self.r(axes[0]), self.r(axes[1])), angle, 0, 360, pid, -1,
                    cv2.LINE_8, _SHIFT)

    def poly(self, pts, pid: int) -> None:
        cv2.fillPoly(self.parts, [np.array([self.p(q) for q in pts], np.int32)], pid, cv2.LINE_8, _SHIFT)

    def line(self, a, b, width: float, pid: int) -> None:
        cv2.line(self.parts, self.p(a), self.p(b), pid, max(1, round(width * self.ss)), cv2.LINE_8, _SHIFT)

    def limb(self, a, b, ra: float, rb: float, pid: int) -> None:
        """A tapered capsule from a (radius ra) to b (radius rb)."""
        (ax, ay), (bx, by) = (float(v) for v in a), (float(v) for v in b)
        length = max(math.hypot(bx - ax, by - ay), 1e-6)
        nx, ny = (ay - by) / length, (bx - ax) / length  # unit normal
        self.poly([(ax + nx * ra, ay + ny * ra), (bx + nx * rb, by + ny * rb),
                   (bx - nx * rb, by - ny * rb), (ax - nx * ra, ay - ny * ra)], pid)
        self.circle(a, ra, pid)
        self.circle(b, rb, pid)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Output-px coordinates of the canvas pixel centres: (h, 1) ys and (1, w) xs."""
        h, w = self.parts.shape
        ys = (np.arange(h, dtype=F32) + 0.5) / self.ss + self.y0
        xs = (np.arange(w, dtype=F32) + 0.5) / self.ss + self.x0
        return ys[:, None], xs[None, :]

    def light(self, lx: float, rim: float = 0.0) -> np.ndarray:
        """Directional light over the figure's box (brighter towards the light and the top), darkened
        within about ``rim`` output px of the silhouette so that limbs look round; (h, w) float32."""
        ys, xs = self.grid()
        x0, y0, x1, y1 = self.box
        shade = 1.0 + F32(0.36 * lx / max(x1 - x0, 1)) * (xs - (x0 + x1) / 2) \
            - F32(0.24 / max(y1 - y0, 1)) * (ys - (y0 + y1) / 2)
        k = 2 * round(rim * self.ss / 2) + 1
        if k > 1:
            inside = cv2.blur((self.parts > 0).astype(F32), (k, k))  # 1 deep inside, ~0.5 on the edge
            shade *= 0.72 + 0.28 * np.minimum(2.0 * inside - 1.0, 1.0)
        return shade

    def finish(self, index: np.ndarray, palette: np.ndarray, shade: np.ndarray | None,
               outline: float = 0.8, gloss: np.ndarray | None = None) -> Sprite:
        """Colour = palette[index] * shade + gloss with part boundaries darkened by ``outline``, then
        area-downsample colour * coverage and coverage. index (h, w) ints into palette (n, 3)."""
        parts = self.parts
        edge = np.zeros(parts.shape, bool)  # pixels on either side of a part boundary
        dx, dy = parts[:, 1:] != parts[:, :-1], parts[1:, :] != parts[:-1, :]
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        cov = (parts > 0).astype(F32)  # (h * ss, w * ss) in {0, 1}
        weight = np.where(edge, F32(outline), F32(1.0))
        if shade is not None:
            weight *= shade
        if gloss is None:
            weight *= cov
        # (3, h * ss, w * ss); np.take is ~4x faster than fancy indexing here
        rgb = np.take(np.asarray(palette, F32).T, index, axis=1) * weight
        if gloss is not None:
            rgb = (rgb + gloss) * cov
        out = (self.x1 - self.x0, self.y1 - self.y0)
        premult = np.stack([cv2.resize(plane, out, interpolation=cv2.INTER_AREA) for plane in rgb])
        alpha = cv2.resize(cov, out, interpolation=cv2.INTER_AREA)
        return Sprite(self.x0, self.y0, premult.reshape(3, out[1], out[0]), alpha.reshape(out[1], out[0]))


def _colour(rng: np.random.Generator, lo: float = 0.08, hi: float = 0.92) -> np.ndarray:
    return rng.uniform(lo, hi, 3).astype(F32)


def _pick(rng: np.random.Generator, colours: tuple) -> np.ndarray:
    return np.asarray(colours[rng.integers(len(colours))], F32)


def _pattern(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, period: float) -> np.ndarray:
    """A garment pattern mask, bool broadcastable to (h, w): solid (all False), stripes, checks or dots."""
    kind = rng.integers(5)
    fy, fx = ys / F32(period), xs / F32(period)  # (h, 1), (1, w)
    if kind == 1:
        return frac(fy) < 0.5
    if kind == 2:
        return frac(fx) < 0.5
    if kind == 3:
        return ((np.floor(fy).astype(np.int32) + np.floor(fx).astype(np.int32)) & 1) == 0
    if kind == 4:
        return (frac(fy) - 0.5) ** 2 + (frac(fx) - 0.5) ** 2 < 0.08
    return np.zeros((1, 1), bool)


def _unit(angle) -> np.ndarray:
    """Direction(s) for angle(s): 0 = straight down, positive = towards +x; (..., 2) as (x, y)."""
    angle = np.asarray(angle, float)
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


# person part ids: far variants are the side-view limbs behind the body; +11 = a garment's 2nd colour
SKIN, SKIN_FAR, HAIR, SHIRT, SHIRT_FAR, PANTS, PANTS_FAR, SHOE, SHOE_FAR, EYE = range(1, 11)
_SKINS = ((0.95, 0.78, 0.66), (0.91, 0.72, 0.56), (0.80, 0.58, 0.42), (0.60, 0.40, 0.28), (0.40, 0.26, 0.18))
_HAIRS = ((0.08, 0.06, 0.05), (0.30, 0.18, 0.10), (0.75, 0.60, 0.35), (0.60, 0.60, 0.60), (0.55, 0.22, 0.10))
_PANTS = ((0.15, 0.22, 0.42), (0.10, 0.10, 0.12), (0.62, 0.55, 0.40), (0.40, 0.40, 0.42))


def _pose(rng: np.random.Generator, side: bool) -> tuple[np.ndarray, ...]:
    """Joint angles (arm, elbow, leg, knee), each (2,) for (left/far, right/near), and a thigh scale."""
    u = rng.uniform
    pose = choose(rng, (0.25, 0.3, 0.15, 0.15, 0.15))  # stand, walk, arms up, wave, crouch
    arm, elbow = np.array([u(0.05, 0.3), u(0.05, 0.3)]), np.array([u(-0.3, 0.1), u(-0.3, 0.1)])
    leg, knee = np.array([u(0.03, 0.15), u(0.03, 0.15)]), np.array([u(0, 0.1), u(0, 0.1)])
    thigh = 1.0
    if pose == 1:  # walk: legs and arms swing in opposition (seen from the front: a slight stride)
        a = u(0.25, 0.5)
        if side:
            leg, arm = np.array([-a, a]), np.array([0.8 * a, -0.8 * a])
            knee = np.array([u(0.3, 0.8), u(0.0, 0.15)])  # the back leg bends
        else:
            leg = np.array([0.4 * a, 0.2 * a])
        elbow = np.array([u(0.2, 0.6), u(0.2, 0.6)])
    elif pose == 2:  # both arms up
        arm, elbow = np.array([u(2.4, 2.9), u(2.4, 2.9)]), np.array([u(-0.3, 0.3), u(-0.3, 0.3)])
    elif pose == 3:  # waving: one forearm up
        arm[1], elbow[1] = u(1.3, 2.0), u(0.7, 1.3)
    elif pose == 4:  # crouch / sit-ish: thighs forward (side) or out (front), shins back to vertical
        lift = u(0.9, 1.4) if side else u(0.4, 0.7)
        leg, knee = np.array([lift, lift]), lift + np.array([u(-0.2, 0.2), u(-0.2, 0.2)])
        thigh = 1.0 if side else 0.7  # foreshortened towards the viewer
        arm, elbow = np.array([u(0.5, 1.0), u(0.5, 1.0)]), np.array([u(0.3, 0.8), u(0.3, 0.8)])
    return arm, elbow, leg, knee, thigh


def draw_person(rng: np.random.Generator, cx: float, ground: float, height: float, size: int, ss: int,
                lx: float) -> Sprite | None:
    """An articulated person ``height`` px tall (when standing) whose lowest point is on row ``ground``."""
    u = height / 7.7  # head-height unit
    side, facing = rng.random() < 0.4, (1.0 if rng.random() < 0.5 else -1.0)
    arm, elbow, leg, knee, thigh = _pose(rng, side)
    # 1. skeleton relative to the hip centre; paired joints are (2, 2): (left/far, right/near) x (x, y)
    s = np.array([facing, facing]) if side else np.array([-1.0, 1.0])  # each limb's angle sign
    k = np.array([[-1.0, 0.0], [1.0, 0.0]])
    tilt = facing * rng.uniform(0.0, 0.15) if side else rng.uniform(-0.05, 0.05)
    up = np.array([math.sin(tilt), -math.cos(tilt)])  # the torso leans towards +x for tilt > 0
    across = np.array([1.0, 0.0])
    neck = up * 2.5 * u  # shoulder-line centre
    head = neck + up * 0.72 * u + across * (0.1 * u * facing if side else 0.0)
    shoulders = neck + k * (0.08 if side else 0.72) * u
    elbows = shoulders + _unit(s * arm) * 1.45 * u
    hands = elbows + _unit(s * (arm + elbow)) * 1.25 * u
    hips = k * (0.05 if side else 0.36) * u
    knees = hips + _unit(s * leg) * 1.95 * u * thigh
    ankles = knees + _unit(s * (leg - knee)) * 1.85 * u
    origin = np.array([cx, ground - ankles[:, 1].max() - 0.28 * u])  # the feet's soles on the ground
    pts = np.concatenate([head[None], shoulders, hands, knees, ankles]) + origin
    box = (pts[:, 0].min() - 0.8 * u, pts[:, 1].min() - 0.7 * u, pts[:, 0].max() + 0.8 * u, ground)
    c = _Canvas(box, size, ss)
    if c.empty:
        return None
    head, neck, shoulders, elbows, hands, hips, knees, ankles = (
        q + origin for q in (head, neck, shoulders, elbows, hands, hips, knees, ankles))
    # 2. appearance: palette rows 0..10, then the same with each garment's second colour
    hair_style = choose(rng, (0.5, 0.35, 0.15))  # short, long, none (bald / cropped)
    long_sleeves, shorts = rng.random() < 0.5, rng.random() < 0.3
    palette = np.zeros((22, 3), F32)
    skin = _pick(rng, _SKINS) * F32(rng.uniform(0.9, 1.05))
    palette[[SKIN, HAIR, SHIRT]] = skin, _pick(rng, _HAIRS), _colour(rng)
    palette[[PANTS, SHOE, EYE]] = (_pick(rng, _PANTS) if rng.random() < 0.6 else _colour(rng),
                                   _colour(rng, 0.02, 0.3), (0.1, 0.07, 0.06))
    palette[[SKIN_FAR, SHIRT_FAR, PANTS_FAR, SHOE_FAR]] = 0.72 * palette[[SKIN, SHIRT, PANTS, SHOE]]
    palette[11:] = palette[:11]
    palette[[11 + SHIRT, 11 + PANTS]] = _colour(rng), _colour(rng)
    palette[[11 + SHIRT_FAR, 11 + PANTS_FAR]] = 0.72 * palette[[11 + SHIRT, 11 + PANTS]]
    ys, xs = c.grid()
    shirt_pattern = _pattern(rng, ys, xs, u * rng.uniform(0.35, 0.7))
    pants_pattern = _pattern(rng, ys, xs, u * rng.uniform(0.35, 0.7)) if rng.random() < 0.4 else None

    # 3. draw back to front: long hair, far limbs (side view), legs, pelvis, torso, near arms, head
    def draw_arm(i: int, far: bool) -> None:
        sh, sk = (SHIRT_FAR, SKIN_FAR) if far else (SHIRT, SKIN)
        c.limb(shoulders[i], elbows[i], 0.25 * u, 0.2 * u, sh)
        c.limb(elbows[i], hands[i], 0.19 * u, 0.15 * u, sh if long_sleeves else sk)
        c.circle(hands[i], 0.21 * u, sk)

    def draw_leg(i: int, far: bool) -> None:
        pa, sk, sho = (PANTS_FAR, SKIN_FAR, SHOE_FAR) if far else (PANTS, SKIN, SHOE)
        c.limb(hips[i], knees[i], 0.36 * u, 0.27 * u, pa)
        c.limb(knees[i], ankles[i], 0.25 * u, 0.19 * u, sk if shorts else pa)
        if shorts:
            c.limb(hips[i], 0.35 * hips[i] + 0.65 * knees[i], 0.37 * u, 0.31 * u, pa)
        toe = (facing * 0.22 * u if side else s[i] * 0.05 * u, 0.12 * u)
        c.ellipse(ankles[i] + toe, (0.36 * u if side else 0.22 * u, 0.16 * u), sho)

    r, back = 0.5 * u, (-facing if side else 0.0)  # head radius; towards the back of the head
    if hair_style == 1:
        c.ellipse(head + (0.25 * r * back, 0.9 * r), (1.05 * r, 1.4 * r), HAIR)
    if side:
        draw_arm(0, True)
    for i in (0, 1):
        draw_leg(i, far=side and i == 0)
    half_sh, half_hip = (0.5 * u, 0.45 * u) if side else (0.95 * u, 0.62 * u)
    hip_c, waist = origin, origin + 0.45 * (neck - origin)
    pelvis = ((-1.0, 0.4), (1.0, 0.4), (0.8, -0.3), (-0.8, -0.3))  # (x in half hip widths, y in units up)
    c.poly([hip_c + across * ax * half_hip + up * ay * u for ax, ay in pelvis], PANTS)
    c.poly([neck - across * half_sh, neck + across * half_sh, waist + across * 0.9 * half_hip,
            hip_c + up * 0.3 * u + across * half_hip, hip_c + up * 0.3 * u - across * half_hip,
            waist - across * 0.9 * half_hip], SHIRT)
    for sign in (-1.0, 1.0):  # rounded shoulders
        c.circle(neck + across * sign * (half_sh - 0.25 * u) - up * 0.2 * u, 0.25 * u, SHIRT)
    c.limb(neck, neck + up * 0.45 * u, 0.21 * u, 0.19 * u, SKIN)
    for i in ((1,) if side else (0, 1)):
        draw_arm(i, False)
    if hair_style != 2:
        c.ellipse(head + (0.12 * r * back, -0.12 * r), (1.07 * r, 1.02 * r), HAIR)
    c.ellipse(head + (-0.1 * r * back, 0.1 * r), (0.9 * r, 0.98 * r), SKIN)
    if r * ss >= 6:  # eyes, once the head is big enough to show them
        for ex in ((facing * 0.5 * r,) if side else (-0.35 * r, 0.35 * r)):
            c.circle(head + (ex, 0.0), 0.1 * r, EYE)
    # 4. colour: the garments' second colour where their pattern is on, then light
    parts = c.parts
    use_alt = shirt_pattern & ((parts == SHIRT) | (parts == SHIRT_FAR))
    if pants_pattern is not None:
        use_alt |= pants_pattern & ((parts == PANTS) | (parts == PANTS_FAR))
    return c.finish(parts + use_alt.astype(np.uint8) * np.uint8(11), palette, c.light(lx, rim=0.3 * u))


BODY, WINDOW, TYRE, HUB, HEADLIGHT, TAILLIGHT, TRIM = range(1, 8)  # car part ids
_CARS = ((0.75, 0.08, 0.08), (0.10, 0.25, 0.60), (0.92, 0.92, 0.90), (0.65, 0.67, 0.70), (0.08, 0.08, 0.10),
         (0.90, 0.75, 0.10), (0.15, 0.45, 0.25))


def draw_car(rng: np.random.Generator, cx: float, ground: float, length: float, size: int, ss: int,
             lx: float) -> Sprite | None:
    """A side-view car (sedan, hatchback or van) with its tyres on row ``ground``."""
    facing = 1.0 if rng.random() < 0.5 else -1.0
    L, hgt, r = length, length * rng.uniform(0.36, 0.46), length * rng.uniform(0.1, 0.125)
    bottom, belt, roof = ground - 0.4 * r, ground - hgt * rng.uniform(0.5, 0.58), ground - hgt
    cabins = ((-0.30, 0.22, 0.06, -0.20), (-0.44, 0.20, 0.04, -0.42), (-0.49, 0.30, 0.16, -0.47))
    cabin = cabins[rng.integers(3)]  # sedan, hatchback, van: (rear bottom, front bottom, front top, rear top)

    def P(t: float, y: float) -> tuple[float, float]:  # t in [-0.5, 0.5] along the car, +0.5 = front
        return cx + facing * t * L, y

    c = _Canvas((cx - 0.52 * L, roof - 1, cx + 0.52 * L, ground), size, ss)
    if c.empty:
        return None
    nose, lamp = belt + 0.3 * (bottom - belt), belt + 0.45 * (bottom - belt)
    c.poly([P(-0.5, bottom), P(0.5, bottom), P(0.5, nose), P(0.42, belt), P(-0.47, belt), P(-0.5, nose)],
           BODY)
    c.poly([P(cabin[0], belt + 1), P(cabin[1], belt + 1), P(cabin[2], roof), P(cabin[3], roof)], BODY)
    inset = 0.1 * (belt - roof)
    win = [(cabin[0] + 0.04, belt - 0.5 * inset), (cabin[1] - 0.06, belt - 0.5 * inset),
           (cabin[2] - 0.02, roof + inset), (cabin[3] + 0.03, roof + inset)]
    c.poly([P(*q) for q in win], WINDOW)
    door = 0.5 * (win[0][0] + win[1][0]) + 0.05
    c.line(P(door, belt), P(door, roof), 0.03 * L, BODY)  # pillar between the windows
    c.line(P(door, belt), P(door, bottom - 0.3 * r), 0.006 * L, TRIM)  # door gap
    c.poly([P(-0.5, bottom), P(0.5, bottom), P(0.5, bottom - 0.35 * r), P(-0.5, bottom - 0.35 * r)], TRIM)
    c.ellipse(P(0.47, lamp), (0.025 * L, 0.02 * L), HEADLIGHT)
    c.ellipse(P(-0.485, lamp), (0.012 * L, 0.025 * L), TAILLIGHT)
    for t in (-0.32, 0.32):
        c.circle(P(t, ground - r), 1.18 * r, TRIM)  # wheel arch
        c.circle(P(t, ground - r), r, TYRE)
        c.circle(P(t, ground - r), 0.55 * r, HUB)
    palette = np.array([(0, 0, 0), _pick(rng, _CARS), (0.16, 0.2, 0.26), (0.06, 0.06, 0.07),
                        (0.72, 0.73, 0.75), (0.98, 0.95, 0.8), (0.8, 0.1, 0.08), (0.12, 0.12, 0.13)], F32)
    palette[BODY] = np.clip(palette[BODY] + rng.normal(0, 0.05, 3), 0, 1)
    ys, xs = c.grid()
    gloss = 1.0 + 0.25 * np.exp(-(((ys - (belt - 0.05 * hgt)) / (0.06 * hgt)) ** 2))  # highlight on the belt
    sheen = 1.0 + 0.6 * (frac(2.0 * ((xs - cx) / L - (ys - roof) / hgt)) < 0.24)  # diagonal sky reflection
    shade = np.where(c.parts == WINDOW, sheen, np.where(c.parts == BODY, gloss, F32(1.0)))
    return c.finish(c.parts, palette, shade * c.light(lx))


def draw_ball(rng: np.random.Generator, cx: float, cy: float, radius: float, size: int, ss: int,
              lx: float) -> Sprite | None:
    """A shaded ball centred at (cx, cy): two-tone, striped, beach-ball segments or football spots."""
    c = _Canvas((cx - radius, cy - radius, cx + radius, cy + radius), size, ss)
    if c.empty:
        return None
    c.circle((cx, cy), radius, 1)
    ys, xs = c.grid()
    dx, dy = (xs - cx) / F32(radius), (ys - cy) / F32(radius)  # (1, w), (h, 1) in [-1, 1]
    a = rng.uniform(0, np.pi)
    along = dx * F32(np.cos(a)) + dy * F32(np.sin(a))
    kind = rng.integers(4)
    colours = np.stack([_colour(rng), _colour(rng)])
    if kind == 0:
        pat = along > 0
    elif kind == 1:
        pat = frac(along * F32(rng.uniform(1.5, 3.0))) < 0.5
    elif kind == 2:
        pat = (np.floor((np.arctan2(dy, dx) + F32(a)) / F32(np.pi / 3)).astype(np.int32) & 1) == 0
    else:  # white with dark spots
        colours = np.array([[0.95, 0.95, 0.93], [0.08, 0.08, 0.1]], F32)
        spots = rng.uniform(-0.8, 0.8, (5, 2)).astype(F32)
        pat = np.min([(dx - p[0]) ** 2 + (dy - p[1]) ** 2 for p in spots], axis=0) < 0.06
    nz = np.sqrt(np.clip(1.0 - dx * dx - dy * dy, 0.0, 1.0))  # sphere normal's z
    light = np.array([0.6 * lx, -0.6, 0.7], F32) / F32(math.hypot(0.6 * lx, 0.6, 0.7))
    lam = np.clip(dx * light[0] + dy * light[1] + nz * light[2], 0.0, 1.0)  # Lambert
    index = np.broadcast_to(pat, c.parts.shape).astype(np.uint8)
    return c.finish(index, colours, 0.3 + 0.8 * lam, outline=1.0, gloss=0.45 * lam ** 24)


FUR, FUR_FAR, EAR, DARK = range(1, 5)  # dog part ids
_FURS = ((0.45, 0.28, 0.14), (0.12, 0.10, 0.09), (0.90, 0.86, 0.78), (0.80, 0.60, 0.30), (0.50, 0.50, 0.50))


def draw_dog(rng: np.random.Generator, cx: float, ground: float, height: float, size: int, ss: int,
             lx: float) -> Sprite | None:
    """A side-view quadruped, ``height`` = shoulder height, paws on row ``ground``."""
    f, h = (1.0 if rng.random() < 0.5 else -1.0), height
    L = h * rng.uniform(1.0, 1.4)
    head = np.array([cx + f * 0.58 * L, ground - h * rng.uniform(1.05, 1.3)])
    c = _Canvas((cx - 0.85 * L, head[1] - 0.4 * h, cx + 0.85 * L, ground), size, ss)
    if c.empty:
        return None
    swing, hip_y = rng.uniform(0.0, 0.45), ground - 0.62 * h
    for far, pid in ((True, FUR_FAR), (False, FUR)):
        for x, sign in ((cx + f * 0.36 * L, 1.0), (cx - f * 0.34 * L, -1.0)):
            paw = np.array([x, hip_y]) + _unit(f * swing * sign * (1.0 if far else -1.0)) * 0.6 * h
            c.limb((x, hip_y), paw, 0.1 * h, 0.07 * h, pid)
            c.ellipse(paw + (f * 0.05 * h, 0.0), (0.09 * h, 0.05 * h), pid)
        if far:
            tail = (cx - f * 0.68 * L, ground - h * rng.uniform(0.9, 1.2))
            c.limb((cx - f * 0.46 * L, ground - 0.82 * h), tail, 0.05 * h, 0.03 * h, FUR)
    c.ellipse((cx, ground - 0.72 * h), (0.52 * L, 0.21 * h), FUR)  # body
    c.limb((cx + f * 0.38 * L, ground - 0.78 * h), head, 0.15 * h, 0.12 * h, FUR)  # neck
    c.circle(head, 0.2 * h, FUR)
    c.ellipse(head + (f * 0.2 * h, 0.07 * h), (0.17 * h, 0.09 * h), FUR)  # snout
    c.circle(head + (f * 0.36 * h, 0.04 * h), 0.045 * h, DARK)  # nose
    c.circle(head + (f * 0.06 * h, -0.05 * h), 0.035 * h, DARK)  # eye
    if rng.random() < 0.6:  # floppy ear, else pointed
        c.ellipse(head + (-f * 0.07 * h, 0.02 * h), (0.07 * h, 0.15 * h), EAR, angle=f * 20)
    else:
        c.poly([head + (-f * 0.15 * h, -0.1 * h), head + (-f * 0.02 * h, -0.12 * h),
                head + (-f * 0.1 * h, -0.36 * h)], EAR)
    fur = _pick(rng, _FURS) * F32(rng.uniform(0.85, 1.1))
    palette = np.array([(0, 0, 0), fur, 0.7 * fur, 0.6 * fur + 0.05, (0.05, 0.04, 0.04)], F32)
    return c.finish(c.parts, palette, c.light(lx, rim=0.06 * h))
