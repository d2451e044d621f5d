"""Metrics against references: torchmetrics and skimage PSNR, skimage SSIM, hand-made masks for IoU and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

from components.metrics import coverage, mask_iou, psnr, ssim


def _pair(seed: int = 0, shape=(3, 3, 32, 40), noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    pred = (target + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return pred, target


def _smooth_pair(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((2, 3, 6, 6), generator=g, dtype=torch.float64)
    target = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bicubic", align_corners=False).clamp(0, 1)
    pred = (0.9 * target + 0.05 + 0.02 * torch.randn(target.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return pred, target


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    """Same shape and values (NaN equal to NaN); torch.testing costs seconds to import."""
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=0, equal_nan=True)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


def test_psnr_matches_torchmetrics_and_skimage_per_image():
    pred, target = _pair()
    ours = psnr(pred, target)
    assert ours.shape == (3,)
    for i in range(3):
        reference = tm_psnr(pred[i : i + 1], target[i : i + 1], data_range=1.0)
        assert ours[i].item() == pytest.approx(reference.item(), abs=1e-6)
        assert ours[i].item() == pytest.approx(sk_psnr(target[i].numpy(), pred[i].numpy(), data_range=1.0), abs=1e-6)


def test_psnr_respects_data_range_and_float32():
    pred, target = _pair()
    scaled = psnr(pred * 255, target * 255, data_range=255.0)
    assert _close(scaled, psnr(pred, target))
    assert psnr(pred.float(), target.float()).dtype == torch.float32
    assert torch.isinf(psnr(target, target)).all()


def test_masked_psnr_equals_hand_computation_and_empty_mask_is_nan():
    pred, target = _pair(shape=(2, 3, 16, 16))
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 4:10, 2:12] = 1
    ours = psnr(pred, target, mask=mask)
    inside = (pred[0][:, 4:10, 2:12] - target[0][:, 4:10, 2:12]) ** 2  # (3, 6, 10)
    assert ours[0].item() == pytest.approx(10 * math.log10(1.0 / inside.mean().item()), abs=1e-9)
    assert torch.isnan(ours[1])


def test_masked_psnr_ignores_errors_outside_the_mask():
    pred, target = _pair(shape=(1, 3, 16, 16))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    spoiled = pred.clone()
    spoiled[..., 8:, :] = 1 - spoiled[..., 8:, :]
    assert _close(psnr(spoiled, target, mask=mask), psnr(pred, target, mask=mask))


@pytest.mark.parametrize("pair", [_pair, _smooth_pair], ids=["random", "smooth"])
def test_ssim_matches_skimage(pair):
    pred, target = pair()
    ours = ssim(pred, target)
    assert ours.shape == (pred.shape[0],)
    for i in range(pred.shape[0]):
        reference = structural_similarity(_hwc(pred[i]), _hwc(target[i]), channel_axis=-1, data_range=1.0,
                                          gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(reference, abs=1e-4)


def test_ssim_float32_and_identity():
    pred, target = _smooth_pair()
    assert _close(ssim(pred.float(), target.float()), ssim(pred, target), atol=1e-5)
    assert _close(ssim(target, target), torch.ones(2), atol=1e-12)
    assert (ssim(pred, target) < 0.999).all()


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="window"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_mask_iou_and_coverage_on_hand_made_masks():
    pred = torch.zeros(4, 1, 4, 4)
    target = torch.zeros(4, 1, 4, 4)
    pred[0, 0, :2, :] = 1  # 8 px
    target[0, 0, 1:3, :] = 1  # 8 px, overlap 4 -> IoU 4 / 12, coverage 4 / 8
    pred[1, 0] = 1
    target[1, 0, 0, 0] = 1  # IoU 1 / 16, coverage 1
    target[2, 0, 3, :] = 1  # empty prediction: IoU 0, coverage 0
    # image 3: both empty -> IoU 1, coverage NaN
    assert _close(mask_iou(pred, target), torch.tensor([4 / 12, 1 / 16, 0.0, 1.0]))
    cov = coverage(pred, target)
    assert _close(cov[:3], torch.tensor([0.5, 1.0, 0.0]))
    assert torch.isnan(cov[3])
    assert _close(mask_iou(pred.bool(), target.bool()), mask_iou(pred, target))
