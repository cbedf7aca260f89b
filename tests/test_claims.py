"""Confidence intervals, paired comparisons and the claims table, from runs written as the workflow writes them:
``texad bootstrap`` per class, intervals in every table, and verdicts that follow from each row's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from texad.cli import main
from texad.config import ConfigError, settings_hash, validate_config
from texad.evaluation.class_bootstrap import BootstrapSettings, class_seed
from texad.evaluation.metrics import evaluate
from texad.evaluation.uncertainty import delong
from texad.methods.run import save_maps
from texad.results.aggregate import collect, write_tables
from texad.results.claims import VERDICTS, evaluate_claims, load_claims, verdict
from texad.results.intervals import Bootstraps, interval_table
from texad.results.paper_tables import build_paper_tables, to_latex, to_markdown
from texad.results.published import load_published, load_sources
from texad.results.record import build_result, write_result

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "workflow" / "report" / "published.yaml"
CLAIMS = REPO / "workflow" / "report" / "claims.yaml"
GRID = 16
SETTINGS = BootstrapSettings(resamples=400, level=0.95, seed=0)


def _test_set(seed: int, n_normal: int = 12, n_anomalous: int = 12):
    """Labels and masks of one class's test set: a 4x4 defect per anomalous image."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * n_normal + [1] * n_anomalous)
    masks = np.zeros((labels.size, GRID, GRID), bool)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, GRID - 4, 2)
        masks[i, r : r + 4, c : c + 4] = True
    return labels, masks


