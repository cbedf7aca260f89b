"""texad.results.paper_tables: reproduced beside published numbers, against hand computation."""

from __future__ import annotations

import argparse
import io
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_aggregate import write_run

from texad.config.schema import ConfigError
from texad.results import paper_tables as P
from texad.results import paper_tables_cli
from texad.results.aggregate import collect
from texad.results.published import load_published

ROOT = Path(__file__).resolve().parents[1]
REAL_PUBLISHED = ROOT / "workflow" / "report" / "published.yaml"
MVTEC = ("carpet", "grid", "leather", "tile", "wood")
METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max")

# (dataset, class) -> method -> seeds of the default variant
LAYOUT = {
    **{
        ("mvtec_ad", c): {"method_b": [0, 1], "simplenet": [0], "draem": [0, 1], "method_a": [0, 1]}
        for c in MVTEC
    },
    ("dtd_synthetic", "Mesh_114"): {"method_b": [0], "simplenet": [0]},
    ("synthetic", "woven"): {"method_b": [0], "method_a": [0]},
}
# Method A's T-scales ablation on two MVTec classes: variant -> (nfe per image, images per second)
ABLATION = {"K1_n5_s0.4": (5, 40.0), "full_chain": (400, 0.5)}

SOURCE = {"citation": "test source", "url": "https://example.org/paper", "table": "Table 1", "spec": "test"}
PUBLISHED = {
    "schema_version": 1,
    "sources": {k: dict(SOURCE) for k in ("amirian2024", "simplenet_paper", "draem_paper", "teng2022")},
    "entries": [
        {"source_id": "amirian2024", "dataset": "mvtec_ad", "class": "carpet", "method": "method_b",
         "metric": "image_auroc", "value": 99.2, "status": "published"},
        {"source_id": "amirian2024", "dataset": "mvtec_ad", "class": "carpet", "method": "method_b",
         "metric": "pixel_auroc", "value": 98.9, "status": "published"},
        {"source_id": "amirian2024", "dataset": "mvtec_ad", "class": "carpet", "method": "draem",
         "metric": "image_auroc", "value": 97.0, "status": "published"},
        {"source_id": "draem_paper", "dataset": "mvtec_ad", "class": "mean", "method": "draem",
         "metric": "image_auroc", "value": 99.1, "status": "unverified", "note": "not checked"},
        {"source_id": "simplenet_paper", "dataset": "mvtec_ad", "class": "mean", "method": "simplenet",
         "metric": "image_auroc", "value": None, "status": "not_found"},
        {"source_id": "simplenet_paper", "dataset": "dtd_synthetic", "class": "Mesh_114", "method": "simplenet",
         "metric": "image_auroc", "value": None, "status": "not_reported"},
        {"source_id": "teng2022", "dataset": "mvtec_ad", "class": "carpet", "method": "method_a",
         "metric": "image_auroc", "value": None, "status": "not_found"},
    ],
}  # fmt: skip


def _values(rng) -> dict:
    return {m: float(rng.uniform(0.6, 1.0)) for m in METRICS}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Result JSONs and a small published file; returns (root, values, df, pub, published path)."""
    root = tmp_path_factory.mktemp("paper")
    rng = np.random.default_rng(7)
    values = {}
    for (dataset, cls), methods in LAYOUT.items():
        for method, seeds in methods.items():
            for seed in seeds:
                values[(dataset, cls, method, "default", seed)] = v = _values(rng)
                timings = {"train_s": 1.0, "inference_s": 1.0, "images_per_s": 10.0, "nfe_per_image": 20}
                write_run(root, dataset, cls, method, "default", seed, v, timings)
    for variant, (nfe, ips) in ABLATION.items():
        for cls in ("carpet", "wood"):
            values[("mvtec_ad", cls, "method_a", variant, 0)] = v = _values(rng)
            timings = {"train_s": 1.0, "inference_s": 1.0, "images_per_s": ips, "nfe_per_image": nfe}
            write_run(root, "mvtec_ad", cls, "method_a", variant, 0, v, timings)
    path = root / "published.yaml"
    path.write_text(yaml.safe_dump(PUBLISHED, sort_keys=False), encoding="utf-8")
    return root, values, collect(root / "runs"), load_published(path), path


def expected(values, dataset, cls, method, metric, variant="default"):
    xs = [
        v[metric]
        for (d, c, m, var, _), v in values.items()
        if (d, c, m, var) == (dataset, cls, method, variant)
    ]
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan), len(xs)


def cell(long, dataset, cls, method, metric) -> pd.Series:
    hit = long[(long["dataset"] == dataset) & (long["class"] == cls) & (long["method"] == method)
               & (long["metric"] == metric)]  # fmt: skip
    assert len(hit) == 1
    return hit.iloc[0]


def md_row(text: str, *keys: str) -> list[str]:
    """The cells of the Markdown row whose leading cells are ``keys``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[: len(keys)] == list(keys):
            return cells
    raise AssertionError(f"no row {keys} in\n{text}")


