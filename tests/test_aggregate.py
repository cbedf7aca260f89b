"""Tests of texad.results.aggregate and texad.results.tables against hand-computed numbers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from texad.config.identity import settings_hash
from texad.config.schema import ConfigError
from texad.results import aggregate as A
from texad.results import record as R
from texad.results import tables as T

METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max")
DEVICE = {"type": "cpu", "name": "test cpu", "precision": "fp32"}

# (dataset, class) -> method -> seeds;  2 datasets, 3 + 2 classes, 2 methods, 1-3 seeds
LAYOUT = {
    ("mvtec_ad", "carpet"): {"method_a": [0, 1, 2], "simplenet": [0]},
    ("mvtec_ad", "grid"): {"method_a": [0, 1, 2], "simplenet": [0]},
    ("mvtec_ad", "leather"): {"method_a": [0, 1, 2], "simplenet": [0]},
    ("dtd_synthetic", "fine_weave"): {"method_a": [0, 1], "simplenet": [3]},
    ("dtd_synthetic", "woven_grid"): {"method_a": [0, 1], "simplenet": [3]},
}


def metrics_for(value: dict) -> dict:
    out = {m: value[m] for m in METRICS}
    out.update(pixel_f1_threshold=0.5, n_images=10, n_anomalous=6, grid=[32, 32])
    return out


def write_run(root: Path, dataset, cls, method, variant, seed, values: dict, timings=None) -> Path:
    result = R.build_result(
        run_name="agg",
        dataset=dataset,
        class_name=cls,
        method=method,
        variant=variant,
        seed=seed,
        metrics=metrics_for(values),
        evaluation={"resolution": 32, "fpr_limit": 0.3, "grid": [32, 32], "switches": {}},
        timings=timings or {"train_s": 2.0, "inference_s": 0.5, "images_per_s": 20.0, "nfe_per_image": None},
        device=DEVICE,
        config_hash=settings_hash([dataset, cls, method, variant]),
    )
    path = root / "runs" / dataset / cls / method / variant / f"seed{seed}.json"
    R.write_result(path, result)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Write the result JSONs; return (root, values) with values[(dataset, class, method, seed)][metric]."""
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(123)
    values = {}
    for (dataset, cls), methods in LAYOUT.items():
        for method, seeds in methods.items():
            for seed in seeds:
                v = {m: float(rng.uniform(0.5, 1.0)) for m in METRICS}
                values[(dataset, cls, method, seed)] = v
    # a cell with a known Markdown string: mean 0.975, std 0.012 -> "97.5 ± 1.2"
    for seed, x in zip([0, 1, 2], [0.963, 0.975, 0.987], strict=True):
        values[("mvtec_ad", "carpet", "method_a", seed)]["image_auroc"] = x
    # a single-seed cell: "88.2"
    values[("mvtec_ad", "grid", "simplenet", 0)]["image_auroc"] = 0.882
    for (dataset, cls, method, seed), v in values.items():
        write_run(root, dataset, cls, method, "default", seed, v)
    return root, values


def expected_cell(values, dataset, cls, method, metric):
    xs = np.array([v[metric] for (d, c, m, _s), v in values.items() if (d, c, m) == (dataset, cls, method)])
    std = float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan
    return float(np.mean(xs)), std, len(xs)


# ----------------------------------------------------------------------------------------------------
# collect
# ----------------------------------------------------------------------------------------------------
def test_collect_rows_and_columns(runs):
    root, values = runs
    df = A.collect([root])
    assert len(df) == len(values) == 3 * 4 + 2 * 3
    assert list(df.columns[:5]) == ["dataset", "class", "method", "variant", "seed"]
    for col in (*A.METRIC_COLUMNS, *A.TIMING_COLUMNS):
        assert col in df.columns
    for dataset, cls, method, seed, *got in df[["dataset", "class", "method", "seed", *METRICS]].itertuples(
        index=False, name=None
    ):
        assert got == [values[(dataset, cls, method, seed)][m] for m in METRICS]
    assert (df["train_s"] == 2.0).all() and df["nfe_per_image"].isna().all()
    assert set(df["resolution"]) == {"32"}
    # a single file and a list mixing files and folders work too; the same file twice counts once
    one = root / "runs" / "mvtec_ad" / "grid" / "simplenet" / "default" / "seed0.json"
    assert len(A.collect(one)) == 1
    assert len(A.collect([root / "runs" / "mvtec_ad", one])) == 3 * 4


