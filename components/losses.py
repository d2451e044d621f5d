"""The method's losses, one pure function each, weights passed explicitly (DESIGN.md section 2).

- hinge GAN: `hinge_d_loss` (discriminator) and `hinge_g_loss` (generator);
- `feature_matching_loss`: L1 between the discriminator's activations on real and fake (EdgeConnect);
- `perceptual_loss` and `style_loss` (L1 between Gram matrices), on any list of activations: the
  discriminator's by default (the paper), or a VGG-19's (EdgeConnect) when a local weights file is
  given;
- `masked_l1`: L1 normalized by the number of masked pixels (the paper's L_IR), with separate weights
  for the hole and the known region (LaMa's form), pooled over the batch or per image;
  `masked_cross_entropy` likewise for the
  segmentation inpainter;
- `composite_l1`: whole-image L1 of the composite `I_I*M + I*(1-M)` against `I_G`, divided by the true
  mask's pixels: the joint step's signal to the mask itself (its gradient at a pixel says whether the
  fill or the photo is closer to the truth there);
- `segmentation_loss`: the segmenter's own L_PS, per-pixel cross entropy; `target_dice_loss`: soft Dice
  of the target classes' probability per image, an optional L_PS term that counts a small person's
  pixels as much as a large one's (cross entropy is dominated by the large stuff regions);
- `boundary_loss` (Kervadec et al.'s L_B) and `mask_expansion_loss` (the paper's MEL, L_X): the soft
  mask weighted by the signed distance map phi of `M_G` (components.masks.signed_distance), shifted by
  alpha for MEL. Reduction per image: ``mean`` over pixels (Kervadec's code, the reading under which
  the paper's lambda_X = 1000 is sensible) or ``sum``; then the mean over the batch.

Reductions: means over the batch; the per-pixel normalizations are stated per function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from components.instances import offset_unit


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))]."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[D(fake)]."""
    return -fake_logits.mean()


def feature_matching_loss(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean L1 between fake and (detached) real activations."""
    return sum(F.l1_loss(fake, real.detach()) for real, fake in zip(real_features, fake_features, strict=True))


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), normalized by C * H * W."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(a_features: list[torch.Tensor], b_features: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean L1 between Gram matrices."""
    return sum(F.l1_loss(gram_matrix(a), gram_matrix(b)) for a, b in zip(a_features, b_features, strict=True))


def perceptual_loss(
    a_features: list[torch.Tensor], b_features: list[torch.Tensor], weights: list[float] | None = None
) -> torch.Tensor:
    """Weighted sum over layers of the mean L1 between activations (weights default to 1)."""
    weights = weights or [1.0] * len(a_features)
    return sum(w * F.l1_loss(a, b) for w, a, b in zip(weights, a_features, b_features, strict=True))


Normalization = Literal["batch", "image"]


def _normalize(per_image_sum: torch.Tensor, mask: torch.Tensor, normalize_by: Normalization) -> torch.Tensor:
    """(B,) weighted sums -> one loss: divided by the batch's masked pixels ("batch": big holes weigh
    more), or by each image's own masked pixels and then averaged over the images that have a hole
    ("image": every image weighs the same, as a per-image mean metric such as PSNR does)."""
    masked = mask.flatten(1).sum(dim=1)  # (B,)
    if normalize_by == "image":
        has_hole = masked > 0
        per_image = torch.where(has_hole, per_image_sum / masked.clamp_min(1.0), torch.zeros_like(per_image_sum))
        return per_image.sum() / has_hole.sum().clamp_min(1)
    return per_image_sum.sum() / masked.sum().clamp_min(1.0)


def masked_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight_missing: float = 1.0,
    weight_known: float = 0.0, normalize_by: Normalization = "batch",
) -> torch.Tensor:
    """sum(|pred - target| * w) / (channels * masked pixels), w = weight_missing in the hole, weight_known
    outside. With weight_known=0 this is the mean L1 over masked pixels; with 1 it is EdgeConnect's
    whole-image L1 divided by the mask's share of the image."""
    weights = weight_missing * mask + weight_known * (1 - mask)  # (B, 1, H, W)
    per_image = ((pred - target).abs() * weights).flatten(1).sum(dim=1) / pred.shape[1]  # (B,)
    return _normalize(per_image, mask, normalize_by)


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    weight_missing: float = 1.0, weight_known: float = 0.0, normalize_by: Normalization = "batch",
) -> torch.Tensor:
    """Per-pixel cross entropy (logits (B, K, H, W), target (B, H, W) long), weighted and normalized
    like `masked_l1`."""
    per_pixel = F.cross_entropy(logits, target, reduction="none")  # (B, H, W)
    weights = weight_missing * mask[:, 0] + weight_known * (1 - mask[:, 0])
    return _normalize((per_pixel * weights).flatten(1).sum(dim=1), mask, normalize_by)


