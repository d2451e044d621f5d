"""The mask expansion loss and its parts: the signed distance map, L_B, L_X, and mask selection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from components import losses
from components.masks import dilate_mask, erode_mask, signed_distance
from components.selection import other_objects, select_by_overlap, straight_through, training_mask


def brute_force_phi(mask: np.ndarray) -> np.ndarray:
    """Distance from each pixel centre to the nearest centre of the other set, minus 1/2, signed."""
    ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
    points = np.stack([ys.ravel(), xs.ravel()], 1).astype(float)
    inside = mask.ravel()
    phi = np.empty(len(points))
    for i, p in enumerate(points):
        other = points[inside != inside[i]]
        d = np.sqrt(((other - p) ** 2).sum(1)).min() - 0.5
        phi[i] = -d if inside[i] else d
    return phi.reshape(mask.shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_signed_distance_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((9, 11), bool)
    mask[rng.integers(0, 9, 6), rng.integers(0, 11, 6)] = True  # scattered pixels: several components
    mask[2:5, 3:8] = True
    phi = signed_distance(mask, normalization=None)
    expected = brute_force_phi(mask)
    np.testing.assert_allclose(phi, expected, atol=1e-5)
    assert (phi[mask] < 0).all() and (phi[~mask] > 0).all()
    # normalizations: by the largest |phi| (reaches exactly 1) or by the diagonal
    by_max = signed_distance(mask, "max_abs")
    np.testing.assert_allclose(by_max, expected / np.abs(expected).max(), atol=1e-6)
    assert np.abs(by_max).max() == pytest.approx(1.0)
    np.testing.assert_allclose(signed_distance(mask, "diagonal"), expected / np.hypot(9, 11), atol=1e-6)


def test_signed_distance_without_a_boundary():
    assert (signed_distance(np.zeros((4, 5), bool)) == 1).all()
    assert (signed_distance(np.ones((4, 5), bool)) == -1).all()


def _disk(size: int, radius: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), radius, 1, -1)
    return mask.astype(bool)


def test_boundary_loss_is_smallest_at_the_true_mask():
    true = _disk(40, 9)
    phi = torch.from_numpy(signed_distance(true))[None, None]
    as_tensor = lambda m: torch.from_numpy(m.astype(np.float32))[None, None]  # noqa: E731
    at_truth = losses.boundary_loss(phi, as_tensor(true)).item()
    for pixels in (1, 2, 4):
        assert losses.boundary_loss(phi, as_tensor(erode_mask(true, pixels))).item() > at_truth
        assert losses.boundary_loss(phi, as_tensor(dilate_mask(true, pixels))).item() > at_truth
    # sum = mean x number of pixels
    assert losses.boundary_loss(phi, as_tensor(true), "sum").item() == pytest.approx(at_truth * 40 * 40, rel=1e-5)


def _optimize_free_mask(phi: torch.Tensor, start: np.ndarray, alpha: float | None, steps: int = 400) -> np.ndarray:
    """A free per-pixel mask (sigmoid of logits starting at +-4 on `start`) optimized on L_X alone
    (alpha None: on L_B)."""
    logits = torch.where(torch.from_numpy(start), 4.0, -4.0)[None, None].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.2)
    for _ in range(steps):
        soft = torch.sigmoid(logits)
        loss = (losses.boundary_loss(phi, soft) if alpha is None
                else losses.mask_expansion_loss(phi, soft, alpha)) * 1000
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (torch.sigmoid(logits) > 0.5)[0, 0].numpy()


def test_mel_grows_a_band_that_widens_with_alpha_and_stops():
    true = _disk(64, 10)
    phi_np = signed_distance(true, "diagonal")  # alpha x 90.5 px: 0.9, 2.7, 4.5, 6.3 px
    phi = torch.from_numpy(phi_np)[None, None]
    outside_distance = signed_distance(true, None) + 0.5  # pixels from the object, outside
    widths = []
    for alpha in (0.01, 0.03, 0.05, 0.07):
        grown = _optimize_free_mask(phi, true, alpha)
        np.testing.assert_array_equal(grown, phi_np < alpha)  # exactly the band, nothing beyond: it stops
        assert grown[true].all()
        widths.append(float(outside_distance[grown & ~true].max()))
    assert widths == sorted(widths) and widths[0] >= 0.99 and widths[-1] > 6
    # without the shift (MEL off, the plain boundary loss) the mask stays the object
    np.testing.assert_array_equal(_optimize_free_mask(phi, true, None), true)


def test_select_by_overlap_and_fallback():
    labels = np.zeros((2, 12, 12), np.int64)
    labels[0, 1:4, 1:4] = 1  # small person overlapping M_G a little
    labels[0, 6:11, 6:11] = 1  # big person overlapping M_G more
    labels[0, 0:2, 9:12] = 2  # another class
    reference = np.zeros((2, 12, 12), bool)
    reference[0, 3:9, 3:9] = True
    reference[1, 3:9, 3:9] = True  # image 1: no person predicted at all
    selected, found = select_by_overlap(labels, [1], reference)
    assert found.tolist() == [True, False]
    np.testing.assert_array_equal(selected[0], (labels[0] == 1) & (np.arange(12)[:, None] >= 6))
    assert not selected[1].any()


def test_straight_through_and_training_mask():
    soft = torch.tensor([0.2, 0.7, 0.9], requires_grad=True)
    hard = torch.tensor([0.0, 1.0, 1.0])
    mixed = straight_through(hard, soft)
    assert torch.equal(mixed.detach(), hard)
    (mixed * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert soft.grad.tolist() == [1.0, 2.0, 3.0]
    # training_mask: binary forward, falls back to M_G when nothing overlaps, m_hat only in the window
    logits = torch.zeros(2, 3, 16, 16)
    logits[0, 1, 4:8, 4:8] = 5.0  # image 0: a person where M_G is
    logits[1, 1, 0:3, 0:3] = 5.0  # image 1: a person far from M_G
    logits.requires_grad_(True)
    true = torch.zeros(2, 1, 16, 16)
    true[:, :, 5:9, 5:9] = 1
    mask, m_hat, found = training_mask(logits, [1], true, margin=2)
    assert found.tolist() == [True, False]
    assert torch.equal(mask[0, 0].detach() > 0.5, logits[0, 1].detach() > 1)
    assert torch.equal(mask[1].detach(), true[1])  # fallback: M_G
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
    assert m_hat[1, 0, 0:3, 0:3].abs().sum() == 0  # the far person is outside image 1's window
    mask.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_the_window_spares_the_people_that_were_not_pasted():
    """A person touching the pasted one (M_G): both are one predicted component, so the selection holds
    both; with `spare`, m_hat (what MEL and L_C push on) is zero on the other person's true pixels, and
    still covers M_G and the stuff around it."""
    seg = torch.zeros(1, 12, 12, dtype=torch.long)
    seg[0, 3:9, 2:6] = 1  # the pasted person, M_G
    seg[0, 3:9, 6:9] = 1  # a person of the background photo, touching it
    seg[0, 0:2, 0:2] = 2  # some other thing class
    true = torch.zeros(1, 1, 12, 12)
    true[0, 0, 3:9, 2:6] = 1
    others = other_objects(seg, [1], true)
    assert torch.equal(others[0, 0], (seg[0] == 1) & (true[0, 0] == 0))
    logits = torch.zeros(1, 3, 12, 12)
    logits[0, 1] = torch.where(seg[0] == 1, 5.0, -5.0)
    mask, m_hat, found = training_mask(logits, [1], true, margin=2, spare=others)
    assert found.item() and mask[0, 0, 3:9, 2:9].detach().eq(1).all()  # the selection merged both people
    assert m_hat[0, 0][others[0, 0]].abs().sum() == 0
    assert (m_hat[0, 0][true[0, 0] > 0] > 0.9).all() and m_hat[0, 0, 3:9, 0:2].gt(0).all()
    spared = training_mask(logits, [1], true, margin=2)[1]
    assert spared[0, 0][others[0, 0]].gt(0.9).all()  # without it the neighbour is in the window
