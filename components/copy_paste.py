"""Copy-paste pair synthesis (the paper's Sec. III-A, after *Cut, Paste and Learn*).

An object is cut from one image along its mask, scaled to a drawn mask ratio, placed at a random
position on another image (possibly partly off-frame), and blended in one of four modes:

- `none`: hard paste along the object's mask;
- `gaussian`: the alpha is a Gaussian-feathered copy of the mask (soft on both sides of the edge);
- `poisson`: OpenCV's `seamlessClone` (NORMAL_CLONE) inside the mask;
- `motion_blur`: object and alpha are smeared by a line kernel of random length and angle.

One invariant holds for every mode and is what makes `M_G` a faithful target: the pasted mask
`M_G` is exactly the set of pixels whose value may differ from the background, so
`I == I_G` wherever `M_G == 0`. Soft alphas are cut to zero below `ALPHA_FLOOR`, so a faint halo
is either in `M_G` or not painted at all.

A paste must also show: `poisson` keeps only the object's gradients inside the mask, so a flat-coloured
object on a smooth background comes out as the background itself (measured on the built-in scenes: 22 of
481 Poisson pairs changed under 10 % of `M_G` by more than 8 grey levels, most of them not at all; a
pair whose `M_G` marks an object nobody can see teaches the segmenter to mark people on empty ground).
With `min_visible_share` a placement whose pasted pixels differ visibly (`VISIBLE_LEVEL`) from the
background on less than that share of `M_G` is re-drawn like one that misses the frame; when no
placement shows, the last one is pasted hard (`none`) instead, and the pair records the mode it got.

Conventions: images (H, W, 3) uint8 RGB; masks (H, W) bool, True = pasted object.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from components.coco import mask_bbox

ALPHA_FLOOR = 0.1  # soft alpha below this is not painted (keeps M_G tight around visible change)
BLEND_MODES = ("none", "gaussian", "poisson", "motion_blur")
POISSON_MIN_SIDE = 3  # px: OpenCV's seamlessClone needs a mask at least this wide and tall
VISIBLE_LEVEL = 8  # grey levels (of 255): a pasted pixel differing from the background by more is visible


@dataclass(frozen=True)
class PasteConfig:
    size: int  # output frame is size x size
    min_mask_ratio: float
    max_mask_ratio: float  # a halo from feathering or blur may not push M_G past this share
    max_upscale: float
    max_outside: float  # largest share of the object's bbox width/height allowed off-frame per side
    feather_sigma: tuple[float, float]
    motion_blur_length: tuple[int, int]
    min_visible_share: float = 0.0  # of M_G that must differ visibly from the background (0: no check)


def visible_share(image: np.ndarray, background: np.ndarray, mask: np.ndarray) -> float:
    """Share of `mask`'s pixels where `image` differs from `background` by more than VISIBLE_LEVEL in some channel."""
    if not mask.any():
        return 0.0
    difference = np.abs(image.astype(np.int16) - background.astype(np.int16)).max(axis=-1)
    return float((difference[mask] > VISIBLE_LEVEL).mean())


@dataclass
class Pasted:
    image: np.ndarray  # (S, S, 3) uint8, `I`
    mask: np.ndarray  # (S, S) bool, `M_G`: every pixel that may differ from the background
    alpha: np.ndarray  # (S, S) float32 in [0, 1], the opacity actually used
    bbox: list[int]  # [x, y, w, h] of `mask`
    scale: float  # enlargement applied to the source object
    mode: str  # the blending mode used: the one asked for, or `none` when that one hid the object