def composite_l1(composite: torch.Tensor, target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Whole-image L1 of `composite` (B, 3, H, W), the fill pasted into the photo through a learned mask M,
    against `target` `I_G`, per image divided by the pixels of `reference` `M_G` (B, 1, H, W) (a count
    independent of M, so the loss cannot drop by resizing the mask alone), then the mean over images.

    Its gradient w.r.t. M at a pixel p is (fill_p - I_p) * sign(composite_p - I_G,p): negative (grow M)
    where an object pixel was left out and the fill is closer to the truth than the photo, positive
    (shrink M) where M covers background the fill renders worse than the photo, zero on untouched
    background (composite = I = I_G)."""
    return masked_l1(composite, target, reference, 1.0, 1.0, "image")


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_PS: mean per-pixel cross entropy of the segmenter's logits (B, K, H, W) against (B, H, W)."""
    return F.cross_entropy(logits, target)


def target_dice_loss(logits: torch.Tensor, target: torch.Tensor, target_classes: Sequence[int],
                     smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of the target classes' summed softmax probability (from logits (B, K, H, W)) against
    their pixels in `target` (B, H, W), per image, then the batch mean. `smooth` keeps an image without
    target pixels defined: there the term pushes the probability's sum towards 0."""
    classes = list(target_classes)
    probability = logits.float().softmax(dim=1)[:, classes].sum(dim=1).flatten(1)
    truth = torch.isin(target, torch.tensor(classes, device=target.device)).flatten(1).float()
    dice = (2 * (probability * truth).sum(1) + smooth) / (probability.sum(1) + truth.sum(1) + smooth)
    return (1 - dice).mean()


def offset_loss(offsets: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The offset head's term of L_PS: L1 between its offsets (B, 2, H, W) and the offsets to the
    instances' centers `target` (B, 2, H, W), both in px, averaged over the supervised pixels (`weight`
    (B, 1, H, W) 1) and both components, in units of components.instances.offset_unit (the image's size
    / 16), so the term does not grow with the resolution. 0 with none supervised."""
    unit = offset_unit(offsets.shape[-1])
    per_pixel = (offsets.float() - target).abs().sum(dim=1, keepdim=True) / (2 * unit)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1)


def mask_expansion_loss(
    phi: torch.Tensor, soft_mask: torch.Tensor, alpha: float, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """L_X = sum_p (phi(p) - alpha) * m(p), phi and m (B, 1, H, W). Minimized by m = 1 exactly where
    phi < alpha: the object plus a band of width alpha (in phi's units) around it."""
    per_pixel = ((phi - alpha) * soft_mask).flatten(1)  # (B, H * W)
    per_image = per_pixel.sum(dim=1) if reduction == "sum" else per_pixel.mean(dim=1)
    return per_image.mean()


def boundary_loss(
    phi: torch.Tensor, soft_mask: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """L_B = sum_p phi(p) * m(p): MEL with alpha = 0, minimized by the true mask itself."""
    return mask_expansion_loss(phi, soft_mask, 0.0, reduction)