def md_col(text: str, header: str, nth: int = 0) -> int:
    heads = md_row(text, "Dataset")
    return [i for i, h in enumerate(heads) if h == header][nth]


# ------------------------------------------------------------------------------------------- Table 1
def test_table1_reproduced_published_and_delta(data):
    _, values, df, pub, _ = data
    pt = P.method_b_table1(df, pub)
    long = pt.long
    for method in ("method_b", "simplenet", "draem"):
        for metric in ("image_auroc", "pixel_auroc"):
            mean, std, n = expected(values, "mvtec_ad", "carpet", method, metric)
            rec = cell(long, "mvtec_ad", "carpet", method, metric)
            assert rec["reproduced_mean"] == pytest.approx(mean)
            assert (math.isnan(std) and math.isnan(rec["reproduced_std"])) or rec[
                "reproduced_std"
            ] == pytest.approx(std)
            assert rec["n_seeds"] == n
    rec = cell(long, "mvtec_ad", "carpet", "method_b", "image_auroc")
    assert rec["published"] == pytest.approx(0.992) and rec["published_status"] == "published"
    assert rec["delta"] == pytest.approx(rec["reproduced_mean"] - 0.992)

    md = P.to_markdown(pt)
    row = md_row(md, "MVTec AD", "carpet")
    col = md_col(md, "Ours (Method B) · Image AUROC: Rep.")
    mean, std, _ = expected(values, "mvtec_ad", "carpet", "method_b", "image_auroc")
    assert row[col] == f"{100 * mean:.1f} ± {100 * std:.1f}"
    assert row[col + 1] == "99.2"
    assert row[col + 2] == f"{100 * (mean - 0.992):+.1f}"
    simplenet = md_row(md, "MVTec AD", "carpet")[md_col(md, "SimpleNet · Image AUROC: Rep.")]
    assert "±" not in simplenet  # one seed: no spread


def test_mean_row_is_the_mean_of_class_means(data):
    _, values, df, pub, _ = data
    long = P.method_b_table1(df, pub).long
    for method in ("method_b", "draem", "simplenet"):
        class_means = [expected(values, "mvtec_ad", c, method, "pixel_auroc")[0] for c in MVTEC]
        rec = cell(long, "mvtec_ad", "mean", method, "pixel_auroc")
        assert rec["reproduced_mean"] == pytest.approx(np.mean(class_means))
    # same seeds everywhere (0, 1): the mean row's std is the std over seeds of the per-seed class average
    per_seed = [
        np.mean([values[("mvtec_ad", c, "method_b", "default", s)]["pixel_auroc"] for c in MVTEC])
        for s in (0, 1)
    ]
    assert cell(long, "mvtec_ad", "mean", "method_b", "pixel_auroc")["reproduced_std"] == pytest.approx(
        np.std(per_seed, ddof=1)
    )


