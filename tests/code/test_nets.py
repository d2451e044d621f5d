"""Shapes, value ranges and gradient flow of every network at tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.inpainters import LOGIT_EPS, Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from components.inpainting import InpaintingConfig, InpaintingDiscriminators, InpaintingNetworks, smooth_fill
from components.segmenter import Segmenter, SegmenterConfig, instances_from_labels

K = 5  # classes including 0


@pytest.fixture
def batch():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 10:22] = 1
    seg = torch.nn.functional.one_hot(torch.randint(0, K, (2, 32, 32)), K).permute(0, 3, 1, 2).float()
    edges = (torch.rand(2, 1, 32, 32) > 0.8).float()
    return image, edges, seg, mask


def test_segmenter_shapes():
    net = Segmenter(SegmenterConfig(K, width=8, depth=2))
    logits = net(torch.rand(3, 3, 32, 48))
    assert logits.shape == (3, K, 32, 48) and torch.isfinite(logits).all()


def test_segmenter_at_its_own_resolution_answers_at_the_inputs():
    """With image_size 16, a 32-px input is segmented at 16 px: the maps come back at 32 px, equal to
    the net run on the area-shrunk image and scaled up, offsets in the input's pixels (twice the 16-px ones)."""
    torch.manual_seed(0)
    net = Segmenter(SegmenterConfig(K, width=8, depth=2, offsets=True, image_size=16)).eval()
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, offsets = net.segment(image)
        small_logits, small_offsets = net.segment(torch.nn.functional.avg_pool2d(image, 2))
    assert logits.shape == (2, K, 32, 32) and offsets.shape == (2, 2, 32, 32)
    assert small_logits.shape == (2, K, 16, 16)  # an input at the working size is not resized
    up = torch.nn.functional.interpolate(small_logits, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, up)
    up = torch.nn.functional.interpolate(small_offsets, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(offsets, 2 * up)
    net(image).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.head.parameters())


@pytest.mark.parametrize(("head", "low", "high"), [("sigmoid", 0, 1), ("tanh01", 0, 1), ("logits", -np.inf, np.inf)])
def test_generator_heads(head, low, high):
    net = Generator(GeneratorConfig(4, 3, head, width=8, residual_blocks=2, dilation=2))
    out = net(torch.randn(2, 4, 32, 32) * 3)
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= low and out.max() <= high
    if head == "logits":
        assert out.min() < 0 < out.max()


def test_discriminator_is_patchgan_with_spectral_norm():
    net = Discriminator(DiscriminatorConfig(3, width=8))
    logits, features = net(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # 64 / 8 - 2
    assert len(features) == 5 and features[-1] is logits
    assert any("parametrizations.weight" in name for name, _ in net.named_parameters())


def test_inpainting_chain_outputs(batch):
    image, edges, seg, mask = batch
    nets = InpaintingNetworks(InpaintingConfig(K, width=8, residual_blocks=1, dilation=2, discriminator_width=8))
    r = nets(image, edges, seg, mask)
    assert r.edges.shape == (2, 1, 32, 32) and 0 <= r.edges.min() and r.edges.max() <= 1
    assert r.seg_logits.shape == (2, K, 32, 32)
    assert torch.allclose(r.seg_full.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    assert r.image.shape == (2, 3, 32, 32) and 0 <= r.image.min() and r.image.max() <= 1
    keep = mask == 0
    assert torch.equal(r.composite.masked_select(keep.expand_as(image)), image.masked_select(keep.expand_as(image)))
    assert torch.equal(r.edges_full * (1 - mask), edges * (1 - mask))
    discs = InpaintingDiscriminators(nets.config)
    assert discs.edge(torch.cat([r.edges, edges], 1))[0].shape[1] == 1
    assert discs.seg(r.seg_full)[0].shape[1] == 1


def test_gradients_reach_every_generator_parameter(batch):
    image, edges, seg, mask = batch
    nets = InpaintingNetworks(InpaintingConfig(K, width=8, residual_blocks=1, dilation=2, discriminator_width=8))
    r = nets(image, edges, seg, mask)
    (r.image.mean() + r.edges.mean() + r.seg_logits.pow(2).mean()).backward()
    missing = [n for n, p in nets.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_gradients_reach_the_mask(batch):
    """The mask enters by products only, so a soft mask from a segmenter gets gradients."""
    image, edges, seg, mask = batch
    nets = InpaintingNetworks(InpaintingConfig(K, width=8, residual_blocks=1, dilation=2, discriminator_width=8))
    soft = mask.clone().requires_grad_(True)
    nets(image, edges, seg, soft).composite.mean().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0


def test_segmenter_gradients():
    net = Segmenter(SegmenterConfig(K, width=8, depth=2))
    net(torch.rand(2, 3, 32, 32)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_instances_are_connected_components():
    labels = np.zeros((20, 20), np.int64)
    labels[2:6, 2:6] = 1
    labels[10:18, 10:18] = 1
    labels[0:3, 15:19] = 2
    found = instances_from_labels(labels, [1])
    assert [int(m.sum()) for _, m in found] == [64, 16]  # largest first
    assert all(cls == 1 for cls, _ in found)
    assert len(instances_from_labels(labels, [1, 2], min_area=13)) == 2


def test_smooth_fill_keeps_known_pixels_and_fills_from_around():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 21, 27)  # any size, odd too
    mask = torch.zeros(1, 1, 21, 27)
    mask[..., 5:15, 8:20] = 1
    filled = smooth_fill(image, mask)
    keep = (mask == 0).expand_as(image)
    assert torch.equal(filled[keep], image[keep])
    # a constant known region is filled with that constant; a left/right split stays split
    assert torch.allclose(smooth_fill(torch.full_like(image, 0.3), mask), torch.full_like(image, 0.3), atol=1e-6)
    halves = torch.zeros(1, 1, 32, 32)
    halves[..., 16:] = 1.0
    hole = torch.zeros(1, 1, 32, 32)
    hole[..., 8:24, 12:20] = 1
    out = smooth_fill(halves, hole)
    assert out[..., 8:24, 12].max() < 0.35 and out[..., 8:24, 19].min() > 0.65
    # differentiable in the values and in a soft mask
    soft = mask.clone().requires_grad_(True)
    values = image.clone().requires_grad_(True)
    smooth_fill(values, soft).sum().backward()
    assert values.grad.abs().sum() > 0 and soft.grad.abs().sum() > 0


def test_residual_head_starts_as_the_smooth_fill(batch):
    image, edges, seg, mask = batch
    config = InpaintingConfig(K, width=8, residual_blocks=1, dilation=2, discriminator_width=8,
                              hole_fill="smooth", image_head="residual01")
    nets = InpaintingNetworks(config)
    r = nets(image, edges, seg, mask)
    expected = smooth_fill(image, mask).clamp(LOGIT_EPS, 1 - LOGIT_EPS)
    assert torch.allclose(r.image, expected, atol=1e-5)  # zero-initialized correction
    with pytest.raises(ValueError, match="needs `base`"):
        nets.image(torch.rand(1, config.num_classes + 5, 32, 32))
