"""The ``selected`` and ``oracle`` variants: candidates, the plan's jobs, the choice on a validation split that holds
no test image, and the three-way table."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from settings_checks import cpu_runtime

from texad.config import validate_config
from texad.data.anomaly_sources import source_paths
from texad.data.synth import generate_class
from texad.methods import draem as draem_module
from texad.methods import get, make_settings
from texad.methods import method_a as method_a_module
from texad.methods import method_b as method_b_module
from texad.methods.base import ORACLE, SELECTED, RunKey, candidates, run_variants
from texad.methods.draem.detector import DraemDetector
from texad.methods.draem.training import train_draem
from texad.methods.run import fit_state_path, run_class
from texad.methods.selection import choose, criterion_value, pick, score_candidates
from texad.plan import Plan
from texad.results.aggregate import collect
from texad.results.record import read_result
from texad.results.selection_table import selection_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------- candidates
def test_method_b_candidates_are_the_select_grid_named_as_ablation_points():
    s = make_settings("method_b", {"inference": {"w": {"default": 4, "carpet": 0}},
                                   "select": {"w": [0, 4], "s": [0], "t_start": [150]}}, class_name="wood")  # fmt: skip
    found = candidates(method_b_module, s)
    names = [v.name for v in found]
    assert names[0] == "default" and len(names) == len(set(names))
    # w {4 (default), 0} x s {0.5 (default), 0} x t {250, 150}: 8 points, the default among them once
    assert len(found) == 8
    assert "w0_s0.5_blur3_t250" in names and "w4_s0_blur3_t150" in names
    by_name = {v.name: v for v in found}
    t150 = by_name["w0_s0_blur3_t150"].settings.inference
    assert (t150.w, t150.s, t150.t_start, t150.skip) == (0, 0, 150, 15)  # skip follows t_start: 10 steps kept
    # each candidate's own select block generates it again: what its run job carries
    again = make_settings(
        "method_b", {"inference": {"w": {"default": 4}}, "select": {"w": [0], "s": [0], "t_start": [150]}}
    )
    assert "w0_s0_blur3_t150" in [v.name for v in candidates(method_b_module, again)]
    assert by_name["w0_s0_blur3_t150"].select.w == (0.0,)
    # the ablation's w = 0 point is the same run as the candidate w = 0
    abl = make_settings("method_b", {"inference": {"w": {"default": 4}}, "select": {"w": [0]},
                                     "ablation": {"w": [0], "s": [], "joint_w": [], "joint_s": [], "blur_sigma": [],
                                                  "t_start": []}})  # fmt: skip
    all_names = [v.name for v in run_variants(method_b_module, abl)]
    assert all_names.count("w0_s0.5_blur3_t250") == 1
    assert candidates(method_b_module, make_settings("method_b")) == []


def test_method_a_and_draem_candidates():
    a = make_settings("method_a", {"select": {"n_scales": [2], "metric": ["recon"]}})
    names = [v.name for v in candidates(method_a_module, a)]
    assert names == ["default", "metric_recon", "K2_n5_s0.4", "K2_n5_s0.4_metric_recon"]
    low = make_settings("method_a", {"select": {"sigma_hi": [0.03]}})
    point = {v.name: v for v in candidates(method_a_module, low)}["K4_n5_s0.03"].settings.inference
    assert point.sigma_lo == 0.03  # sigma_lo follows sigma_hi down, as in the ablation
    d = make_settings("draem", {"score_pool": 5, "select": {"score_pool": [1, 5, 9]}})
    found = candidates(draem_module, d)
    assert [v.name for v in found] == ["default", "pool1", "pool9"]
    assert [v.settings.score_pool for v in found] == [5, 1, 9]
    # the pools are inference only: every candidate loads the default's model
    run = RunKey("synthetic", "wood", 0, "default")
    assert {draem_module.identity("draem", v.settings, run) for v in found} == {
        draem_module.identity("draem", d, run)
    }


def test_criterion_and_ties_keep_the_default():
    m = {"image_auroc": 0.8, "pixel_auroc": 0.9, "aupro": None, "pixel_ap": 0.3}
    assert criterion_value(m, "mean_auroc") == pytest.approx(0.85)
    assert criterion_value({**m, "pixel_auroc": None}, "mean_auroc") == 0.8  # a class without masks
    assert criterion_value(m, "aupro") == -math.inf
    rows = [{"name": "default", "v": {"image_auroc": 1.0, "pixel_auroc": 0.9}},
            {"name": "a", "v": {"image_auroc": 1.0, "pixel_auroc": 0.9}},
            {"name": "b", "v": {"image_auroc": 0.9, "pixel_auroc": 0.99}}]  # fmt: skip
    assert pick(rows, "mean_auroc", "v") == "default"
    assert pick(rows, "pixel_auroc", "v") == "b"
    with pytest.raises(ValueError, match="criterion"):
        criterion_value(m, "f1")


# ------------------------------------------------------------------------------------------------- plan
def _demo_config(**select) -> dict:
    config = json.loads(json.dumps(_DEMO))
    for method, block in select.items():
        config["methods"][method]["select"] = block
    return validate_config(config)


_DEMO = {
    "seeds": [0],
    "datasets": {"synthetic": {"enabled": True, "classes": ["woven", "carpet"]}},
    "methods": {"method_b": {"enabled": True, "inference": {"w": {"default": 11, "carpet": 0}},
                             "ablation": {"w": [0], "s": [], "joint_w": [], "joint_s": [], "blur_sigma": [],
                                          "t_start": []}},
                "draem": {"enabled": True}},
}  # fmt: skip


def test_plan_runs_each_candidate_once_and_keeps_other_jobs_apart_from_the_candidates():
    plan = Plan(_demo_config(method_b={"w": [0, 11]}, draem={"score_pool": [11]}))
    assert plan.candidates("method_b", "woven") == ["default", "w0_s0.5_blur3_t250"]
    assert plan.candidates("method_b", "carpet") == ["default", "w11_s0.5_blur3_t250"]
    runs = plan.candidate_results()
    assert "results/runs/synthetic/carpet/method_b/w11_s0.5_blur3_t250/seed0.json" in runs
    assert "results/runs/synthetic/woven/draem/pool11/seed0.json" in runs
    assert len(plan.selection_results()) == 2 * 2 * 2  # (selected, oracle) x 2 classes x 2 methods
    assert set(plan.selection_results()) <= set(plan.class_results("synthetic", "woven")) | set(
        plan.class_results("synthetic", "carpet")
    )
    # the default run carries no candidates, so new candidates leave it alone; a candidate carries its own values
    other = Plan(_demo_config(method_b={"w": [0, 4, 11]}, draem={"score_pool": [11]}))
    assert plan.run_settings("method_b", "woven", "default") == other.run_settings(
        "method_b", "woven", "default"
    )
    assert plan.run_settings("method_b", "woven", "w0_s0.5_blur3_t250") == other.run_settings(
        "method_b", "woven", "w0_s0.5_blur3_t250"
    )  # the ablation's w = 0 point, which is a candidate too
    carried = plan.run_settings("method_b", "carpet", "w11_s0.5_blur3_t250")["methods"]["method_b"]["select"]
    assert carried == {"w": [11.0], "s": [0.5], "t_start": [250]}
    job = plan.select_settings("method_b", "woven")
    assert job["selection"] == {"criterion": "mean_auroc"} and job["methods"]["method_b"]["select"]["w"] == [
        0,
        11,
    ]
    assert Plan(_demo_config()).selection_results() == []


# ---------------------------------------------------------------------------------- select and choose
TINY = dict(epochs=2, batch_size=4, lr=1e-3, image_size=32, recon_base_width=2, disc_base_width=2,
            anomaly_source="synthetic", score_pool=3)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DRAEM on synthetic wood, its test split, and a validation split built from its training images
    (normal ones and synthetic-defect ones with masks) in a folder of its own."""
    root = tmp_path_factory.mktemp("sel")
    generate_class(root, "wood", image_size=64, n_train=12, n_test_good=6, n_test_per_defect=3, seed=0)
    generate_class(root, "carpet", image_size=64, n_train=6, n_test_good=1, n_test_per_defect=1, seed=0)
    generate_class(root / "val", "wood", image_size=64, n_train=4, n_test_good=4, n_test_per_defect=2, seed=7)
    val = root / "val" / "wood"
    (val / "split.json").write_text(json.dumps({"holdout": 0.25, "n_normal": 4, "n_anomalous": 8, "seed": 7,
                                                "anomalies": ["generator"], "validates_on_training_images": False}))  # fmt: skip
    settings = make_settings("draem", {**TINY, "select": {"score_pool": [1, 7]}}, class_name="wood")
    model = root / "draem.pt"
    train_draem(root / "wood", source_paths("synthetic", class_name="wood", dataset_root=root), settings,
                dataset="synthetic", class_name="wood", seed=0, out=model, ckpt_dir=root / "ck", device="cpu",
                progress=False, log=lambda *a: None)  # fmt: skip
    return root, val, model, settings