def test_marks_for_unverified_not_found_not_reported_and_other_sources(data):
    _, _, df, pub, _ = data
    pt = P.method_b_table1(df, pub)
    rec = cell(pt.long, "mvtec_ad", "mean", "draem", "image_auroc")
    assert (rec["published_source"], rec["published_status"]) == (
        "draem_paper",
        "unverified",
    )  # fallback source
    assert rec["published"] == pytest.approx(0.991)
    md = P.to_markdown(pt)
    row = md_row(md, "MVTec AD", "**mean**")
    assert re.fullmatch(r"99\.1† \[[a-z]\]", row[md_col(md, "DRAEM · Image AUROC: Rep.") + 1])
    assert row[md_col(md, "SimpleNet · Image AUROC: Rep.") + 1].startswith("n/a‡")
    mesh = md_row(md, "DTD-Synthetic", "Mesh_114")
    assert mesh[md_col(md, "SimpleNet · Image AUROC: Rep.") + 1].startswith("n/a§")
    for mark, word in (("†", "unverified"), ("‡", "not found"), ("§", "not reported")):
        assert re.search(rf"^- {mark} {word}", md, re.M)
    assert re.search(r"^- \[[a-z]\] draem_paper: https://example\.org/paper, Table 1", md, re.M)
    assert "[a] amirian2024 (untagged for SimpleNet, DRAEM, Ours (Method B))" in md
    tex = P.to_latex(pt)
    assert re.search(r"99\.1\$\^\{\\dagger,\\mathrm\{[a-z]\}\}\$", tex)  # one superscript for both marks
    assert r"n/a$^{\ddagger" in tex and r"n/a$^{\S" in tex and "$$" not in tex


def test_synthetic_has_no_published_numbers(data):
    _, _, df, pub, _ = data
    pt = P.method_b_table1(df, pub)
    syn = pt.long[pt.long["dataset"] == "synthetic"]
    assert set(syn["published_status"]) == {"no_entry"}
    assert syn["published"].isna().all() and syn["delta"].isna().all()
    md = P.to_markdown(pt)
    row = md_row(md, "synthetic", "woven")
    col = md_col(md, "Ours (Method B) · Image AUROC: Rep.")
    assert row[col + 1 : col + 3] == ["n/a", "n/a"]
    assert "n/a without a mark" in md
    # rows: MVTec AD first, then DTD-Synthetic, then the others; mean closes each dataset
    keys = list(dict.fromkeys(zip(pt.long["dataset"], pt.long["class"], strict=True)))
    assert keys[:6] == [("mvtec_ad", c) for c in MVTEC] + [("mvtec_ad", "mean")]
    assert keys[6:] == [("dtd_synthetic", "Mesh_114"), ("dtd_synthetic", "mean"), ("synthetic", "woven"),
                        ("synthetic", "mean")]  # fmt: skip


def test_a_mean_over_other_classes_is_not_compared(data):
    _, _, df, pub, _ = data
    pt = P.method_b_table1(df[df["class"] != "tile"], pub)
    rec = cell(pt.long, "mvtec_ad", "mean", "draem", "image_auroc")
    assert rec["published_status"] == "not_comparable" and math.isnan(rec["delta"])
    assert "tile" in rec["published_note"]
    assert "¶" in P.to_markdown(pt)


def test_latex_booktabs_and_escaping(data):
    _, _, df, pub, _ = data
    for build in (P.method_b_table1, P.method_a_tscales, P.extended_table):
        tex = P.to_latex(build(df, pub))
        for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table*}"):
            assert rule in tex
        body = "\n".join(line for line in tex.splitlines() if not line.startswith(("%", r"\label")))
        assert re.search(r"(?<!\\)_", body) is None, "an unescaped underscore"
    tex = P.to_latex(P.method_b_table1(df, pub))
    assert r"Mesh\_114" in tex and r"\multicolumn{6}{c}{Ours (Method B)}" in tex
    assert r"\textit{mean}" in tex


