"""From the segmenter's output to the mask the inpainters fill, differentiably (DESIGN.md section 2).

Training selects, per image, the predicted instance of a target class (a connected component of the
argmax map, split by the offset head's votes when the segmenter has one: components.instances) with
the largest overlap with `M_G`: the paper's rule, standing in for a user's click on the object.

The mask fed to the inpainters is a **straight-through binarization**: forward, the binary selected
instance, exactly what inference fills and what the inpainters were pretrained on (a soft mask would
let half-transparent object pixels leak into the composite, and it would train the inpainters on masks
they never see at inference); backward, the gradient goes to the soft target-class probability `m_hat`
as if the mask were `m_hat` itself. `m_hat` is restricted to a window, the selected instance and
`M_G` dilated by `margin` pixels: the inpainting losses and MEL shape this object's mask, and other
objects of the target class elsewhere in the image (present in `I_G` too) are left to L_PS. With
`spare` (the true segmentation's other target-class pixels, off `M_G`), the window also leaves out the
people the pasted one touches or that the selection swallowed: `m_hat` is the semantic "person"
probability, shared by every instance, so pushing it down on a neighbour would teach the segmenter that
a person who was not pasted is no person (measured: at L_PS weight 1 it then misses people on scenes
without paste artefacts, README). Which instance a neighbour belongs to is the instance split's question.

Fallback when no predicted target instance overlaps `M_G`: training fills `M_G` itself (the pair
still trains the inpainters, and the straight-through gradient tells the segmenter where the object
was); evaluation fills nothing (the result is the input, scored as the failure it is).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from components.segmenter import instances_from_labels


def other_objects(seg: torch.Tensor, target_classes: Sequence[int], true_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: the target-class pixels of the true segmentation of I (B, H, W) off `M_G`."""
    classes = torch.tensor(list(target_classes), device=seg.device)
    return torch.isin(seg, classes)[:, None] & (true_mask < 0.5)


def target_probability(logits: torch.Tensor, target_classes: Sequence[int]) -> torch.Tensor:
    """(B, K, H, W) logits -> (B, 1, H, W) probability that a pixel belongs to any target class."""
    return logits.softmax(dim=1)[:, list(target_classes)].sum(dim=1, keepdim=True)


def offset_maps(offsets: torch.Tensor | None) -> np.ndarray | None:
    """(B, 2, H, W) offsets of the segmenter's head -> numpy float32 (None stays None)."""
    return None if offsets is None else offsets.detach().float().cpu().numpy()


def select_by_overlap(
    labels: np.ndarray, target_classes: Sequence[int], reference: np.ndarray, offsets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the target-class instance of `labels` (B, H, W) overlapping `reference` (B, H, W)
    bool the most (instances split by the (B, 2, H, W) `offsets` when given). Returns
    (selected (B, H, W) bool, found (B,) bool); empty where nothing overlaps."""
    selected = np.zeros(reference.shape, bool)
    found = np.zeros(len(reference), bool)
    for b in range(len(reference)):
        best = 0
        votes = None if offsets is None else offsets[b]
        for _, component in instances_from_labels(labels[b], list(target_classes), offsets=votes):
            overlap = int(np.count_nonzero(component & reference[b]))
            if overlap > best:
                best, selected[b], found[b] = overlap, component, True
    return selected, found


def gradient_window(selected: np.ndarray, reference: np.ndarray, margin: int) -> np.ndarray:
    """(B, H, W) bool: the selection and the reference mask, dilated by `margin` pixels (a disk)."""
    union = (selected | reference).astype(np.uint8)
    if margin <= 0:
        return union.astype(bool)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    return np.stack([cv2.dilate(u, disk) for u in union]).astype(bool)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Equals `hard` in the forward pass; its gradient flows to `soft` unchanged."""
    return hard + soft - soft.detach()


def training_mask(
    logits: torch.Tensor, target_classes: Sequence[int], true_mask: torch.Tensor, margin: int,
    offsets: torch.Tensor | None = None, spare: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The joint step's mask from the segmenter's logits (B, K, H, W) (and offsets (B, 2, H, W))
    and `M_G` (B, 1, H, W); `spare` (B, 1, H, W) bool: pixels left out of m_hat's window (other objects).

    Returns (mask (B, 1, H, W): binary forward, straight-through to `m_hat`; m_hat (B, 1, H, W): the
    soft target probability inside the window, what MEL acts on; found (B,) bool: an instance
    overlapped `M_G`, else the mask fell back to `M_G`).
    """
    reference = true_mask[:, 0].detach().cpu().numpy() > 0.5
    labels = logits.detach().argmax(dim=1).cpu().numpy()
    selected, found = select_by_overlap(labels, target_classes, reference, offset_maps(offsets))
    hard = np.where(found[:, None, None], selected, reference)  # fallback: M_G itself
    window = gradient_window(hard, reference, margin)
    if spare is not None:
        window &= ~spare[:, 0].detach().cpu().numpy().astype(bool)
    device = logits.device
    m_hat = target_probability(logits, target_classes) * torch.from_numpy(window).to(device)[:, None]
    hard_t = torch.from_numpy(hard).to(device=device, dtype=logits.dtype)[:, None]
    return straight_through(hard_t, m_hat), m_hat, torch.from_numpy(found).to(device)


def evaluation_mask(logits: torch.Tensor, target_classes: Sequence[int], true_mask: torch.Tensor,
                    offsets: np.ndarray | None = None) -> torch.Tensor:
    """The instance overlapping `M_G` the most, binary (B, 1, H, W); empty when none does. `logits` may
    be probabilities (only their argmax is used); `offsets` (B, 2, H, W) the offset head's output."""
    reference = true_mask[:, 0].detach().cpu().numpy() > 0.5
    selected, _ = select_by_overlap(logits.detach().argmax(dim=1).cpu().numpy(), target_classes, reference, offsets)
    return torch.from_numpy(selected).to(device=logits.device, dtype=logits.dtype)[:, None]
