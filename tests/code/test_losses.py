"""Each loss on hand-made inputs with known answers; the VGG-19 loader on a local file."""

from __future__ import annotations

import pytest
import torch

from components import losses
from components.vgg import PERCEPTUAL_LAYERS, VGG19Features, load_vgg19


def test_hinge_terms_on_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x): 0, 0.5, 2 -> mean 2.5 / 3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x): 0, 1, 2 -> mean 1
    assert losses.hinge_d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert losses.hinge_g_loss(fake).item() == pytest.approx(1.0 / 3)


def test_feature_matching_and_perceptual():
    a = [torch.zeros(1, 2, 4, 4), torch.ones(1, 3, 2, 2)]
    b = [torch.ones(1, 2, 4, 4), torch.ones(1, 3, 2, 2) * 3]
    assert losses.feature_matching_loss(a, b).item() == pytest.approx(1.0 + 2.0)
    assert losses.perceptual_loss(a, b, [0.5, 2.0]).item() == pytest.approx(0.5 * 1.0 + 2.0 * 2.0)
    assert losses.feature_matching_loss(a, a).item() == 0.0


def test_gram_and_style():
    f = torch.arange(8.0).reshape(1, 2, 2, 2)
    gram = losses.gram_matrix(f)
    flat = f.reshape(2, 4)
    assert torch.allclose(gram[0], flat @ flat.T / 8)
    feats = [torch.randn(2, 3, 5, 5), torch.randn(2, 4, 3, 3)]
    assert losses.style_loss(feats, [x.clone() for x in feats]).item() == 0.0
    assert losses.style_loss(feats, [x * 2 for x in feats]).item() > 0


def test_masked_l1_is_the_mean_over_masked_pixels():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[0, :, 1:3, 1:4] = 1  # 6 pixels
    mask[1, :, 4:6, 0:2] = 1  # 4 pixels
    inside = mask.expand_as(pred).bool()
    expected = (pred - target).abs()[inside].mean()  # pooled over the batch's masked pixels
    assert losses.masked_l1(pred, target, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    # per image: each image's own mean, then the mean of the two
    per_image = [(pred - target).abs()[b][inside[b]].mean() for b in range(2)]
    assert losses.masked_l1(pred, target, mask, normalize_by="image").item() == pytest.approx(
        (sum(per_image) / 2).item(), rel=1e-6)
    # an image without a hole (a bare background in joint training) is left out, not divided by zero
    no_hole = torch.cat([mask[:1], torch.zeros_like(mask[:1])])
    assert losses.masked_l1(pred, target, no_hole, 1.0, 1.0, normalize_by="image").item() == pytest.approx(
        ((pred - target).abs()[0].sum() / 3 / 6).item(), rel=1e-6)
    # with the known region weighted 1: the whole-image L1 divided by the masked share (EdgeConnect)
    whole = (pred - target).abs().mean() / mask.mean()
    assert losses.masked_l1(pred, target, mask, 1.0, 1.0).item() == pytest.approx(whole.item(), rel=1e-5)


def test_composite_l1_tells_the_mask_where_to_grow_and_where_to_shrink():
    """A 1x6 strip: I_G grey; the object (white) on pixels 1-3 (M_G); the fill equals I_G except at pixel 5.
    The mask covers pixels 1-2 (pixel 3 left behind) and 5 (background the fill renders badly)."""
    background = torch.full((1, 3, 1, 6), 0.5)
    image = background.clone()
    image[..., 1:4] = 1.0
    fill = background.clone()
    fill[..., 5] = 0.9
    reference = torch.zeros(1, 1, 1, 6)
    reference[..., 1:4] = 1
    mask = torch.tensor([[[[0.0, 1, 1, 0, 0, 1]]]], requires_grad=True)
    loss = losses.composite_l1(fill * mask + image * (1 - mask), background, reference)
    # left-behind pixel 3: |1 - 0.5| x 3 channels; bad fill at 5: |0.9 - 0.5| x 3; / (3 channels x 3 M_G pixels)
    assert loss.item() == pytest.approx((0.5 + 0.4) / 3)
    (grad,) = torch.autograd.grad(loss, mask)
    grad = grad[0, 0, 0]
    assert grad[3] < 0  # grow over the object pixel left out: the fill is closer to the truth there
    assert grad[5] > 0  # shrink off background the fill renders worse than the photo
    assert grad[0] == 0 and grad[4] == 0  # untouched background: composite = photo = truth
    assert grad[1] == 0 and grad[2] == 0  # covered and filled exactly: nothing to gain
    # the count is M_G's, not the mask's: a bigger mask is not cheaper for its own sake
    bigger = torch.ones(1, 1, 1, 6)
    assert losses.composite_l1(background * bigger + image * (1 - bigger), background, reference).item() == 0.0


def test_masked_cross_entropy():
    logits = torch.zeros(1, 4, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # uniform logits: CE = log 4 everywhere; only one masked pixel counts
    log4 = torch.log(torch.tensor(4.0)).item()
    assert losses.masked_cross_entropy(logits, target, mask).item() == pytest.approx(log4)
    assert losses.masked_cross_entropy(logits, target, mask, 1.0, 1.0).item() == pytest.approx(
        4 * torch.log(torch.tensor(4.0)).item())
    assert losses.segmentation_loss(logits, target).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_target_dice_counts_a_small_object_as_much_as_a_large_one():
    """Soft Dice of the target classes' probability: 0 when they are predicted exactly, the same for
    missing half of a 2-pixel person as half of a 32-pixel one (cross entropy scales with the pixels)."""
    def logits_for(labels: torch.Tensor) -> torch.Tensor:  # confident one-hot logits, 3 classes
        return 30 * torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()

    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, 0, :2] = 1  # a 2-pixel person
    target[1, :4] = 2  # a 32-pixel person of the second target class
    assert losses.target_dice_loss(logits_for(target), target, [1, 2]).item() == pytest.approx(0, abs=1e-6)
    half = target.clone()
    half[0, 0, 1] = 0
    half[1, :2] = 0
    per_image = [losses.target_dice_loss(logits_for(half[i:i + 1]), target[i:i + 1], [1, 2], smooth=0).item()
                 for i in range(2)]
    assert per_image == pytest.approx([1 / 3, 1 / 3], abs=1e-4)  # 1 - 2 * 1 / (1 + 2), 1 - 2 * 16 / (16 + 32)
    # no target pixels: the term is the share of the probability mass put on the targets
    empty = torch.zeros(1, 8, 8, dtype=torch.long)
    assert losses.target_dice_loss(logits_for(empty), empty, [1, 2]).item() == pytest.approx(0, abs=1e-6)
    assert losses.target_dice_loss(logits_for(empty + 1), empty, [1, 2]).item() == pytest.approx(64 / 65, abs=1e-4)


def test_vgg19_from_a_local_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="VGG-19 weights file not found: .*nope.pth"):
        load_vgg19(tmp_path / "nope.pth")
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in VGG19Features().features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the classifier is ignored
    torch.save(state, tmp_path / "vgg19.pth")
    vgg = load_vgg19(tmp_path / "vgg19.pth")
    feats = vgg(torch.rand(1, 3, 32, 32), PERCEPTUAL_LAYERS)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert not any(p.requires_grad for p in vgg.parameters())
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a VGG-19 state dict"):
        load_vgg19(tmp_path / "bad.pth")