# ------------------------------------------------------------------------------------------- Method A
def test_method_a_main_table(data):
    _, values, df, pub, _ = data
    pt = P.method_a_main(df, pub)
    assert set(pt.long["variant"]) == {"default"} and set(pt.long["metric"]) == {
        "image_auroc",
        "pixel_auroc",
        "aupro",
    }
    mean, _, n = expected(values, "mvtec_ad", "wood", "method_a", "aupro")
    rec = cell(pt.long, "mvtec_ad", "wood", "method_a", "aupro")
    assert rec["reproduced_mean"] == pytest.approx(mean) and rec["n_seeds"] == n
    assert cell(pt.long, "mvtec_ad", "carpet", "method_a", "image_auroc")["published_status"] == "not_found"
    md = P.to_markdown(pt)
    assert md_row(md, "MVTec AD", "carpet")[md_col(md, "Image AUROC: Rep.") + 1] == "n/a‡"


def test_tscales_table_rows_costs_and_scores(data):
    _, values, df, pub, _ = data
    pt = P.method_a_tscales(df, pub)
    long = pt.long[pt.long["metric"] == "image_auroc"]
    assert list(long["variant"]) == ["default", "K1_n5_s0.4", "full_chain", "default"]
    assert list(long["dataset"]) == ["mvtec_ad"] * 3 + ["synthetic"]
    k1 = long.iloc[1]
    assert (k1["n_scales"], k1["steps_per_scale"], k1["sigma_hi"]) == (1, 5, 0.4)
    assert k1["nfe_per_image"] == 5 and k1["speedup"] == pytest.approx(80.0)  # 0.5 img/s vs 40 img/s
    assert math.isnan(long.iloc[2]["n_scales"]) and long.iloc[2]["speedup"] == pytest.approx(1.0)
    xs = [values[("mvtec_ad", c, "method_a", "K1_n5_s0.4", 0)]["image_auroc"] for c in ("carpet", "wood")]
    assert k1["reproduced_mean"] == pytest.approx(np.mean(xs))
    default = long.iloc[0]
    all_default = [expected(values, "mvtec_ad", c, "method_a", "image_auroc")[0] for c in MVTEC]
    assert default["reproduced_mean"] == pytest.approx(np.mean(all_default)) and default["n_seeds"] == 2
    assert set(pt.long["published_status"]) == {"no_entry"}  # published.yaml holds no ablation numbers
    md = P.to_markdown(pt)
    row = md_row(md, "MVTec AD", "K1_n5_s0.4")
    assert row[2:8] == ["1", "5", "0.4", "5", "0.025", "80.0x"]


def test_extended_table_all_methods(data):
    _, values, df, pub, _ = data
    pt = P.extended_table(df, pub)
    assert list(dict.fromkeys(pt.long["method"])) == ["method_a", "method_b", "simplenet", "draem"]
    assert set(pt.long["metric"]) == {"image_auroc", "pixel_auroc", "aupro", "pixel_ap"}
    mean, _, _ = expected(values, "dtd_synthetic", "Mesh_114", "simplenet", "pixel_ap")
    assert cell(pt.long, "dtd_synthetic", "Mesh_114", "simplenet", "pixel_ap")[
        "reproduced_mean"
    ] == pytest.approx(mean)
    # extended prefers a method's own paper: the DRAEM mean is draem_paper's, untagged there
    md = P.to_markdown(pt)
    row = md_row(md, "MVTec AD", "**mean**", "DRAEM")
    assert row[md_col(md, "Image AUROC: Rep.") + 1] == "99.1†"
    # a method neither run nor published on a dataset gets no rows there (Method A and DRAEM on DTD-Synthetic)
    dtd = pt.long[pt.long["dataset"] == "dtd_synthetic"]
    assert set(dtd["method"]) == {"method_b", "simplenet"} and dtd["reproduced_mean"].notna().all()


# ------------------------------------------------------------------------------------------- files and CLI
def parser():
    p = argparse.ArgumentParser(prog="texad")
    paper_tables_cli.add_parsers(p.add_subparsers(dest="command"))
    return p


