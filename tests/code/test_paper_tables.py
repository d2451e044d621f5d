"""The paper's tables and verdicts from plain reports (pipelines.paper_tables): margins by paired standard
error and by seed spread, the Markdown report beside the paper's numbers, the plots."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import paper_tables

BUCKETS = ["0-10", "10-20", "20-30", "30-40"]


def _inpainter_eval(offset_psnr: dict[str, float], noise: float = 0.1, n_per_bucket: int = 20, seed: int = 0) -> dict:
    """An inpainter evaluation report (stage evaluate_inpainter's shape) whose per-pair PSNR at each offset is
    the given mean plus noise shared by the pairs (the same pairs score alike at every offset)."""
    rng = np.random.default_rng(seed)
    buckets = [b for b in BUCKETS for _ in range(n_per_bucket)]
    base = rng.normal(0, 2, len(buckets))
    per_pair = {o: list(base + m + rng.normal(0, noise, len(buckets))) for o, m in offset_psnr.items()}
    table = {o: {b: {"psnr": float(np.mean([v for v, bb in zip(p, buckets, strict=True) if bb == b or b == "all"])),
                     "ssim": 0.9, "psnr_mask": 20.0, "n": n_per_bucket} for b in [*BUCKETS, "all"]}
             for o, p in per_pair.items()}
    return {"buckets": BUCKETS, "image_size": 64, "paper_image_size": 256,
            "offsets": {o: int(o) / 4 for o in offset_psnr}, "table1": table, "telea": table["0"],
            "per_pair": {"buckets": buckets, "psnr": per_pair}}


def test_paired_margin_counts_a_difference_only_beyond_twice_its_standard_error():
    a = np.linspace(20, 30, 50)
    assert paper_tables.paired(a + 0.5, a)["counts"]  # the same pairs, every one 0.5 dB better
    noisy = paper_tables.paired(a + np.random.default_rng(0).normal(0, 3, 50), a)
    assert not noisy["counts"] and abs(noisy["diff"]) < 2 * noisy["se"]
    assert paper_tables.paired([], [])["diff"] is None


def test_seed_spread_rule():
    a, b = paper_tables.over_seeds([25.0, 25.2, 25.4]), paper_tables.over_seeds([24.0, 24.1, 24.2])
    assert a == {"mean": 25.2, "sd": 0.2, "n": 3}
    assert paper_tables.seed_difference(a, b) == {"diff": 1.1, "spread": 0.2, "counts": True}
    close = paper_tables.over_seeds([24.9, 25.5, 25.0])
    assert not paper_tables.seed_difference(a, close)["counts"]  # 0.06 dB apart, sd 0.3: noise
    assert paper_tables.over_seeds([None, float("nan")])["mean"] is None


def test_table1_verdict_says_whether_erosion_costs_more_than_dilation():
    shaped = paper_tables.table1(_inpainter_eval({"-2": 25.0, "0": 30.0, "2": 29.6, "4": 29.2}))
    line = paper_tables.verdict_table1(shaped, [*BUCKETS, "all"])
    assert "holds in every bucket" in line and "2 of 2 steps" in line
    flipped = paper_tables.table1(_inpainter_eval({"-2": 29.9, "0": 30.0, "2": 28.0, "4": 28.5}))
    line = paper_tables.verdict_table1(flipped, [*BUCKETS, "all"])
    assert "holds in 0 of 5 buckets" in line and "1 of 2 steps" in line


def test_tables_2_and_3_compare_inpainters_on_the_same_pairs():
    obj, rnd = _inpainter_eval({"0": 30.0}, seed=0), _inpainter_eval({"0": 29.0}, seed=0)
    t2 = paper_tables.table2(obj, rnd)
    assert t2["against_random"]["object"]["all"]["diff"] == pytest.approx(1.0, abs=0.05)
    assert "holds in every bucket" in paper_tables.verdict_pairs(t2["against_random"]["object"], "o", "r",
                                                                  [*BUCKETS, "all"])
    other = _inpainter_eval({"0": 30.0}, n_per_bucket=10)
    with pytest.raises(ValueError, match="not on the same test pairs"):
        paper_tables.table2(other, rnd)
    t3 = paper_tables.table3(rnd, {"8 pairs": obj, "16 pairs": obj})
    assert set(t3["against_random"]) == {"8 pairs", "16 pairs"}


def _methods(shift: float, ssim: float = 0.9) -> dict:
    return {b: {"psnr": 25.0 + shift + i, "ssim": ssim} for i, b in enumerate([*BUCKETS, "all"])}


def test_tables_4_and_5_take_mean_and_sd_over_seeds_and_judge_by_the_spread():
    cells4 = {"0.01": {0: _methods(0.0), 1: _methods(0.2)}, "0.03": {0: _methods(1.0), 1: _methods(1.1)}}
    t4 = paper_tables.table4(cells4, BUCKETS)
    assert t4["best"] == "0.03" and t4["best_against"]["0.01"]["counts"]
    assert t4["rows"]["0.03"]["psnr"]["mean"] == pytest.approx(25.0 + 1.05 + 1.5)  # mean over the four buckets
    cells5 = {s: {"joint_mel": _methods(1.0 + 0.1 * s), "joint_no_mel": _methods(0.95 + 0.1 * s),
                  "oracle": _methods(3.0), "telea": _methods(-2.0)} for s in (0, 1, 2)}
    t5 = paper_tables.table5(cells5, BUCKETS)
    assert list(t5["rows"]) == ["joint_mel", "joint_no_mel", "telea", "oracle"]
    assert not t5["joint_mel_against"]["joint_no_mel"]["all"]["counts"]  # 0.05 dB, sd 0.1: within the spread
    assert t5["joint_mel_against"]["telea"]["all"]["counts"]
    assert t5["rows"]["oracle"]["psnr"]["all"]["sd"] == 0.0


def test_markdown_holds_every_table_beside_the_papers_numbers_with_verdicts(tmp_path):
    base = _inpainter_eval({"-2": 25.0, "0": 30.0, "2": 29.6, "4": 29.2, "6": 28.9, "8": 28.5})
    rnd = _inpainter_eval({"0": 29.0})
    cells = {s: {m: _methods(d + 0.05 * s) for m, d in (("joint_mel", 1.0), ("joint_no_mel", 0.5), ("pretrained", 0.2),
                                                         ("pretrained_dilate", 0.0), ("telea", -2.0),
                                                         ("navier_stokes", -2.1), ("oracle", 3.0))} for s in (0, 1)}
    tables = {"table1": paper_tables.table1(base), "table2": paper_tables.table2(base, rnd),
              "table3": paper_tables.table3(rnd, {"400 pairs": base, "2000 pairs": base}),
              "table4": paper_tables.table4({"0.01": {s: cells[s]["joint_no_mel"] for s in cells},
                                             "0.03": {s: cells[s]["joint_mel"] for s in cells}}, BUCKETS),
              "table5": paper_tables.table5(cells, BUCKETS)}
    meta = {"buckets": BUCKETS, "pairs": 80, "split": "test", "image_size": 64, "seeds": [0, 1],
            "table3_sizes": "400 / 2000", "baseline": "0123456789abcdef", "wall_time_min": 1.5, "experiments": 5,
            "ran": 5, "reused": 0}
    text = paper_tables.markdown(tables, meta)
    for title in ("Table I", "Table II", "Table III", "Table IV", "Table V"):
        assert f"## {title}" in text
    assert text.count("Verdict: ") == 8  # I, II, III, IV and joint_mel against four methods
    assert "[32.31]" in text and "[19.21]" in text and "[30.87]" in text and "[26.50]" in text  # the paper's
    assert "-2 -> -0.5 px" in text and "2 -> 0.5 px" in text
    assert "the best alpha here is 0.03" in text
    names = paper_tables.plots(tables, meta, tmp_path)
    assert names == ["table1.png", "table2_3.png", "table4.png", "table5.png"]
    assert all((tmp_path / n).stat().st_size > 5_000 for n in names)
