"""Image and mask metrics, batched in torch and returning one value per image, shape (B,).

Conventions:
- Images are RGB float (B, 3, H, W) in [0, ``data_range``]; masks are (B, 1, H, W) with 1 = object / filled.
- ``psnr`` averages the squared error over all pixels and channels of each image, or, with ``mask``, over
  the masked pixels and all channels (the mask is broadcast over channels). Identical images give +inf;
  an image whose mask is empty gives NaN (0 / 0), so callers can drop it with ``nanmean``.
- ``ssim`` is Wang et al.'s SSIM as scikit-image computes it with
  ``structural_similarity(a, b, channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``: an 11 x 11 Gaussian window (sigma 1.5, the normalised kernel of
  scipy's ``gaussian_filter(truncate=3.5)``), K1 = 0.01, K2 = 0.03, population (not sample) covariances,
  the SSIM map averaged over the 'valid' region only (no padding: skimage crops ``(window - 1) / 2``
  pixels per side after filtering, which is the same thing), per RGB channel, then averaged over
  channels. Statistics are computed in float64, so results match skimage to rounding (~1e-15).
  EdgeConnect's own evaluation script computes SSIM on greyscale with a different window, and
  torchmetrics pads and crops differently, so these numbers are not comparable with its paper tables.
- ``leftover_share`` counts what a viewer would still see of the object: of the pixels where the photo
  differs visibly from its true background (``visible_change``: largest RGB difference above a
  threshold), the share outside the removal mask. A removal is *clean* when that share is at most a
  small fraction (``clean_removal``). Pixels that changed by less than the threshold (a feathered edge a
  grey level off) do not count, so the metric ranks masks by what they leave visible, not by ``coverage < 1``.
- ``mask_iou`` / ``coverage`` binarise at 0.5. Two empty masks have IoU 1.0 (nothing to find, nothing
  found); ``coverage`` = |pred & target| / |target| is NaN for an empty target.

SSIM is written by hand (a few lines of grouped conv) because neither torchmetrics nor skimage offers
skimage's valid-region convention on batched tensors; tests pin it to skimage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,); inside ``mask`` (B, 1, H, W) when given."""
    squared = (pred - target).double() ** 2  # (B, C, H, W)
    if mask is None:
        mse = squared.flatten(1).mean(dim=1)
    else:
        weight = mask.double().expand_as(squared)  # (B, C, H, W), 1 = counted
        mse = (squared * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1)  # NaN for empty masks
    return (10.0 * torch.log10(data_range**2 / mse)).to(pred.dtype)


def _gaussian_window(window: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``window``, float64."""
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity per image, (B,), averaged over channels and the valid region."""
    channels = pred.shape[1]
    if window % 2 != 1 or min(pred.shape[-2:]) < window:
        raise ValueError(f"window must be odd and fit the image, got {window} for {tuple(pred.shape[-2:])}")
    g = _gaussian_window(window, sigma).to(pred.device)
    rows = g.view(1, 1, window, 1).repeat(channels, 1, 1, 1)  # (C, 1, window, 1)
    cols = g.view(1, 1, 1, window).repeat(channels, 1, 1, 1)  # (C, 1, 1, window)

    def blur(x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H - window + 1, W - window + 1)
        return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)

    x, y = pred.double(), target.double()
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).to(pred.dtype)


def _binary_counts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    p, t = (pred > 0.5).flatten(1), (target > 0.5).flatten(1)  # (B, H * W) bool
    return (p & t).sum(dim=1).double(), (p | t).sum(dim=1).double(), t.sum(dim=1).double()


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of binary (B, 1, H, W) masks, (B,) float32; 1.0 when both are empty."""
    inter, union, _ = _binary_counts(pred, target)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).float()


def coverage(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of the target covered by the prediction, |pred & target| / |target|, (B,) float32; NaN if empty."""
    inter, _, area = _binary_counts(pred, target)
    return (inter / area).float()


def area_ratio(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Over-expansion |pred| / |target| of binary (B, 1, H, W) masks, (B,) float32; NaN for an empty target."""
    _, _, area = _binary_counts(pred, target)
    ratio = (pred > 0.5).flatten(1).sum(dim=1).double() / area.clamp(min=1)
    return torch.where(area > 0, ratio, torch.full_like(ratio, float("nan"))).float()


def visible_change(image: torch.Tensor, background: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels where the photo `image` differs visibly from the background `background`
    (both (B, 3, H, W) in [0, 1]): the largest channel difference is above `threshold` (in the images'
    units; 8 grey levels of 255 is 8 / 255). These are the object's pixels a viewer can see, feathered
    edges and Poisson-shifted colours included when they change a pixel by more than the threshold."""
    return (image - background).abs().amax(dim=1, keepdim=True) > threshold


def leftover_share(pred: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """Share of the visibly changed pixels `changed` (B, 1, H, W) bool that lie outside the removal mask
    `pred` (B, 1, H, W): what of the object stays visible after the removal, (B,) float32; NaN when
    nothing changed visibly (no object to leave behind)."""
    seen = changed.flatten(1)
    outside = (seen & ~(pred > 0.5).flatten(1)).sum(dim=1).double()
    return (outside / seen.sum(dim=1).double()).float()  # 0 / 0 = NaN


def clean_removal(share: torch.Tensor, max_share: float) -> torch.Tensor:
    """(B,) float {0, 1, NaN}: 1 where at most `max_share` of the visible object is left outside the mask
    (NaN stays NaN: a pair with nothing visible is not counted either way)."""
    return torch.where(share.isnan(), share, (share <= max_share).float())