def test_cli_writes_every_table_and_csv_round_trips(data, tmp_path, capsys):
    root, _, df, pub, published = data
    out = tmp_path / "tables"
    args = parser().parse_args(
        [
            "paper-tables",
            "--results",
            str(root / "runs"),
            "--published",
            str(published),
            "--out-dir",
            str(out),
        ]
    )
    assert args.func(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{t}{s}" for t in P.TABLES for s in (".csv", ".md", ".tex")
    )
    assert paper_tables_cli._TABLES == P.TABLES
    for name in P.TABLES:
        back = pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""])
        built = P.BUILDERS[name](df, pub).long
        assert list(back.columns)[: len(P.CSV_COLUMNS)] == list(P.CSV_COLUMNS)
        for col in ("reproduced_mean", "reproduced_std", "published", "delta"):
            np.testing.assert_array_equal(back[col].to_numpy(float), built[col].to_numpy(float))
        assert list(back["published_status"]) == list(built["published_status"])
        assert list(back["class"]) == list(built["class"])
    assert str(out / "extended.md") in capsys.readouterr().out


def test_cli_skips_a_table_without_results_and_fails_with_none(data, tmp_path, capsys):
    _, values, _, _, published = data
    only = tmp_path / "only"
    write_run(
        only,
        "synthetic",
        "woven",
        "simplenet",
        "default",
        0,
        values[("synthetic", "woven", "method_b", "default", 0)],
    )
    args = parser().parse_args(["paper-tables", "--results", str(only), "--published", str(published),
                                "--out-dir", str(tmp_path / "out")])  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "skipped paper_method_a_main" in printed and "skipped paper_method_b_table1" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "extended.csv",
        "extended.md",
        "extended.tex",
    ]
    args = parser().parse_args(["paper-tables", "--results", str(only), "--published", str(published),
                                "--out-dir", str(tmp_path / "x"), "--tables", "paper_method_a_main"])  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(str(only))):
        args.func(args)
    with pytest.raises(ValueError, match="unknown paper table"):
        P.build_paper_tables(pd.DataFrame(), pd.DataFrame(), ["table9"])