def _maps(masks: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Noise plus ``strength`` on the defects: larger strength, better detection."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, masks.shape) + strength * masks


def _write(root: Path, dataset: str, cls: str, method: str, variant: str, seed: int, labels, masks, maps,
           point: str | None = None, nfe: float | None = None) -> tuple[Path, Path]:  # fmt: skip
    """A run's result JSON (metrics computed from its maps, as a run does) and maps file, in the workflow layout."""
    maps = maps.astype(np.float32)  # as the runs store them
    scores = maps.reshape(len(labels), -1).max(axis=1)
    rel = Path(dataset) / cls / method / variant / f"seed{seed}"
    result_path, maps_path = root / "runs" / rel.with_suffix(".json"), root / "maps" / rel.with_suffix(".npz")
    save_maps(maps_path, maps=maps, scores=scores, labels=labels, masks=masks,
              paths=np.array([f"{cls}/img{i}.png" for i in range(len(labels))]))  # fmt: skip
    metrics = evaluate(scores, maps, masks, labels=labels, fpr_limit=0.3)
    metrics.update(n_images=len(labels), n_anomalous=int(labels.sum()), grid=[GRID, GRID])
    result = build_result(
        run_name="unit", dataset=dataset, class_name=cls, method=method, variant=variant, seed=seed,
        metrics=metrics, evaluation={"resolution": GRID, "fpr_limit": 0.3, "grid": [GRID, GRID], "switches": {}},
        timings={"train_s": 1.0, "inference_s": 1.0, "images_per_s": 1.0, "nfe_per_image": nfe},
        device={"type": "cpu", "name": "test cpu", "precision": "fp32"}, config_hash=settings_hash({"c": 1}),
        backbone=None, model_hash=settings_hash({"m": method}),
        extra={"ablation_point": point} if point else {},
    )  # fmt: skip
    write_result(result_path, result)
    return result_path, maps_path


def _bootstrap(root: Path, runs: list[tuple[Path, Path]], out: Path, settings=SETTINGS, capsys=None) -> Path:
    """``texad bootstrap`` as the workflow runs it."""
    block = json.dumps({"evaluation": {"bootstrap": {"resamples": settings.resamples, "level": settings.level,
                                                     "seed": settings.seed}}})  # fmt: skip
    argv = ["bootstrap", "--results", *[str(r) for r, _ in runs], "--maps", *[str(m) for _, m in runs],
            "--settings", block, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


# ------------------------------------------------------------------------------------------- settings, files
def test_settings_come_from_the_schema_and_stay_out_of_the_runs():
    from texad.plan import Plan

    config = validate_config({}, partial=True)
    assert BootstrapSettings.from_config(config) == BootstrapSettings(resamples=1000, level=0.95, seed=0)
    with pytest.raises(ConfigError, match=r"evaluation\.bootstrap\.resamples"):
        validate_config({"evaluation": {"bootstrap": {"resamples": 10}}}, partial=True)
    with pytest.raises(ConfigError, match=r"evaluation\.bootstrap\.level"):
        validate_config({"evaluation": {"bootstrap": {"level": 1}}}, partial=True)
    # changing the intervals reruns no run: the runs' settings do not hold them
    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    base = Plan(validate_config(raw))
    other = Plan(
        validate_config(
            {**raw, "evaluation": {**raw["evaluation"], "bootstrap": {"resamples": 200, "seed": 4}}}
        )
    )
    cls = base.classes("synthetic")[0]
    assert base.run_settings("simplenet", cls, "default") == other.run_settings("simplenet", cls, "default")
    assert other.bootstrap_settings() == {
        "evaluation": {"bootstrap": {"resamples": 200, "level": 0.95, "seed": 4}}
    }
    assert class_seed(0, "synthetic", "wood") != class_seed(0, "synthetic", "carpet")


def test_a_class_file_holds_each_runs_exact_estimate_and_its_resamples(tmp_path, capsys):
    labels, masks = _test_set(0)
    runs = [
        _write(tmp_path, "synthetic", "wood", "method_b", "default", s, labels, masks, _maps(masks, 1.5, s))
        for s in (0, 1)
    ]
    runs.append(
        _write(tmp_path, "synthetic", "wood", "simplenet", "default", 0, labels, masks, _maps(masks, 0.5, 9))
    )
    out = _bootstrap(tmp_path, runs, tmp_path / "wood.npz")
    assert "3 runs x 400 resamples of 24 test images" in capsys.readouterr().out
    with np.load(out) as z:
        assert list(z["method"]) == ["method_b", "method_b", "simplenet"] and list(z["seed_of_run"]) == [
            0,
            1,
            0,
        ]
        assert z["replicates"].shape == (3, 400, 4) and z["scores"].shape == (3, 24)
        # the estimates are the result JSONs' own; binning shifts the pixel metrics by little
        first = json.loads(runs[0][0].read_text())["metrics"]
        assert z["estimate"][0].tolist() == [
            first[m] for m in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
        ]
        assert (
            np.abs(z["binning_shift"][:, 1:]).max() < 1e-3 and np.abs(z["binning_shift"][:, 0]).max() < 1e-12
        )
    boot = Bootstraps([out])
    e = boot.estimate("synthetic", "wood", "method_b", "default", "pixel_auroc")
    r0, r1 = (json.loads(r.read_text())["metrics"]["pixel_auroc"] for r, _ in runs[:2])
    assert e.value == pytest.approx((r0 + r1) / 2, abs=1e-15) and e.seeds == (0, 1)  # seed-pooled
    assert e.low < e.value < e.high


def test_runs_on_other_test_images_are_refused_by_name(tmp_path, capsys):
    labels, masks = _test_set(0)
    a = _write(tmp_path, "synthetic", "wood", "method_b", "default", 0, labels, masks, _maps(masks, 1.0, 0))
    labels2, masks2 = _test_set(1, n_normal=10)
    b = _write(
        tmp_path, "synthetic", "wood", "simplenet", "default", 0, labels2, masks2, _maps(masks2, 1.0, 1)
    )
    assert main(["bootstrap", "--results", str(a[0]), str(b[0]), "--maps", str(a[1]), str(b[1]),
                 "--settings", "{}", "--out", str(tmp_path / "x.npz")]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert (
        "simplenet/default/seed0.json scored other test images" in err and not (tmp_path / "x.npz").exists()
    )


def test_perfect_separation_and_identical_runs_give_degenerate_intervals(tmp_path):
    labels, masks = _test_set(2)
    perfect = _maps(masks, 0.0, 3) * 0.1 + 10.0 * masks  # every defect pixel above every normal pixel
    a = _write(tmp_path, "synthetic", "wood", "method_b", "default", 0, labels, masks, perfect)
    b = _write(tmp_path, "synthetic", "wood", "simplenet", "default", 0, labels, masks, perfect)
    boot = Bootstraps([_bootstrap(tmp_path, [a, b], tmp_path / "wood.npz")])
    for metric in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap"):
        e = boot.estimate("synthetic", "wood", "method_b", "default", metric)
        # pixel resamples are binned (1000 quantile bins, a bin may hold pixels of both sides): within 1e-3 of 1,
        # never above it
        assert e.value == 1.0 and 1.0 - 1e-3 <= e.low <= e.high <= 1.0, (metric, e)
        d = boot.difference("synthetic", ["wood"], ("method_b", "default"), ("simplenet", "default"), metric)
        assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0), metric  # identical maps: exactly zero
    assert d.delong is None
    d = boot.difference(
        "synthetic", ["wood"], ("method_b", "default"), ("simplenet", "default"), "image_auroc"
    )
    assert (d.delong.value, d.delong.low, d.delong.high, d.delong.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_the_paired_bootstrap_agrees_with_delong(tmp_path):
    """On one class of 80 + 80 images, the paired bootstrap interval of an image-AUROC difference and DeLong's
    normal-theory interval agree within a few thousandths, and the bootstrap's std matches DeLong's."""
    labels, masks = _test_set(4, 80, 80)
    a = _write(tmp_path, "synthetic", "wood", "method_b", "default", 0, labels, masks, _maps(masks, 0.9, 5))
    b = _write(tmp_path, "synthetic", "wood", "draem", "default", 0, labels, masks, _maps(masks, 0.6, 6))
    settings = BootstrapSettings(resamples=4000, level=0.95, seed=1)
    boot = Bootstraps([_bootstrap(tmp_path, [a, b], tmp_path / "wood.npz", settings)])
    d = boot.difference("synthetic", ["wood"], ("method_b", "default"), ("draem", "default"), "image_auroc")
    assert d.delong.value == pytest.approx(d.value, abs=1e-12)
    assert d.low == pytest.approx(d.delong.low, abs=0.012) and d.high == pytest.approx(
        d.delong.high, abs=0.012
    )
    cb = boot.classes[("synthetic", "wood")]
    spread = (cb.replicates[0, :, 0] - cb.replicates[1, :, 0]).std()
    var = delong(cb.scores[0], cb.labels, cb.scores[1])["variance"]
    assert spread == pytest.approx(math.sqrt(var), rel=0.08)


def test_delong_averages_seeds_by_their_placements():
    """Scores of two seeds: DeLong's AUROC is the mean of the seeds' AUROCs, and two equal seeds change nothing."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 15 + [1] * 15)
    s1, s2 = rng.normal(size=30) + labels, rng.normal(size=30) + labels
    one, two = delong(s1, labels), delong(np.stack([s1, s2]), labels)
    assert two["auroc"] == pytest.approx((one["auroc"] + delong(s2, labels)["auroc"]) / 2)
    same = delong(np.stack([s1, s1]), labels)
    assert same["auroc"] == pytest.approx(one["auroc"]) and same["variance"] == pytest.approx(one["variance"])


def test_a_dataset_mean_averages_independent_classes(tmp_path):
    files = []
    for k, cls in enumerate(("carpet", "wood")):
        labels, masks = _test_set(10 + k)
        run = _write(
            tmp_path, "synthetic", cls, "method_b", "default", 0, labels, masks, _maps(masks, 1.0 + k, k)
        )
        files.append(_bootstrap(tmp_path, [run], tmp_path / f"{cls}.npz"))
    boot = Bootstraps(files)
    per_class = [boot.estimate("synthetic", c, "method_b", "default", "aupro") for c in ("carpet", "wood")]
    mean = boot.estimate("synthetic", "mean", "method_b", "default", "aupro")
    assert mean.value == pytest.approx((per_class[0].value + per_class[1].value) / 2)
    # independent classes: the mean's interval is narrower than the wider class's
    assert mean.high - mean.low < max(e.high - e.low for e in per_class)
    table = interval_table(boot)
    assert set(table["class"]) == {"carpet", "wood", "mean"} and (table["low"] <= table["estimate"]).all()


# ------------------------------------------------------------------------------------------- tables
def _paper_class(root: Path, cls: str, strengths: dict, seed: int) -> Path:
    labels, masks = _test_set(seed)
    runs = [_write(root, "mvtec_ad", cls, m, "default", 0, labels, masks, _maps(masks, s, seed + i))
            for i, (m, s) in enumerate(strengths.items())]  # fmt: skip
    return _bootstrap(root, runs, root / "uncertainty" / f"{cls}.npz")


def test_every_table_cell_shows_its_interval(tmp_path):
    files = [_paper_class(tmp_path, c, {"method_b": 1.2, "simplenet": 0.8, "draem": 0.5}, 20 + i)
             for i, c in enumerate(("carpet", "wood"))]  # fmt: skip
    df, boot = collect(tmp_path / "runs"), Bootstraps(files)
    intervals = interval_table(boot)
    write_tables(df, tmp_path / "tables", intervals=intervals)
    md = (tmp_path / "tables" / "image_auroc.md").read_text()
    tex = (tmp_path / "tables" / "image_auroc.tex").read_text()
    e = boot.estimate("mvtec_ad", "wood", "draem", "default", "image_auroc")
    cell = f"{100 * e.value:.1f} [{100 * e.low:.1f}, {100 * e.high:.1f}]"
    assert cell in md and "95 % bootstrap interval of that mean (400 resamples" in md
    assert f"{100 * e.value:.1f}$_{{[{100 * e.low:.1f},\\,{100 * e.high:.1f}]}}$" in tex
    csv = pd.read_csv(tmp_path / "tables" / "intervals.csv")
    assert len(csv) == 3 * 3 * 4  # (2 classes + mean) x 3 methods x 4 metrics
    # the paper table: Δ is bold where the published number lies outside the reproduced interval
    built, _ = build_paper_tables(df, load_published(PUBLISHED), ["paper_method_b_table1"], intervals)
    long = built["paper_method_b_table1"].long
    rows = long[long["published_in_interval"].notna()]
    assert len(rows) > 0
    for _, r in rows.iterrows():
        assert bool(r["published_in_interval"]) == (
            r["reproduced_low"] <= r["published"] <= r["reproduced_high"]
        )
    outside = rows[~rows["published_in_interval"].astype(bool)].iloc[0]
    md = to_markdown(built["paper_method_b_table1"])
    assert f"**{100 * outside['delta']:+.1f}**" in md and "A bold Δ: the published number lies outside" in md
    assert r"\textbf{" in to_latex(built["paper_method_b_table1"])


# ------------------------------------------------------------------------------------------- claims
def test_the_claims_file_is_data_with_known_sources():
    claims = load_claims(CLAIMS, load_sources(PUBLISHED))
    assert {c.id for c in claims} >= {"method_b_beats_simplenet", "method_b_beats_draem", "conditioning_helps",
                                      "blur_guidance_helps", "fusion_beats_pixel", "fusion_beats_feature",
                                      "score_beats_recon", "t_scales_cut_cost"}  # fmt: skip
    assert all(c.source for c in claims)


def test_a_bad_claims_file_names_the_claim(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text(CLAIMS.read_text().replace("source_id: teng2022", "source_id: nobody", 1))
    with pytest.raises(ConfigError, match=r"claims\[\d+\]\.source_id: 'nobody'"):
        load_claims(bad, load_sources(PUBLISHED))
    bad.write_text(CLAIMS.read_text().replace("test: superiority", "test: better", 1))
    with pytest.raises(ConfigError, match=r"claims\[0\]\.test"):
        load_claims(bad, load_sources(PUBLISHED))


@pytest.mark.parametrize(
    ("test", "low", "high", "kw", "expected"),
    [
        ("superiority", 0.01, 0.05, {}, "supported"),
        ("superiority", -0.05, -0.01, {}, "contradicted"),
        ("superiority", -0.01, 0.05, {}, "inconclusive"),
        ("superiority", 0.0, 0.05, {}, "inconclusive"),  # an interval touching 0 does not exclude it
        ("superiority", math.nan, math.nan, {}, "untested"),
        ("cheaper_within_margin", -0.01, 0.01, {"margin": 0.02, "nfe_factor": 12, "min_nfe_factor": 10}, "supported"),
        ("cheaper_within_margin", -0.01, 0.01, {"margin": 0.02, "nfe_factor": 4, "min_nfe_factor": 10}, "contradicted"),
        ("cheaper_within_margin", -0.09, -0.03, {"margin": 0.02, "nfe_factor": 12, "min_nfe_factor": 10}, "contradicted"),
        ("cheaper_within_margin", -0.04, 0.01, {"margin": 0.02, "nfe_factor": 12, "min_nfe_factor": 10}, "inconclusive"),
    ],
)  # fmt: skip
def test_each_verdict_follows_from_its_numbers(test, low, high, kw, expected):
    assert verdict(test, low, high, **kw)[0] == expected


def _method_b_class(
    root: Path, cls: str, seed: int, default_point: str, points: dict, baselines: dict
) -> Path:
    """One class: Method B's default run (recording its guidance point), its ablation points and baselines."""
    labels, masks = _test_set(seed)
    runs = [_write(root, "synthetic", cls, "method_b", "default", 0, labels, masks, _maps(masks, 1.5, seed),
                   point=default_point, nfe=20)]  # fmt: skip
    for i, (name, strength) in enumerate({**points, **baselines}.items()):
        method, variant = ("method_b", name) if name in points else (name, "default")
        runs.append(_write(root, "synthetic", cls, method, variant, 0, labels, masks,
                           _maps(masks, strength, seed + 1 + i)))  # fmt: skip
    return _bootstrap(root, runs, root / "uncertainty" / f"{cls}.npz")


def test_claims_rows_carry_the_numbers_their_verdicts_follow_from(tmp_path, capsys):
    # woven: default w 11 (w 0 runs as its own point); carpet: default w 0 (no conditioning to compare)
    files = [
        _method_b_class(tmp_path, "woven", 30, "w11_s0.5_blur3_t250",
                        {"w0_s0.5_blur3_t250": 0.3, "w11_s0_blur3_t250": 1.5}, {"simplenet": 0.2, "draem": 3.0}),
        _method_b_class(tmp_path, "carpet", 40, "w0_s0.5_blur3_t250",
                        {"w0_s0_blur3_t250": 1.5}, {"simplenet": 0.2, "draem": 3.0}),
    ]  # fmt: skip
    out = tmp_path / "tables"
    assert main(["claims", "--bootstrap", *map(str, files), "--claims", str(CLAIMS), "--published", str(PUBLISHED),
                 "--out-dir", str(out)]) == 0  # fmt: skip
    rows = pd.read_csv(out / "claims.csv", keep_default_na=False, na_values=[""])
    by = {(r["claim"], r["metric"]): r for _, r in rows.iterrows()}
    assert by[("method_b_beats_simplenet", "image_auroc")]["verdict"] == "supported"
    assert by[("method_b_beats_draem", "pixel_auroc")]["verdict"] == "contradicted"
    cond = by[("conditioning_helps", "image_auroc")]
    assert cond["classes"] == "woven" and cond["verdict"] == "supported"  # carpet's default already has w = 0
    blur = by[("blur_guidance_helps", "pixel_auroc")]
    assert blur["classes"] == "carpet woven" and blur["verdict"] in (
        "inconclusive",
        "supported",
        "contradicted",
    )
    untested = by[("score_beats_recon", "image_auroc")]
    assert (
        untested["verdict"] == "untested"
        and "methods.method_a.ablation.metric: [recon]" in untested["reason"]
    )
    # every verdict is the one its own row's numbers give
    for _, r in rows.iterrows():
        assert r["verdict"] in VERDICTS
        assert verdict(r["test"], r["low"], r["high"], margin=r["margin"], nfe_factor=r["nfe_factor"],
                       min_nfe_factor=r["min_nfe_factor"])[0] == r["verdict"]  # fmt: skip
        if r["verdict"] != "untested":
            assert r["low"] <= r["difference"] <= r["high"]
            assert r["difference"] == pytest.approx(r["estimate_a"] - r["estimate_b"], abs=1e-12)
    # DeLong beside the bootstrap for image AUROC only
    assert not math.isnan(by[("method_b_beats_simplenet", "image_auroc")]["delong_p"])
    assert math.isnan(by[("method_b_beats_simplenet", "pixel_auroc")]["delong_p"])
    md = (out / "claims.md").read_text()
    assert "**supported**" in md and "**untested**" in md and "Sources" not in md
    assert r"\textbf{contradicted}" in (out / "claims.tex").read_text()
    printed = capsys.readouterr().out
    assert "conditioning_helps / synthetic / image_auroc: supported" in printed


def test_claims_evaluate_without_runs_as_untested():
    claims = load_claims(CLAIMS, load_sources(PUBLISHED))
    rows = evaluate_claims(claims, Bootstraps([]))
    assert set(rows["verdict"]) == {"untested"} and len(rows) == sum(len(c.metrics) for c in claims)