def cut_object(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop `image` and `mask` to the mask's bounding box: ((h, w, 3) uint8, (h, w) bool)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return image[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy()


def fit_background(
    image: np.ndarray, labels: np.ndarray, size: int, hflip_prob: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Resize the short side to `size`, random-crop a square, maybe flip; labels follow (nearest): an
    (H, W) map, or (H, W, C) maps stacked (the label map and the instance map, say).

    Plain OpenCV on purpose: albumentations would do the same, but importing it loads torch (~5 s and
    ~300 MB per worker process) for three lines of geometry; augmentation at training time is its job.
    """
    height, width = labels.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_h, new_w) != (height, width):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
        labels = cv2.resize(labels, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    y0, x0 = int(rng.integers(new_h - size + 1)), int(rng.integers(new_w - size + 1))
    image, labels = image[y0 : y0 + size, x0 : x0 + size], labels[y0 : y0 + size, x0 : x0 + size]
    if rng.uniform() < hflip_prob:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def _placement_scale(obj_mask: np.ndarray, target_ratio: float, config: PasteConfig) -> float:
    """Scale that gives `target_ratio` of the frame, capped by `max_upscale` and by the frame."""
    height, width = obj_mask.shape
    wanted = np.sqrt(target_ratio * config.size**2 / obj_mask.sum())
    fit = config.size / (1.0 - config.max_outside) / max(height, width)
    return float(min(wanted, config.max_upscale, fit))


def _place(
    obj: np.ndarray, obj_mask: np.ndarray, scale: float, where: tuple[float, float], size: int, max_outside: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scale the object and put it on a size x size canvas; `where` in [0, 1]^2 picks the position.

    Returns the object colours (S, S, 3) float32 and its coverage (S, S) float32 in [0, 1]
    (anti-aliased by the resize).
    """
    height, width = obj_mask.shape
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    colours = cv2.resize(obj, (new_w, new_h), interpolation=interp).astype(np.float32)
    coverage = cv2.resize(obj_mask.astype(np.float32), (new_w, new_h), interpolation=interp)
    # Top-left corner: up to `max_outside` of the bbox may hang off each side.
    x_lo, x_hi = -max_outside * new_w, size - new_w + max_outside * new_w
    y_lo, y_hi = -max_outside * new_h, size - new_h + max_outside * new_h
    x0 = int(round(x_lo + where[0] * (x_hi - x_lo)))
    y0 = int(round(y_lo + where[1] * (y_hi - y_lo)))
    canvas = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    sx0, sy0 = max(0, -x0), max(0, -y0)  # source offsets when the object starts off-frame
    dx0, dy0 = max(0, x0), max(0, y0)
    w = min(new_w - sx0, size - dx0)
    h = min(new_h - sy0, size - dy0)
    if w > 0 and h > 0:
        canvas[dy0 : dy0 + h, dx0 : dx0 + w] = colours[sy0 : sy0 + h, sx0 : sx0 + w]
        alpha[dy0 : dy0 + h, dx0 : dx0 + w] = coverage[sy0 : sy0 + h, sx0 : sx0 + w]
    return canvas, alpha


def _motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Normalized line kernel (L, L) for a linear motion blur."""
    kernel = np.zeros((length, length), np.float32)
    centre = (length - 1) / 2
    dx, dy = np.cos(np.deg2rad(angle_deg)) * centre, np.sin(np.deg2rad(angle_deg)) * centre
    p0 = (int(round(centre - dx)), int(round(centre - dy)))
    p1 = (int(round(centre + dx)), int(round(centre + dy)))
    cv2.line(kernel, p0, p1, 1.0, thickness=1, lineType=cv2.LINE_AA)
    return kernel / kernel.sum()


def _poisson(background: np.ndarray, canvas: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """seamlessClone of the object into the background inside `hard`, (S, S, 3) float32.

    The frame is padded first: OpenCV's solver needs the mask to stay off the image border.
    The clone centre is chosen so OpenCV's ROI (centre - size // 2) lands exactly on the mask.
    A mask whose bounding box is under 3 px wide or tall makes OpenCV 5's seamlessClone fail an
    assertion (`!fixedSize()`); such a sliver is pasted as it is (the colours of `canvas`).
    """
    ys, xs = np.nonzero(hard)
    if xs.size == 0 or np.ptp(xs) + 1 < POISSON_MIN_SIDE or np.ptp(ys) + 1 < POISSON_MIN_SIDE:
        return canvas.astype(np.float32)
    pad = 4
    bg = cv2.copyMakeBorder(background, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    src = cv2.copyMakeBorder(np.clip(canvas, 0, 255).astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    mask = cv2.copyMakeBorder(hard.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(mask)
    cloned = cv2.seamlessClone(src, bg, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return cloned[pad:-pad, pad:-pad].astype(np.float32)


def blend(
    background: np.ndarray, canvas: np.ndarray, coverage: np.ndarray, mode: str, config: PasteConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite the placed object; returns (I uint8, M_G bool, alpha float32)."""
    hard = coverage >= 0.5  # (S, S) the object's silhouette at the new scale
    bg = background.astype(np.float32)
    if mode == "none":
        alpha, colours = hard.astype(np.float32), canvas
    elif mode == "gaussian":
        sigma = rng.uniform(*config.feather_sigma)
        alpha, colours = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), sigma), canvas
    elif mode == "motion_blur":
        length = int(rng.integers(config.motion_blur_length[0], config.motion_blur_length[1] + 1))
        kernel = _motion_kernel(length, rng.uniform(0.0, 180.0))
        hard_f = hard.astype(np.float32)
        alpha = cv2.filter2D(hard_f, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        premultiplied = cv2.filter2D(canvas * hard_f[..., None], -1, kernel, borderType=cv2.BORDER_CONSTANT)
        colours = premultiplied / np.maximum(alpha, 1e-6)[..., None]
    elif mode == "poisson":
        alpha, colours = hard.astype(np.float32), _poisson(background, canvas, hard)
    else:
        raise ValueError(f"unknown blending mode {mode!r}; expected one of {BLEND_MODES}")
    alpha = np.where(alpha >= ALPHA_FLOOR, np.clip(alpha, 0.0, 1.0), 0.0).astype(np.float32)
    mask = alpha > 0
    mixed = bg * (1 - alpha[..., None]) + colours * alpha[..., None]
    image = np.where(mask[..., None], np.clip(np.rint(mixed), 0, 255), bg).astype(np.uint8)
    return image, mask, alpha


def paste(
    background: np.ndarray,
    obj: np.ndarray,
    obj_mask: np.ndarray,
    target_ratio: float,
    mode: str,
    config: PasteConfig,
    rng: np.random.Generator,
    tries: int = 10,
) -> Pasted | None:
    """Paste a cut object onto a size x size background at a drawn position; None if it never fits.

    The scale is chosen for `target_ratio` of the frame (capped by `max_upscale` and the frame) and
    grown when parts fall off-frame; the position is re-drawn until the visible part reaches
    `min_mask_ratio` and the paste shows on `min_visible_share` of `M_G`, and the scale shrunk when a
    blur halo pushes `M_G` past `max_mask_ratio`.
    The realized ratio is what `Pasted.mask` covers; it can stay below the target when the caps bind.
    """
    goal = target_ratio  # lowered when a blur halo overshoots max_mask_ratio
    hidden = None  # the last placement that fit but that `mode` made invisible
    largest = _placement_scale(obj_mask, 1.0, config)  # the cap from max_upscale and the frame
    for _ in range(tries):
        where = (rng.uniform(), rng.uniform())
        scale = _placement_scale(obj_mask, goal, config)
        canvas, coverage = _place(obj, obj_mask, scale, where, config.size, config.max_outside)
        for _ in range(3):  # parts fell off-frame: grow towards the target, same relative position
            visible = (coverage >= 0.5).mean()
            if visible == 0 or visible >= 0.9 * goal or scale >= largest:
                break
            scale = min(largest, scale * float(np.sqrt(goal / visible)))
            canvas, coverage = _place(obj, obj_mask, scale, where, config.size, config.max_outside)
        if (coverage >= 0.5).mean() < config.min_mask_ratio:
            continue
        image, mask, alpha = blend(background, canvas, coverage, mode, config, rng)
        if mask.mean() > config.max_mask_ratio:
            goal *= 0.97 * config.max_mask_ratio / mask.mean()
            continue
        if config.min_visible_share and visible_share(image, background, mask) < config.min_visible_share:
            hidden = (canvas, coverage, scale)
            continue
        return Pasted(image=image, mask=mask, alpha=alpha, bbox=mask_bbox(mask), scale=scale, mode=mode)
    if hidden is not None and mode != "none":
        canvas, coverage, scale = hidden
        image, mask, alpha = blend(background, canvas, coverage, "none", config, rng)
        return Pasted(image=image, mask=mask, alpha=alpha, bbox=mask_bbox(mask), scale=scale, mode="none")
    return None