def test_metric_table_matches_hand_computation(runs):
    root, values = runs
    df = A.collect(root)
    for metric in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap"):
        table = A.metric_table(df, metric)
        assert list(table.columns.get_level_values(0).unique()) == ["method_a", "simplenet"]
        assert table.index.tolist() == [
            ("dtd_synthetic", "fine_weave"), ("dtd_synthetic", "woven_grid"), ("dtd_synthetic", "mean"),
            ("mvtec_ad", "carpet"), ("mvtec_ad", "grid"), ("mvtec_ad", "leather"), ("mvtec_ad", "mean"),
        ]  # fmt: skip
        for (dataset, cls), methods in LAYOUT.items():
            for method in methods:
                mean, std, n = expected_cell(values, dataset, cls, method, metric)
                assert table.loc[(dataset, cls), (method, "mean")] == pytest.approx(mean, abs=1e-15)
                got_std = table.loc[(dataset, cls), (method, "std")]
                if n > 1:
                    assert got_std == pytest.approx(std, abs=1e-15)
                else:
                    assert math.isnan(got_std)
                assert table.loc[(dataset, cls), (method, "n")] == n

        # dataset mean row: mean over classes of the per-class means; std over seeds of the class average
        for dataset in ("mvtec_ad", "dtd_synthetic"):
            classes = [c for (d, c) in LAYOUT if d == dataset]
            for method in ("method_a", "simplenet"):
                per_class = [expected_cell(values, dataset, c, method, metric)[0] for c in classes]
                assert table.loc[(dataset, "mean"), (method, "mean")] == pytest.approx(
                    np.mean(per_class), abs=1e-15
                )
                seeds = LAYOUT[(dataset, classes[0])][method]
                assert table.loc[(dataset, "mean"), (method, "n")] == len(seeds)
                if len(seeds) > 1:
                    per_seed = [
                        np.mean([values[(dataset, c, method, s)][metric] for c in classes]) for s in seeds
                    ]
                    assert table.loc[(dataset, "mean"), (method, "std")] == pytest.approx(
                        np.std(per_seed, ddof=1), abs=1e-15
                    )
                else:
                    assert math.isnan(table.loc[(dataset, "mean"), (method, "std")])
        assert table.attrs["metric"] == metric and table.attrs["resolution"] == ["32"]


def test_markdown_cells(runs):
    root, values = runs
    table = A.metric_table(A.collect(root), "image_auroc")
    md = T.format_markdown(table)
    lines = md.splitlines()
    assert "Image AUROC (%)" in lines[0] and "32×32" in lines[0]
    assert lines[2] == "| Dataset | Class | method_a | simplenet |"
    assert lines[3] == "|:---|:---|---:|---:|"
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")[2:]]
            for line in lines[4:]}  # fmt: skip
    assert len(rows) == 7
    assert rows[("mvtec_ad", "carpet")][0] == "97.5 ± 1.2"
    assert rows[("mvtec_ad", "grid")][1] == "88.2"  # one seed: no std
    for (dataset, cls), methods in LAYOUT.items():
        for j, method in enumerate(methods):
            mean, std, n = expected_cell(values, dataset, cls, method, "image_auroc")
            want = f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"
            assert rows[(dataset, cls)][j] == want
    classes = [c for (d, c) in LAYOUT if d == "mvtec_ad"]
    mean = np.mean([expected_cell(values, "mvtec_ad", c, "method_a", "image_auroc")[0] for c in classes])
    assert rows[("mvtec_ad", "**mean**")][0].startswith(f"{100 * mean:.1f} ± ")


