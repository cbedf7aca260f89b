"""texad.results.ablation: one method's ablation table against hand-computed means and ratios."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_aggregate import write_run

from texad.results import record as R
from texad.results.ablation import ablation_table, write_ablation_tables
from texad.results.aggregate import collect

# variant -> (nfe per image, images per second, image AUROC per (class, seed))
VARIANTS = {
    "default": (20, 10.0, {("carpet", 0): 0.90, ("carpet", 1): 0.94, ("wood", 0): 0.96, ("wood", 1): 0.92}),
    "K1_n5_s0.4": (5, 40.0, {("carpet", 0): 0.80, ("carpet", 1): 0.84, ("wood", 0): 0.86, ("wood", 1): 0.82}),
    "full_chain": (
        400,
        0.5,
        {("carpet", 0): 0.70, ("carpet", 1): 0.72, ("wood", 0): 0.74, ("wood", 1): 0.76},
    ),
}


@pytest.fixture()
def results(tmp_path):
    for variant, (nfe, ips, aurocs) in VARIANTS.items():
        for (cls, seed), auroc in aurocs.items():
            values = dict.fromkeys(("image_ap", "pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max"), 0.5)
            values["image_auroc"] = auroc
            timings = {"train_s": 1.0, "inference_s": 2.0, "images_per_s": ips, "nfe_per_image": nfe}
            path = write_run(tmp_path, "synthetic", cls, "method_a", variant, seed, values, timings)
            if variant in ("default", "full_chain"):  # the speed probe, as the workflow asks for these two
                result = R.read_result(path)
                result["extra"] = {"timing": {"s_per_image_at_batch": {"1": 1.0 / ips, "16": 0.5 / ips}}}
                R.write_result(path, result)
    # another method's runs are left out
    write_run(tmp_path, "synthetic", "carpet", "method_b", "default", 0, dict.fromkeys(
        ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max"), 0.99))  # fmt: skip
    return collect(tmp_path / "runs")


def test_rows_means_and_ratios_against_hand_computation(results):
    table = ablation_table(results, "method_a")
    assert list(table["variant"]) == ["default", "K1_n5_s0.4", "full_chain"]  # default first, reference last
    row = table.set_index("variant")
    assert row.loc["default", "image_auroc"] == pytest.approx(0.93)
    # std over seeds of the per-seed class mean: seed 0 (0.90 + 0.96) / 2 = 0.93, seed 1 0.93 -> 0
    assert row.loc["default", "image_auroc_std"] == pytest.approx(0.0, abs=1e-12)
    assert row.loc["full_chain", "image_auroc_std"] == pytest.approx(np.std([0.72, 0.74], ddof=1))
    assert row.loc["default", "s_per_image"] == pytest.approx(0.1)
    assert row.loc["default", "speedup"] == pytest.approx(2.0 / 0.1)  # 0.5 img/s vs 10 img/s
    assert row.loc["K1_n5_s0.4", "speedup"] == pytest.approx(80.0)
    assert row.loc["default", "nfe_ratio"] == pytest.approx(20.0)
    assert row.loc["full_chain", "speedup"] == pytest.approx(1.0)
    assert row.loc["default", "d_image_auroc"] == pytest.approx(0.93 - 0.73)
    assert row.loc["default", "s_per_image_b1"] == pytest.approx(0.1)
    assert row.loc["full_chain", "s_per_image_b16"] == pytest.approx(1.0)
    assert math.isnan(row.loc["K1_n5_s0.4", "s_per_image_b1"])  # not probed
    assert (table["n_runs"] == 4).all()


def test_without_the_reference_the_ratios_are_missing(results):
    table = ablation_table(results[results["variant"] != "full_chain"], "method_a")
    assert table["speedup"].isna().all() and table["d_image_auroc"].isna().all()
    with pytest.raises(ValueError, match="no results of method 'draem'"):
        ablation_table(results, "draem")


def test_written_files(results, tmp_path):
    paths = write_ablation_tables(results, "method_a", tmp_path / "tables")
    assert [p.name for p in paths] == [
        "ablation_method_a.csv",
        "ablation_method_a.md",
        "ablation_method_a.tex",
    ]
    back = pd.read_csv(paths[0])
    assert back.loc[back["variant"] == "K1_n5_s0.4", "nfe_ratio"].item() == pytest.approx(80.0)
    md = paths[1].read_text()
    assert "| default | 20 | 0.1 | 20.0x | 93.0 ± 0.0 | +20.0 |" in md
    assert "| full_chain | 400 | 2 | 1.0x | 73.0 ± 1.4 | +0.0 |" in md
    tex = paths[2].read_text()
    assert r"full\_chain" in tex and r"20.0$\times$" in tex and tex.count(r"\toprule") == 1


def test_a_default_run_also_counts_under_its_recorded_point(tmp_path):
    """Method B: the default w is per class, so carpet's default is wood's `w4` point; the `w4` row then covers
    both classes (carpet through its default run), and `default` stays the reference."""
    runs = {("carpet", "default", "w4"): 0.9, ("wood", "default", "w0"): 0.7, ("wood", "w4", None): 0.8,
            ("carpet", "w0", None): 0.6}  # fmt: skip
    _write_method_b(tmp_path, runs)
    row = ablation_table(collect(tmp_path / "runs"), "method_b").set_index("variant")
    assert list(row.index) == ["default", "w0", "w4"]
    assert row.loc["w4", "image_auroc"] == pytest.approx((0.9 + 0.8) / 2) and row.loc["w4", "n_runs"] == 2
    assert row.loc["w0", "image_auroc"] == pytest.approx((0.7 + 0.6) / 2)
    assert row.loc["default", "image_auroc"] == pytest.approx(0.8) and row.loc["default", "n_runs"] == 2
    assert row.loc["w4", "d_image_auroc"] == pytest.approx(0.05)


def test_a_point_that_some_classes_do_not_run_is_compared_on_the_classes_that_do(tmp_path):
    """Method B points are named by absolute settings: `w11_s0` runs on wood only (its default w is 11), so its
    Δ against the default is wood's own difference, not the difference with the mean over both classes."""
    runs = {
        ("carpet", "default", "w0_s0.5"): 0.6,
        ("wood", "default", "w11_s0.5"): 0.9,
        ("wood", "w11_s0", None): 0.8,
    }
    _write_method_b(tmp_path, runs)
    row = ablation_table(collect(tmp_path / "runs"), "method_b").set_index("variant")
    assert row.loc["w11_s0", "d_image_auroc"] == pytest.approx(0.8 - 0.9)  # not 0.8 - (0.6 + 0.9) / 2


def _write_method_b(tmp_path, runs: dict) -> None:
    """Method B runs {(class, variant, recorded ablation point or None): image AUROC}, seed 0."""
    values = dict.fromkeys(("image_ap", "pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max"), 0.5)
    for (cls, variant, point), auroc in runs.items():
        timings = {"train_s": 1.0, "inference_s": 1.0, "images_per_s": 10.0, "nfe_per_image": 20}
        path = write_run(tmp_path, "synthetic", cls, "method_b", variant, 0, {**values, "image_auroc": auroc},
                         timings)  # fmt: skip
        result = R.read_result(path)
        result["extra"] = {"ablation_point": point} if point else {}
        R.write_result(path, result)