def _config(settings) -> dict:
    return validate_config({**settings.to_config(), "run_name": "t", "device": "cpu",
                            "evaluation": {"resolution": 64}}, partial=True)  # fmt: skip


def test_select_scores_candidates_on_the_validation_split_alone_and_choose_relabels_runs(trained, tmp_path):
    root, val, model, settings = trained
    run = RunKey("synthetic", "wood", 0, "default")
    runtime = cpu_runtime(64)
    # the validation split lives on its own: the class folder (and its test split) is not there to read
    moved = tmp_path / "val_only" / "wood"
    shutil.copytree(val, moved)
    record = score_candidates("draem", _config(settings), run, validation_dir=moved, models={"model": model},
                              out=tmp_path / "sel.json")  # fmt: skip
    assert json.loads((tmp_path / "sel.json").read_text()) == record
    assert [r["name"] for r in record["candidates"]] == ["default", "pool1", "pool7"]
    assert [r["values"] for r in record["candidates"]] == [
        {"score_pool": 3},
        {"score_pool": 1},
        {"score_pool": 7},
    ]
    # each candidate's validation metrics are those of the one run driver on that folder
    for row in record["candidates"]:
        pool = row["values"]["score_pool"]
        det = DraemDetector(
            make_settings("draem", {**TINY, "score_pool": pool}), runtime, run, {"model": model}
        )
        expected = run_class(det, moved, run, runtime, out_result=tmp_path / f"v{pool}.json",
                             out_maps=tmp_path / f"v{pool}.npz")  # fmt: skip
        assert row["validation"] == expected["metrics"]
    assert record["chosen"] == pick(record["candidates"], "mean_auroc", "validation")
    assert record["validation"]["validates_on_training_images"] is False

    # every candidate on the test set, as the workflow runs them
    results, maps = [], []
    for v in candidates(draem_module, settings):
        key = RunKey("synthetic", "wood", 0, v.name)
        det = DraemDetector(v.settings, runtime, key, {"model": model})
        results.append(tmp_path / "runs" / v.name / "seed0.json")
        maps.append(tmp_path / "maps" / v.name / "seed0.npz")
        run_class(det, root / "wood", key, runtime, out_result=results[-1], out_maps=maps[-1])
    out = {SELECTED: (tmp_path / "runs/selected/seed0.json", tmp_path / "maps/selected/seed0.npz"),
           ORACLE: (tmp_path / "runs/oracle/seed0.json", tmp_path / "maps/oracle/seed0.npz")}  # fmt: skip
    written = choose(tmp_path / "sel.json", results, maps, out=out)
    tests = {r.parent.name: read_result(r)["metrics"] for r in results}
    best_on_test = max(tests, key=lambda n: (criterion_value(tests[n], "mean_auroc"), -list(tests).index(n)))
    for variant, (name, on) in {
        SELECTED: (record["chosen"], "validation"),
        ORACLE: (best_on_test, "test"),
    }.items():
        saved = read_result(out[variant][0])
        assert saved == written[variant] and saved["variant"] == variant
        assert saved["metrics"] == tests[name]
        sel = saved["extra"]["selection"]
        assert (sel["chosen"], sel["chosen_on"], sel["criterion"]) == (name, on, "mean_auroc")
        assert [c["test"] for c in sel["candidates"]] == [tests[c["name"]] for c in sel["candidates"]]
        with np.load(out[variant][1]) as a, np.load(maps[list(tests).index(name)]) as b:
            assert np.array_equal(a["maps"], b["maps"]) and np.array_equal(a["labels"], b["labels"])
        # the run's fit state travels with it, under the name its result records (texad predict reads it)
        fit = fit_state_path(out[variant][0])
        assert fit.read_bytes() == fit_state_path(results[list(tests).index(name)]).read_bytes()
        assert saved["extra"]["fit_state"]["file"] == fit.name
    assert criterion_value(read_result(out[ORACLE][0])["metrics"], "mean_auroc") >= criterion_value(
        read_result(out[SELECTED][0])["metrics"], "mean_auroc"
    )

    # the three-way table: default, selected and oracle of the class, and their differences
    df = collect([results[0], out[SELECTED][0], out[ORACLE][0]])
    table = selection_table(df)
    row = table[(table["class"] == "wood")].iloc[0]
    assert row["image_auroc_default"] == pytest.approx(tests["default"]["image_auroc"])
    assert row["image_auroc_selected"] == pytest.approx(tests[record["chosen"]]["image_auroc"])
    assert row["image_auroc_oracle_minus_selected"] == pytest.approx(
        tests[best_on_test]["image_auroc"] - tests[record["chosen"]]["image_auroc"]
    )
    assert row["chosen_selected"] == record["chosen"] and row["chosen_oracle"] == best_on_test

    # a test-set run of another class is refused; a missing candidate is named
    wrong = json.loads(results[1].read_text())
    wrong["class"] = "carpet"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="carpet"):
        choose(tmp_path / "sel.json", [results[0], tmp_path / "wrong.json", results[2]], maps, out=out)
    with pytest.raises(ValueError, match="pool7"):
        choose(tmp_path / "sel.json", results[:2], maps[:2], out=out)


def test_select_refuses_a_folder_that_is_not_a_validation_split(trained, tmp_path):
    root, _, model, settings = trained
    with pytest.raises(ValueError, match="split.json"):
        score_candidates("draem", _config(settings), RunKey("synthetic", "wood", 0, "default"),
                         validation_dir=root / "wood", models={"model": model}, out=tmp_path / "s.json")  # fmt: skip
    plain = make_settings("draem", TINY)
    with pytest.raises(ValueError, match="no candidates"):
        score_candidates("draem", _config(plain), RunKey("synthetic", "wood", 0, "default"),
                         validation_dir=root / "wood", models={"model": model}, out=tmp_path / "s.json")  # fmt: skip
    assert get("draem") is draem_module