def test_write_tables_files_latex_and_csv_round_trip(runs, tmp_path):
    root, values = runs
    df = A.collect(root)
    out = tmp_path / "tables"
    written = A.write_tables(df, out)
    names = [p.name for p in written]
    assert names == [f"{m}{s}" for m in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap") for s in (".csv", ".md", ".tex")] + ["results.csv"]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files left

    tex = (out / "aupro.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llrr}"):
        assert rule in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"method\_a" in tex and r"mvtec\_ad" in tex and r"fine\_weave" in tex and r"dtd\_synthetic" in tex
    assert not re.search(r"(?<!\\)_", tex.replace(r"\label{tab:aupro}", "")), "unescaped underscore"
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption{"))
    assert "AUPRO" in caption and r"32$\times$32" in caption and r"(\%)" in caption
    assert r"$\pm$" in tex and "±" not in tex

    # <metric>.csv keeps full precision: it reproduces the table exactly
    for metric in ("image_auroc", "aupro"):
        table = A.metric_table(df, metric)
        csv = pd.read_csv(out / f"{metric}.csv", keep_default_na=False, na_values=[""])
        assert list(csv.columns) == [
            "dataset",
            "class",
            "column",
            "method",
            "variant",
            "mean",
            "std",
            "n",
            "low",
            "high",
        ]
        assert len(csv) == len(table.index) * 2
        for rec in csv.rename(columns={"class": "cls"}).itertuples(index=False):
            cls = rec.cls
            for stat in ("mean", "std"):
                want = table.loc[(rec.dataset, cls), (rec.column, stat)]
                got = getattr(rec, stat)
                assert (math.isnan(want) and math.isnan(got)) or got == want
            assert rec.n == table.loc[(rec.dataset, cls), (rec.column, "n")]
        mean, std, n = expected_cell(values, "mvtec_ad", "carpet", "method_a", metric)
        row = csv[(csv["class"] == "carpet") & (csv["method"] == "method_a")].iloc[0]
        assert row["mean"] == pytest.approx(mean, abs=1e-15) and row["std"] == pytest.approx(std, abs=1e-15)
        assert row["n"] == 3

    # results.csv is the long table, numbers unchanged
    back = pd.read_csv(out / "results.csv")
    assert len(back) == len(df)
    for col in (*METRICS, "seed", "train_s"):
        assert back[col].tolist() == df[col].tolist()
    assert back["class"].tolist() == df["class"].tolist()


# ----------------------------------------------------------------------------------------------------
# variants, missing values
# ----------------------------------------------------------------------------------------------------
def test_variants_and_missing_cells(tmp_path):
    base = {m: 0.8 for m in METRICS}
    write_run(tmp_path, "synthetic", "dots", "method_b", "default", 0, base)
    write_run(tmp_path, "synthetic", "dots", "method_b", "w4_s0.5", 0, {**base, "image_auroc": 0.6})
    write_run(tmp_path, "synthetic", "dots", "method_b", "w4_s0.5", 1, {**base, "image_auroc": 0.7})
    write_run(tmp_path, "synthetic", "lines", "method_b", "w4_s0.5", 0, {**base, "image_auroc": 0.9})
    write_run(tmp_path, "synthetic", "dots", "draem", "default", 0, base)
    write_run(tmp_path, "synthetic", "lines", "draem", "default", 0, {**base, "image_auroc": 0.7})
    no_value = dict(base, image_auroc=None)
    path = write_run(tmp_path, "synthetic", "lines", "draem", "default", 1, no_value)
    assert json.loads(path.read_text())["metrics"]["image_auroc"] is None

    df = A.collect(tmp_path)
    assert math.isnan(df.loc[(df["method"] == "draem") & (df["seed"] == 1), "image_auroc"].item())
    table = A.metric_table(df, "image_auroc")
    labels = list(table.columns.get_level_values(0).unique())
    assert labels == ["draem", "method_b/default", "method_b/w4_s0.5"]
    # the null seed is left out: mean and n over the seeds with a value
    assert table.loc[("synthetic", "lines"), ("draem", "mean")] == pytest.approx(0.7)
    assert table.loc[("synthetic", "lines"), ("draem", "n")] == 1
    # the seeds with a value are {0} in both classes: the mean row has n = 1 and no std
    assert table.loc[("synthetic", "mean"), ("draem", "mean")] == pytest.approx(0.75)
    assert table.loc[("synthetic", "mean"), ("draem", "n")] == 1
    assert math.isnan(table.loc[("synthetic", "mean"), ("draem", "std")])
    # classes with different seed sets ({0, 1} and {0}): mean of the class means, no std / n
    assert table.loc[("synthetic", "mean"), ("method_b/w4_s0.5", "mean")] == pytest.approx((0.65 + 0.9) / 2)
    assert pd.isna(table.loc[("synthetic", "mean"), ("method_b/w4_s0.5", "n")])
    assert math.isnan(table.loc[("synthetic", "mean"), ("method_b/w4_s0.5", "std")])
    # method_b/default has no "lines" run: its cell and its dataset mean are missing
    assert pd.isna(table.loc[("synthetic", "lines"), ("method_b/default", "mean")])
    assert pd.isna(table.loc[("synthetic", "mean"), ("method_b/default", "mean")])
    assert table.loc[("synthetic", "dots"), ("method_b/w4_s0.5", "mean")] == pytest.approx(0.65)

    md = T.format_markdown(table)
    assert "| synthetic | lines | 70.0 | n/a | 90.0 |" in md
    assert "| synthetic | **mean** | 75.0 | n/a | 77.5 |" in md
    assert "method_b/w4_s0.5" in md
    assert r"method\_b/w4\_s0.5" in T.format_latex(table)

    with pytest.raises(ValueError, match="unknown metric 'iou'"):
        A.metric_table(df, "iou")


def test_format_cell_and_escape():
    assert T.format_cell(0.975, 0.012, 3) == "97.5 ± 1.2"
    assert T.format_cell(0.975, math.nan, 1) == "97.5"
    assert T.format_cell(math.nan, math.nan, 0) == "n/a"
    assert T.format_cell(None) == "n/a"
    assert T.format_cell(12.345, 0.5, 2, percent=False) == "12.3 ± 0.5"
    assert T.latex_escape("a_b & 50% #1 {x} $y") == r"a\_b \& 50\% \#1 \{x\} \$y"


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------
def test_corrupt_json_is_an_error_naming_the_file(runs, tmp_path):
    root, _ = runs
    good = next(root.rglob("seed0.json"))
    results = tmp_path / "results"
    (results / "a").mkdir(parents=True)
    (results / "a" / "seed0.json").write_bytes(good.read_bytes())
    bad = results / "b" / "seed1.json"
    bad.parent.mkdir()
    bad.write_text('{"schema_version": 1, "metrics": ', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"result file {bad} is not valid JSON")):
        A.collect(results)


def test_invalid_result_and_duplicates_are_errors(runs, tmp_path):
    root, _ = runs
    good = next(root.rglob("seed0.json"))
    data = json.loads(good.read_text())
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "r.json").write_text(json.dumps(data))
    data["metrics"]["aupro"] = 7
    bad = tmp_path / "y" / "r.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        A.collect(tmp_path)
    assert str(bad) in str(info.value) and "metrics.aupro: 7 is out of range" in str(info.value)

    data["metrics"]["aupro"] = 0.7
    bad.write_text(json.dumps(data))  # now valid, but the same run as x/r.json
    with pytest.raises(ConfigError, match="repeats the run"):
        A.collect(tmp_path)

    with pytest.raises(ConfigError, match="does not exist"):
        A.collect(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no result JSON files"):
        A.collect(tmp_path / "empty")


def test_cli_aggregate_writes_every_table(runs, tmp_path):
    from texad import cli

    root, values = runs
    out = tmp_path / "tables"
    assert cli.main(["aggregate", "--results", str(root / "runs"), "--out-dir", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    for metric in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap"):
        assert {f"{metric}.csv", f"{metric}.md", f"{metric}.tex"} <= set(names)
    assert "97.5 ± 1.2" in (out / "image_auroc.md").read_text()
    assert cli.main(["aggregate", "--results", str(tmp_path / "nowhere"), "--out-dir", str(out)]) == 1