def test_bad_inputs_name_the_file(data, tmp_path):
    root, _, _, _, published = data
    missing = tmp_path / "nope.yaml"
    args = parser().parse_args(["paper-tables", "--results", str(root / "runs"), "--published", str(missing),
                                "--out-dir", str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        args.func(args)
    bad = tmp_path / "runs" / "bad.json"
    bad.parent.mkdir()
    bad.write_text('{"schema_version": 1, "metrics": ', encoding="utf-8")
    args = parser().parse_args(["paper-tables", "--results", str(bad.parent), "--published", str(published),
                                "--out-dir", str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        args.func(args)


def test_real_published_file_fills_method_b_table(data):
    _, values, df, _, _ = data
    raw = yaml.safe_load(REAL_PUBLISHED.read_text(encoding="utf-8"))
    (entry,) = [e for e in raw["entries"] if (e["source_id"], e["dataset"], e["class"], e["method"], e["metric"])
                == ("amirian2024", "mvtec_ad", "carpet", "method_b", "image_auroc")]  # fmt: skip
    pt = P.method_b_table1(df, load_published(REAL_PUBLISHED))
    rec = cell(pt.long, "mvtec_ad", "carpet", "method_b", "image_auroc")
    assert rec["published"] == pytest.approx(entry["value"] / 100)
    md = P.to_markdown(pt)
    col = md_col(md, "Ours (Method B) · Image AUROC: Rep.")
    row = md_row(md, "MVTec AD", "carpet")
    assert row[col + 1] == f"{entry['value']:.1f}"
    mean = expected(values, "mvtec_ad", "carpet", "method_b", "image_auroc")[0]
    assert row[col + 2] == f"{100 * mean - entry['value']:+.1f}"
    csv = pd.read_csv(io.StringIO(P.to_csv(pt)))
    assert set(csv["published_source"].dropna()) <= {"amirian2024", "simplenet_paper", "draem_paper"}


# ------------------------------------------------------------------------------------------- official variants
def test_official_rows_beside_the_fair_default_with_their_protocol(data, tmp_path):
    """Official runs (seed 0) of SimpleNet, DRAEM and Method B appear beside each default, labelled with the
    protocol they used, against the same published number; Method A has no official variant."""
    root, values, _, pub, _ = data
    rng = np.random.default_rng(11)
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs", runs)
    official = {}
    for cls in MVTEC:
        for method in ("simplenet", "draem", "method_b"):
            official[(cls, method)] = v = _values(rng)
            write_run(tmp_path, "mvtec_ad", cls, method, "official", 0, v)
    df = collect(runs)
    pt = P.method_b_table1(df, pub)
    long = pt.long
    assert pt.layout.group_keys == ("method", "protocol", "metric") and pt.layout.note == P.PROTOCOL_NOTE
    hit = long[
        (long["class"] == "carpet") & (long["method"] == "method_b") & (long["metric"] == "image_auroc")
    ]
    assert list(hit["variant"]) == ["default", "official"]
    assert list(hit["protocol"]) == [P.FAIR_PROTOCOL, P.OFFICIAL_PROTOCOLS["method_b"]]
    assert "224 crop of 256" in hit["protocol"].iloc[1]
    off = hit.iloc[1]
    assert off["reproduced_mean"] == pytest.approx(official[("carpet", "method_b")]["image_auroc"])
    assert off["n_seeds"] == 1 and off["published"] == pytest.approx(0.992)  # the same published number
    assert off["delta"] == pytest.approx(off["reproduced_mean"] - 0.992)
    assert hit.iloc[0]["reproduced_mean"] == pytest.approx(expected(values, "mvtec_ad", "carpet", "method_b",
                                                                     "image_auroc")[0])  # fmt: skip
    md = P.to_markdown(pt)
    col = md_col(md, f"Ours (Method B) · {P.OFFICIAL_PROTOCOLS['method_b']} · Image AUROC: Rep.")
    mean = np.mean([official[(c, "method_b")]["image_auroc"] for c in MVTEC])
    assert md_row(md, "MVTec AD", "**mean**")[col] == f"{100 * mean:.1f}"
    assert md_col(md, f"SimpleNet · {P.OFFICIAL_PROTOCOLS['simplenet']} · Image AUROC: Rep.")
    assert "best test epoch, 288 crop" in P.OFFICIAL_PROTOCOLS["simplenet"]
    assert md_col(md, "SimpleNet · fair (texad protocol) · Image AUROC: Rep.")
    # no official runs on DTD-Synthetic: its official cells are n/a, the default's are there
    mesh = md_row(md, "DTD-Synthetic", "Mesh_114")
    assert mesh[md_col(md, f"SimpleNet · {P.OFFICIAL_PROTOCOLS['simplenet']} · Image AUROC: Rep.")] == "n/a"
    # the extended table: one row per method and protocol; an official row only where it ran
    ext = P.extended_table(df, pub)
    assert ext.layout.row_keys == ("dataset", "class", "method", "protocol")
    md = P.to_markdown(ext)
    assert md_row(md, "MVTec AD", "carpet", "DRAEM", P.OFFICIAL_PROTOCOLS["draem"])
    assert md_row(md, "MVTec AD", "carpet", "Method A", P.FAIR_PROTOCOL)
    assert set(ext.long.loc[ext.long["variant"] == "official", "dataset"]) == {"mvtec_ad"}
    assert set(ext.long.loc[ext.long["variant"] == "official", "method"]) == {
        "simplenet",
        "draem",
        "method_b",
    }
    # the CSV names each number's protocol
    back = pd.read_csv(io.StringIO(P.to_csv(pt)))
    assert set(back.loc[back["variant"] == "official", "protocol"]) == {
        P.OFFICIAL_PROTOCOLS[m] for m in ("simplenet", "draem", "method_b")
    }


def test_without_official_runs_the_tables_keep_their_layout(data):
    _, _, df, pub, _ = data
    assert P.method_b_table1(df, pub).layout.group_keys == ("method", "metric")
    assert P.extended_table(df, pub).layout.row_keys == ("dataset", "class", "method")
    assert set(P.method_b_table1(df, pub).long["protocol"]) == {P.FAIR_PROTOCOL}
