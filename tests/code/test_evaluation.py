"""Evaluation metrics and tables: over-expansion and leftover on hand-made masks, FID against torchmetrics,
LPIPS from local files, the per-bucket summary, plot rows and the Markdown report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from components.metrics import area_ratio, clean_removal, leftover_share, visible_change
from components.perceptual_metrics import LPIPS, frechet_distance, inception_features, load_inception, load_lpips
from pipelines.evaluation import (
    flat_metrics,
    markdown_report,
    morph,
    photo_scores,
    plot_rows,
    summarize,
    summarize_photos,
    table1_rows,
)


class TinyInception(nn.Module):
    """Stands in for the Inception TorchScript: uint8 (B, 3, H, W) -> (B, 6) features."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = images.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.flatten(2).std(dim=2)], dim=1)


def test_over_expansion_and_leftover():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1  # 16 pixels
    pred = torch.zeros(2, 1, 8, 8)
    pred[0, :, 1:7, 1:7] = 1  # covers it, 36 pixels
    pred[1, :, 2:6, 2:5] = 1  # misses a column of 4 object pixels
    assert area_ratio(pred, target).tolist() == pytest.approx([36 / 16, 12 / 16])
    share = leftover_share(pred, target > 0.5)
    assert share.tolist() == pytest.approx([0.0, 4 / 16])
    assert clean_removal(share, 0.25).tolist() == [1.0, 1.0]
    assert clean_removal(share, 0.2).tolist() == [1.0, 0.0]
    assert torch.isnan(leftover_share(pred, torch.zeros_like(target, dtype=torch.bool))).all()
    assert torch.isnan(area_ratio(pred, torch.zeros_like(target))).all()


def test_leftover_counts_only_visible_object_pixels():
    """A feathered edge one grey level off the background is not a leftover; a visible limb is. The true
    mask less its faintest pixel is still a clean removal, an eroded one is not."""
    background = torch.full((1, 3, 16, 16), 0.5)
    image = background.clone()
    image[..., 4:12, 4:12] = 0.9  # the object: 64 pixels, clearly visible
    image[..., 3, 4:12] = 0.5 + 1 / 255  # a feathered edge row: 8 pixels changed by one grey level
    true_mask = ((image - background).abs().amax(1, keepdim=True) > 0).float()  # M_G: every changed pixel
    visible = visible_change(image, background, 8 / 255)
    assert int(visible.sum()) == 64
    less_faintest = true_mask.clone()
    less_faintest[..., 3, 4] = 0
    eroded = morph(true_mask, -1)
    shares = leftover_share(torch.cat([true_mask, less_faintest, eroded]), visible.expand(3, -1, -1, -1))
    assert shares[0] == 0 and shares[1] == 0 and shares[2] > 0.2
    assert clean_removal(shares, 0.02).tolist() == [1.0, 1.0, 0.0]


def test_morph_dilates_and_erodes():
    mask = torch.zeros(1, 1, 15, 15)
    mask[..., 5:10, 5:10] = 1
    assert morph(mask, 2).sum() > mask.sum() > morph(mask, -1).sum()
    assert torch.equal(morph(mask, 0), mask)


def test_frechet_distance_matches_torchmetrics(tmp_path):
    torch.manual_seed(0)
    real = (torch.rand(64, 3, 16, 16) * 255).to(torch.uint8)
    fake = (torch.rand(64, 3, 16, 16) ** 2 * 255).to(torch.uint8)
    reference = FrechetInceptionDistance(feature=TinyInception(), normalize=False).double()
    reference.update(real, real=True)
    reference.update(fake, real=False)
    path = tmp_path / "inception.pt"
    torch.jit.script(TinyInception()).save(str(path))
    model = load_inception(path)
    features = {name: inception_features(model, x.float() / 255) for name, x in (("real", real), ("fake", fake))}
    ours = frechet_distance(features["fake"], features["real"])
    assert ours == pytest.approx(float(reference.compute()), rel=1e-4)
    same = inception_features(model, real.float() / 255)
    assert frechet_distance(same, same) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="FID Inception TorchScript file not found: .*nope.pt"):
        load_inception(tmp_path / "nope.pt")


