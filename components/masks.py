"""Mask utilities: free-form training masks, Canny edges, grey conversion and mask morphology.

Design:
- ``free_form_mask`` follows DeepFill v2's ``brush_stroke_mask`` (also used to pretrain EdgeConnect-style
  inpainters): each stroke is a zig-zag random walk of 4-12 vertices drawn as a thick polyline with round
  joints (a filled disk on every vertex). Sizes are fractions of ``size`` (DeepFill's 12-40 px widths and
  ``sqrt(H^2 + W^2) / 8`` step length at 256 px), so a mask looks the same at any resolution. A random
  rotation of the whole walk replaces DeepFill's random flips.
- With ``target_ratio=(lo, hi)`` the mask is grown stroke by stroke until its share lies in ``[lo, hi)``
  (half-open, as ``components.buckets.bucket_of`` counts, and never empty): strokes are added until the
  share reaches a goal drawn uniformly in ``[lo, hi)`` (so shares spread over the whole bucket), and a
  stroke that would push the share to ``hi`` or beyond is erased again while the stroke scale (width and
  step) shrinks by ``SHRINK``, so the share creeps up from below without leaving the range; stroke counts
  then follow the range, not ``max_strokes``.
- ``canny_edges`` reproduces scikit-image's ``canny(gray, sigma)`` (EdgeConnect's edge input) with OpenCV:
  the same truncated Gaussian (radius ``int(4 * sigma + 0.5)``), the same unnormalised 3x3 Sobel, an L2
  magnitude, and the same default hysteresis thresholds, 0.1 and 0.2 of a [0, 1] image's Sobel magnitude
  (skimage's "10 % / 20 % of the dtype's maximum" for float input). The blurred image's gradients go to
  ``cv2.Canny`` as int16 ``dx, dy`` scaled by ``GRAD_SCALE``, so no uint8 rounding happens after the blur.
  Non-maximum suppression differs a little (OpenCV bins directions, skimage interpolates), so edge maps
  agree to about a pixel, not bit for bit.
- ``to_gray`` uses ITU-R 601 luma weights (0.299, 0.587, 0.114), OpenCV's; skimage's ``rgb2gray`` (and
  so EdgeConnect) uses Rec. 709 weights, which shifts grey levels slightly but hardly moves edges.

Conventions: arrays are (H, W) masks (bool, True / 1 = object / to fill) and (H, W, 3) uint8 RGB images;
tensors are (B, 3, H, W) RGB float in [0, 1] and (B, 1, H, W) masks. All randomness comes from the
passed ``np.random.Generator``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    import torch

LUMA_601 = (0.299, 0.587, 0.114)
GRAD_SCALE = 2048.0  # [0, 1] Sobel magnitudes (<= 4 * sqrt(2)) -> int16 gradients for cv2.Canny
SKIMAGE_LOW, SKIMAGE_HIGH = 0.1, 0.2  # skimage.feature.canny defaults for float images
SHRINK = 0.7  # stroke scale factor after a stroke overshoots the target range
MAX_ATTEMPTS = 400  # strokes tried per mask when aiming at a target ratio


def _stroke(rng: np.random.Generator, size: int, scale: float, min_vertices: int, max_vertices: int,
            min_width_frac: float, max_width_frac: float) -> tuple[np.ndarray, int]:
    """One DeepFill-style zig-zag walk: (N, 2) int32 vertices (x, y) and a stroke width in pixels."""
    mean_angle, angle_range = 2 * math.pi / 5, 2 * math.pi / 15
    radius = scale * math.sqrt(2) * size / 8  # mean step length
    n = int(rng.integers(min_vertices, max_vertices + 1))
    angle_min = mean_angle - rng.uniform(0, angle_range)
    angle_max = mean_angle + rng.uniform(0, angle_range)
    turns = rng.uniform(angle_min, angle_max, n)
    angles = np.where(np.arange(n) % 2 == 0, 2 * math.pi - turns, turns) + rng.uniform(0, 2 * math.pi)
    steps = np.clip(rng.normal(radius, radius / 2, n), 0, 2 * radius)
    points = [rng.uniform(0, size, 2)]
    for angle, step in zip(angles, steps):
        points.append(np.clip(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]), 0, size - 1))
    width = max(1, round(scale * size * rng.uniform(min_width_frac, max_width_frac)))
    return np.round(np.array(points)).astype(np.int32), width


def _draw_stroke(canvas: np.ndarray, vertices: np.ndarray, width: int) -> None:
    """Thick polyline with round joints and caps, drawn in place with value 1."""
    cv2.polylines(canvas, [vertices.reshape(-1, 1, 2)], isClosed=False, color=1, thickness=width)
    for x, y in vertices:
        cv2.circle(canvas, (int(x), int(y)), width // 2, color=1, thickness=-1)


def _rectangle(rng: np.random.Generator, size: int, scale: float, frac: tuple[float, float]) -> tuple[int, ...]:
    h, w = (max(1, round(scale * size * rng.uniform(*frac))) for _ in range(2))
    y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    return y, x, h, w


def free_form_mask(rng: np.random.Generator, size: int, max_strokes: int = 4, max_vertices: int = 10,
                   max_width_frac: float = 0.12, min_width_frac: float = 0.04, min_vertices: int = 4,
                   max_rectangles: int = 0, rect_frac: tuple[float, float] = (0.1, 0.3),
                   target_ratio: tuple[float, float] | None = None) -> np.ndarray:
    """A random free-form brush-stroke mask, (size, size) bool, True = to fill; never empty.

    Without ``target_ratio``: 1..``max_strokes`` strokes and 0..``max_rectangles`` axis-aligned rectangles
    (sides ``rect_frac`` of ``size``). With ``target_ratio=(lo, hi)``: rectangles first, then strokes, each
    kept only if the share stays below ``hi``, until it reaches a goal drawn uniformly in ``[lo, hi)``;
    raises ``RuntimeError`` if ``MAX_ATTEMPTS`` strokes do not even reach ``lo`` (not seen for ranges 0.1
    wide at sizes 32-512).
    """
    min_vertices = min(min_vertices, max_vertices)
    canvas = np.zeros((size, size), np.uint8)
    n_rects = int(rng.integers(0, max_rectangles + 1))
    if target_ratio is None:
        for _ in range(n_rects):
            y, x, h, w = _rectangle(rng, size, 1.0, rect_frac)
            canvas[y:y + h, x:x + w] = 1
        for _ in range(int(rng.integers(1, max_strokes + 1))):
            _draw_stroke(canvas, *_stroke(rng, size, 1.0, min_vertices, max_vertices, min_width_frac,
                                          max_width_frac))
        return canvas.astype(bool)

    lo, hi = target_ratio
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"target_ratio must satisfy 0 <= lo < hi <= 1, got {target_ratio}")
    total, covered, scale = size * size, 0, 1.0
    goal = max(rng.uniform(lo, hi), lo) * total  # stop once this many pixels are covered
    for _ in range(n_rects):
        y, x, h, w = _rectangle(rng, size, 1.0, rect_frac)
        trial = canvas.copy()
        trial[y:y + h, x:x + w] = 1
        if (count := int(trial.sum())) < hi * total:
            canvas, covered = trial, count
    for _ in range(MAX_ATTEMPTS):
        if covered > 0 and covered >= goal:
            return canvas.astype(bool)
        trial = canvas.copy()
        _draw_stroke(trial, *_stroke(rng, size, scale, min_vertices, max_vertices, min_width_frac, max_width_frac))
        if (count := int(trial.sum())) < hi * total:
            canvas, covered = trial, count
        else:  # overshoot: erase the stroke again and continue with finer strokes
            scale *= SHRINK
    if covered > 0 and covered >= lo * total:
        return canvas.astype(bool)
    raise RuntimeError(f"no mask with share in [{lo}, {hi}) after {MAX_ATTEMPTS} strokes (size {size})")


def to_gray(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """ITU-R 601 luma: (H, W, 3) uint8 -> (H, W) uint8 (rounded); (H, W, 3) float -> (H, W) float32;
    (B, 3, H, W) float tensor -> (B, 1, H, W) of the same dtype."""
    if not isinstance(image, np.ndarray):  # a tensor; torch imported here only, so serving never loads it
        import torch

        weights = torch.tensor(LUMA_601, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
        return (image * weights).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    if image.dtype == np.uint8:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return (image.astype(np.float32) @ np.array(LUMA_601, np.float32)).astype(np.float32)


def canny_edges(gray: np.ndarray, sigma: float = 2.0, low: float | None = None,
                high: float | None = None) -> np.ndarray:
    """Canny edges of a (H, W) grey image (uint8, or float in [0, 1]) -> (H, W) float32 in {0, 1}.

    ``low`` / ``high`` are hysteresis thresholds on the Sobel gradient magnitude of the image scaled to
    [0, 1] (skimage's units); None gives skimage's defaults 0.1 / 0.2. ``sigma`` = 0 skips the blur.
    """
    low = SKIMAGE_LOW if low is None else low
    high = SKIMAGE_HIGH if high is None else high
    image = gray.astype(np.float32) / 255.0 if gray.dtype == np.uint8 else gray.astype(np.float32)
    if sigma > 0:
        radius = int(4.0 * sigma + 0.5)  # skimage / scipy gaussian_filter truncate=4
        image = cv2.GaussianBlur(image, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, sigmaY=sigma,
                                 borderType=cv2.BORDER_REFLECT)
    dx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    dy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    dx16, dy16 = (np.round(d * GRAD_SCALE).astype(np.int16) for d in (dx, dy))
    edges = cv2.Canny(dx16, dy16, low * GRAD_SCALE, high * GRAD_SCALE, L2gradient=True)
    return (edges > 0).astype(np.float32)


def _disk(pixels: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a (H, W) mask by ``pixels`` with a disk; returns bool. 0 returns the mask unchanged (as bool)."""
    binary = mask.astype(np.uint8)
    if pixels > 0:
        binary = cv2.dilate(binary, _disk(pixels))
    return binary.astype(bool)


def erode_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink a (H, W) mask by ``pixels`` with a disk; the frame border does not erode. Returns bool."""
    binary = mask.astype(np.uint8)
    if pixels > 0:
        binary = cv2.erode(binary, _disk(pixels))
    return binary.astype(bool)


def offset_mask(mask: np.ndarray, offset: float) -> np.ndarray:
    """Grow (offset > 0) or shrink (< 0) a (H, W) mask by a possibly fractional number of pixels, through the
    distance map; returns bool.

    The boundary lies between pixels, half a pixel from the centres on either side (as in
    `signed_distance`): growing by r keeps every pixel whose centre lies within r of the boundary outside
    it, i.e. within r + 1/2 of an object pixel's centre; shrinking by r drops the object pixels within r of
    it. So 0.5 px adds (or peels) the 4-connected ring, 1 px the 8-connected one, 1.5 px reaches the pixels
    2 away in a row, and so on: no rounding to whole pixels. 0 returns the mask (as bool).
    """
    inside = mask.astype(bool)
    if offset == 0 or not inside.any() or (offset < 0 and inside.all()):
        return inside.copy()
    if offset > 0:
        return inside | (ndimage.distance_transform_edt(~inside) <= offset + 0.5)
    return inside & (ndimage.distance_transform_edt(inside) > -offset + 0.5)


def resize_mask(mask: np.ndarray, shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Resize a (H, W) mask to ``shape`` = (height, width); returns bool.

    Area-averages the mask (``INTER_AREA``) and keeps pixels covered at least ``threshold``, so a
    downscale does not flicker like nearest-neighbour and an integer upscale replicates pixels.
    """
    height, width = shape
    resized = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return resized >= threshold


SdfNormalization = Literal["max_abs", "diagonal"]


def signed_distance(mask: np.ndarray, normalization: SdfNormalization | None = "max_abs") -> np.ndarray:
    """Signed Euclidean distance of every pixel to the boundary of a (H, W) mask, float32: negative
    inside, positive outside (the boundary loss's phi, Kervadec et al. 2019).

    Exact (scipy's Euclidean distance transform, pixel centres). The boundary lies between pixels, so
    phi = d(p, outside) - 1/2 inside is negated and phi = d(p, object) - 1/2 outside: two neighbours
    across the boundary get -1/2 and +1/2 (Kervadec's code uses 0 and 1, a half-pixel shift).

    `normalization` maps phi into [-1, 1]: ``max_abs`` divides by the largest |phi| of the image (the
    far corner sits at +1); ``diagonal`` divides by the image diagonal, so a band of width alpha is
    alpha * diagonal pixels whatever the object's size; None keeps pixels. An empty mask is +1 (or
    the diagonal) everywhere, a full mask -1: there is no boundary to measure from.
    """
    inside = mask.astype(bool)
    height, width = inside.shape
    diagonal = float(np.hypot(height, width))
    if not inside.any() or inside.all():
        phi = np.full(inside.shape, diagonal if not inside.any() else -diagonal, np.float32)
    else:
        # distance_transform_edt: distance of each non-zero pixel to the nearest zero pixel
        outside_distance = ndimage.distance_transform_edt(~inside)  # > 0 outside, 0 inside
        inside_distance = ndimage.distance_transform_edt(inside)  # > 0 inside, 0 outside
        phi = np.where(inside, -(inside_distance - 0.5), outside_distance - 0.5).astype(np.float32)
    if normalization == "max_abs":
        return (phi / np.abs(phi).max()).astype(np.float32)
    if normalization == "diagonal":
        return (phi / diagonal).clip(-1, 1).astype(np.float32)
    return phi