def test_lpips_from_local_files(tmp_path):
    torch.manual_seed(0)
    source = LPIPS()
    torch.save({f"features.{k}": v for k, v in source.features.state_dict().items()}, tmp_path / "vgg16.pth")
    heads = {f"lin{k}.model.1.weight": torch.rand_like(lin.weight) for k, lin in enumerate(source.lins)}
    torch.save(heads, tmp_path / "vgg.pth")
    lpips = load_lpips(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.allclose(lpips(a, a), torch.zeros(2), atol=1e-6)
    assert (lpips(a, b) > 0).all() and torch.allclose(lpips(a, b), lpips(b, a))
    # by hand for the first layer alone: unit-normalized relu1_2 activations, weighted squared difference
    x = lambda img: ((img * 2 - 1) - lpips.shift) / lpips.scale  # noqa: E731
    fa, fb = lpips.features[:4](x(a)), lpips.features[:4](x(b))
    fa, fb = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10), fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    first = ((fa - fb) ** 2 * heads["lin0.model.1.weight"]).sum(1).mean(dim=(1, 2))
    assert torch.allclose(lpips.lins[0]((lpips._taps(a)[0] - lpips._taps(b)[0]) ** 2).mean(dim=(1, 2, 3)), first,
                          atol=1e-6)
    with pytest.raises(FileNotFoundError, match="LPIPS heads .* not found"):
        load_lpips(tmp_path / "vgg16.pth", tmp_path / "missing.pth")
    torch.save({"lin0.model.1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an LPIPS VGG heads file"):
        load_lpips(tmp_path / "vgg16.pth", tmp_path / "bad.pth")


def test_summary_plots_and_report():
    rows = [{"method": m, "pair": i, "bucket": b, "psnr": p, "ssim": 0.5, "psnr_mask": float("inf") if i == 0 else p,
             "iou": 0.5, "coverage": 1.0, "over_expansion": 1.0, "leftover_share": 0.1 * (i % 2),
             "clean": float(i % 2 == 0)}
            for m, base in (("joint_mel", 30.0), ("pretrained", 25.0))
            for i, (b, p) in enumerate([("0-10", base), ("0-10", base + 2), ("10-20", base - 1)])]
    table = summarize(rows, ("psnr", "psnr_mask", "clean"), "method", ["0-10", "10-20"])
    assert table["joint_mel"]["0-10"] == {"psnr": 31.0, "psnr_mask": 32.0, "clean": 0.5, "n": 2}
    assert table["pretrained"]["all"]["psnr"] == pytest.approx(np.mean([25, 27, 24]), abs=1e-4)
    metrics = {"split": "test", "pairs": 3, "image_size": 64, "buckets": ["0-10", "10-20"], "visible_threshold": 8,
               "clean_share": 0.02,
               "methods": summarize(rows, ("psnr", "ssim", "psnr_mask", "iou", "coverage", "over_expansion",
                                           "leftover_share", "clean"), "method", ["0-10", "10-20"]),
               "perceptual": {"lpips": "skipped: no files", "fid": "skipped: no file"}, "fid": None}
    by_bucket, clean = plot_rows(metrics)
    assert by_bucket[0] == {"mask_ratio_pct": 5.0, "joint_mel": 31.0, "pretrained": 26.0}
    assert clean[0] == {"mask_ratio_pct": 5.0, "joint_mel": 0.5, "pretrained": 0.5}
    table1 = {"-2": {"0-10": {"psnr": 20.0, "ssim": 0.7, "n": 2}, "all": {"psnr": 21.0, "ssim": 0.7}}}
    assert table1_rows(table1) == [{"offset_paper_px": -2.0, "psnr_0-10": 20.0, "psnr_all": 21.0}]
    report = markdown_report(metrics, "samples.png")
    assert "| joint_mel | 31.00 | 29.00 | 30.33 |" in report and "lpips: skipped: no files" in report
    assert "![samples](samples.png)" in report
    assert "Clean-removal rate (leftover share <= 0.02)" in report and "| joint_mel | 0.50 | 1.00 | 0.67 |" in report
    flat = flat_metrics({"methods": metrics["methods"]})
    assert flat["methods/joint_mel/0-10/psnr"] == 31.0 and all(isinstance(v, float) for v in flat.values())


def test_photo_scores_measure_targets_found_and_false_alarms():
    """Three photos at 8x8, target class 1: one holding a person half found, one person-free with a large
    false person, one person-free with a speck below the minimum area."""
    truth = torch.zeros(3, 8, 8, dtype=torch.long)
    truth[0, 0:4, 0:4] = 1  # 16 true person pixels
    labels = torch.zeros(3, 8, 8, dtype=torch.long)
    labels[0, 0:4, 0:2] = 1  # 8 of them found
    labels[0, 6:8, 6:8] = 1  # and 4 false ones: IoU 8 / 20
    labels[1, 2:6, 2:6] = 1  # a 16-pixel false person
    labels[2, 0, 0] = 1  # a 1-pixel speck
    probabilities = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    rows = photo_scores(probabilities, None, truth, [1], min_area=4)
    assert rows[0] == {"target_iou": pytest.approx(0.4), "false_alarm": None}
    assert rows[1] == {"target_iou": None, "false_alarm": 1.0}
    assert rows[2] == {"target_iou": None, "false_alarm": 0.0}
    summary = summarize_photos([{"method": "pretrained", "pair": i, **r} for i, r in enumerate(rows)])
    assert summary == {"pretrained": {"target_iou": 0.4, "with_target": 1, "false_alarm": 0.5, "without_target": 2}}
    metrics = {"split": "test", "pairs": 3, "image_size": 8, "buckets": ["0-10"], "visible_threshold": 8,
               "clean_share": 0.02, "methods": {}, "photos": summary, "perceptual": {}, "fid": None}
    assert "| pretrained | 0.400 | 1 | 0.500 | 2 |" in markdown_report(metrics, "samples.png")
