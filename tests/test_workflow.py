"""The Snakemake workflow: dry runs of both configs, lint, bad config, the SLURM profile, a tiny real run."""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from saved_outputs import check_saved_runs

from texad.config import validate_config
from texad.data.holdout import Holdout
from texad.methods import METHODS, get
from texad.methods.base import RunKey
from texad.methods.jobs import method_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)


def smk(*args, cwd=None, timeout=600):
    """Run snakemake on the repo's Snakefile in `cwd` (default: a fresh empty folder, so nothing is done yet)."""
    cwd = cwd or tempfile.mkdtemp(prefix="texad-smk-")
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(cwd),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def test_paper_config_plans_every_data_job():
    run = smk("-n", "--configfile", str(ROOT / "config.yaml"))
    assert run.returncode == 0, run.stderr
    counts = job_counts(run.stdout + run.stderr)
    assert counts["stage_dataset"] == 3  # MVTec AD, DTD-Synthetic, DTD
    assert counts["check_class"] == 8 and counts["contact_sheet"] == 8  # 5 MVTec textures + 3 DTD-Synthetic
    # one DDPM per (class, seed), shared by Method B; its torchvision backbone is staged once
    # Method B: the default and 22 points per (class, seed) (20 guidance points: w, s, joint w x s, blur sigma,
    # start step; and the 2 map-terms points: pixel alone, feature alone; around the class's own default), all on
    # that one DDPM
    assert counts["train_diffusion"] == 8 * 3 and counts["method_b"] == 8 * 3 * 23 + 8
    # SimpleNet: one model per (class, seed), one evaluation each; plus the official variant on seed 0 (best
    # test-set epoch, 288 crop of 329: a model of its own per class)
    assert counts["train_simplenet"] == 8 * 3 + 8 and counts["simplenet"] == 8 * 3 * 4 + 8  # + 3 epochs
    # the official variants of Method B (DDAD's protocol) and DRAEM (its mask rule) on seed 0 reuse the default's
    # models: one evaluation per class each, no training
    # issue 23: + the selected variant's candidate pools 11 and 31 (21 is the default) per (class, seed)
    assert counts["draem"] == 8 * 3 * 3 + 8 and counts["train_draem"] == 8 * 3
    # the two torchvision backbones (WRN-101 for Method B, WRN-50 for SimpleNet) are staged once each
    assert counts["stage_weights"] == 2
    # DDAD's feature adaptation only where its epochs are not 0 (grid 6, leather 8, wood 16), per seed
    assert counts["adapt_features"] == 3 * 3
    # Method A: one score model per (class, seed), read by the default run and all 14 ablation points (9 T-scales
    # points, the full chain, 3 other measures, and shared_ddpm on Method B's DDPM: no training of its own)
    # issue 23: + 4 selection candidates per (class, seed) that are no ablation point (K x sigma_hi off the axes)
    assert counts["train_score_model"] == 8 * 3 and counts["method_a"] == 8 * 3 * (15 + 4)
    assert counts["ablation_table"] == 2  # Method A and Method B
    # the report: a Figure-1 grid and ROC curves per class; four paper tables; every table as an HTML page
    # (4 benchmark metrics, 4 paper tables, 2 ablations, the claims, the selection); ablation curves of both methods;
    # one speed plot
    assert counts["figure_grid"] == 8 and counts["roc_curves"] == 8 and counts["paper_table"] == 4
    assert counts["table_html"] == 12 and counts["ablation_curves"] == 2 and counts["speed_accuracy"] == 1
    # issue 23: one choice on the validation split and one selected/oracle pair per (class, seed) and method with
    # candidates (Method A, Method B, DRAEM), and the three-way table and figure
    assert counts["select"] == counts["choose"] == 8 * 3 * 4  # and SimpleNet
    assert counts["selection_table"] == counts["selection_figure"] == 1
    # issue 21: one bootstrap of each class's runs, and the claims table
    assert counts["bootstrap"] == 8 and counts["claims"] == 1
    # whatever the grids: one model per (dataset, class, seed) and method
    training = {k: v for k, v in counts.items() if k.startswith(("train_", "adapt_"))}
    assert training == {"train_diffusion": 24, "train_score_model": 24, "train_simplenet": 24 + 8,
                        "train_draem": 24, "adapt_features": 9}  # fmt: skip
    # 1075 without the official variants (issue 19): + 8 SimpleNet models and 8 runs each of SimpleNet, Method B
    # and DRAEM; + Method B's 2 map-terms points per (class, seed)
    # issue 23: a validation split and its contact sheet per class; holdout 0 (the papers train on every training
    # image): no training view, the class folders as before
    assert counts["validation_split"] == counts["validation_sheet"] == 8 and "training_view" not in counts
    assert sum(counts.values()) == 1075 + 32 + 96 + 8 * 3 * 2 + 8 + 2 + 16 + 96 + 48 + 72 * 2 + 3 + 120
    # issue 20: a deployment threshold beside each of the 96 default runs (4 methods x 8 classes x 3 seeds)
    assert counts["threshold"] == 96
    for name in ("carpet", "grid", "leather", "tile", "wood", "Mesh_114", "Stratified_154", "Blotchy_099"):
        assert f"/{name}/layout.json" in run.stdout + run.stderr


def test_default_configfile_is_the_paper_config():
    run = smk("-n")
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout + run.stderr)["check_class"] == 8


def test_demo_config_is_not_merged_with_the_paper_config():
    run = smk("-n", "--configfile", str(ROOT / "config" / "demo.yaml"))
    assert run.returncode == 0, run.stderr
    counts = job_counts(run.stdout + run.stderr)
    assert counts == {
        "synth_class": 3,
        "check_class": 3,
        "contact_sheet": 3,
        # issue 23: each class's validation split, its contact sheet, and the view of the 32 training images (of 40)
        # that every model trains on
        "validation_split": 3,
        "validation_sheet": 3,
        "training_view": 3,
        "train_score_model": 3,
        "method_a": 3 * 4,  # default + K1, K2, full_chain
        "ablation_table": 2,
        "train_diffusion": 3,
        # default + (w 0, s 0.5), (w 11, s 0) on woven and wood; default + (w 0, s 0) on carpet (w 0); the
        # selection candidate w 11 on carpet (w 0 elsewhere is the ablation's point)
        "method_b": 3 + 3 + 2 + 1,
        "train_simplenet": 3,
        "simplenet": 3 * 2,  # default + the candidate epoch 5 (a snapshot of the default's training)
        "train_draem": 3,
        "draem": 3 * 2,  # default + the candidate pool 9
        # issue 23: each method's choice on the validation split, its selected and oracle runs, the table, the figure
        "select": 3 * 4,
        "choose": 3 * 4,
        "selection_table": 1,
        "selection_figure": 1,
        "aggregate": 1,
        "threshold": 4 * 3,  # a deployment threshold beside each default run
        # the report: tables (4 benchmark, 4 paper, 2 ablation, the claims, the selection) as HTML, and the figures
        "paper_table": 4,
        "table_html": 12,
        "bootstrap": 3,  # one per class: every run of the class on the same resamples
        "claims": 1,
        "figure_grid": 3,
        "roc_curves": 3,
        "ablation_curves": 2,
        "speed_accuracy": 1,
        "all": 1,
    }
    # the overlay that tests every claim adds the recon measure and each map term alone, per class, and trains nothing
    run = smk(
        "-n", "--configfile", str(ROOT / "config" / "demo.yaml"), str(ROOT / "config" / "demo-claims.yaml")
    )
    assert run.returncode == 0, run.stderr
    more = job_counts(run.stdout + run.stderr)
    assert {k: more[k] - counts.get(k, 0) for k in more if more[k] != counts.get(k, 0)} == {
        "method_a": 3,
        "method_b": 3 * 2,
    }


def test_bad_key_stops_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["datasets"]["synthetic"]["n_tarin"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = smk("--cores", "1", "--configfile", str(path), cwd=tmp_path)
    assert run.returncode != 0
    assert "datasets.synthetic.n_tarin: unknown key" in run.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_lint_is_clean_on_both_configs():
    for cfg in ("config.yaml", "config/demo.yaml"):
        run = smk("--lint", "--configfile", str(ROOT / cfg))
        assert run.returncode == 0, run.stdout + run.stderr


def test_slurm_profile_dry_run_plans_jobs():
    run = smk("-n", "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(ROOT / "config.yaml"))
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout + run.stderr)["check_class"] == 8


def test_profiles_follow_the_slurm_conventions():
    slurm = yaml.safe_load((ROOT / "profiles" / "slurm" / "profile.yaml").read_text())
    assert slurm["executor"] == "slurm"
    for rule, res in slurm.get("set-resources", {}).items():
        assert "slurm_extra" not in res or not re.search(r"--(gres|gpus)", str(res["slurm_extra"])), rule
        assert "gpu" in res or "gres" in res
    assert isinstance(slurm["default-resources"]["runtime"], int)  # minutes
    local = yaml.safe_load((ROOT / "profiles" / "local" / "profile.yaml").read_text())
    assert local["resources"]["gpu"] == 1


def test_every_rule_declares_log_benchmark_threads_resources_conda():
    text = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    rules = re.split(r"^rule ", text, flags=re.M)[1:]
    assert len(rules) >= 4
    for body in rules:
        name = body.split(":", 1)[0]
        for directive in ("log:", "benchmark:", "threads:", "resources:", "conda:"):
            assert directive in body, f"rule {name} lacks {directive}"
        # memory and runtime: written out, or the torch jobs' GPU/CPU block (checked on the planned jobs below)
        assert ("mem_mb=" in body and "runtime=" in body) or "**torch_resources(" in body, name
    for device, gpu in (("cpu", "0"), ("cuda", "1")):
        run = smk("-n", "--configfile", str(ROOT / "config.yaml"), "--config", f"device={device}")
        assert run.returncode == 0, run.stderr
        jobs = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", run.stdout + run.stderr, re.M | re.S)
        assert len(jobs) > 1000
        for rule, body in jobs:
            (resources,) = re.findall(r"^\s+resources: (.*)$", body, re.M) or [""]
            if rule == "all":
                continue
            assert "mem_mb=" in resources and "runtime=" in resources, (rule, resources)
            if rule.startswith(("train_", "adapt_")) or rule in (
                "method_a",
                "method_b",
                "simplenet",
                "draem",
            ):
                assert f"gpu={gpu}" in resources, (rule, device, resources)


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_reruns_nothing(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["datasets"]["synthetic"].update(classes=["woven", "wood"], image_size=64, n_train=3, n_test_good=2,
                                        n_test_per_defect=1)  # fmt: skip
    # one of the 3 training images held out for validation: every model trains on the other 2 (the training view),
    # and its identity says so; the split draws a Perlin anomaly (from the other class) and a scratch on it
    cfg["validation"] = {"holdout": 0.2, "min_holdout": 1, "anomalies": ["perlin", "scratch"], "seed": 0}
    cfg["image_size"] = 32
    # DDAD's own regime (no EMA, no clipping) written as YAML ints: the identity hashes are the same for 0 and 0.0
    cfg["methods"]["method_b"]["train"] = {"epochs": {"default": 2}, "batch_size": 2, "ema": 0, "grad_clip": 0,
                                           "weight_decay": 0, "t_max": 300}  # fmt: skip
    cfg["methods"]["method_b"]["feature_adaptation"] = {"epochs": {"wood": 1, "default": 0}, "batch_size": 2}
    cfg["methods"]["method_b"]["ablation"] = {"w": [4], "s": [0.5], "joint_w": [4], "joint_s": [0],
                                              "blur_sigma": [3], "t_start": [250]}  # fmt: skip
    cfg["methods"]["simplenet"].update(meta_epochs=1, gan_epochs=1, image_size=32, resize=32, select={})
    cfg["methods"]["draem"].update(epochs=1, image_size=32, score_pool=3)
    # settings chosen on the validation split (issue 23): Method B's w among {11, 4} (w 4 is an ablation point, run
    # once for both), DRAEM's pool among {3, 1}; Method A's selection is the same code and is left out for time
    cfg["methods"]["method_b"]["select"] = {"w": [4]}
    cfg["methods"]["draem"]["select"] = {"score_pool": [1]}
    cfg["methods"]["method_a"].update(
        sde={"sigma_max": 1.0, "n_steps": 10}, network={"preset": "tiny", "nf": 8},
        train={"batch_size": 2, "iterations": 3, "warmup": 1, "ema": 0, "grad_clip": 0},
        inference={"draws": 1, "batch_size": 4},
        ablation={"n_scales": [4], "steps_per_scale": [5], "sigma_hi": [0.4], "full_chain": True, "metric": [],
                  "shared_ddpm": True, "speed_batches": [1, 16]},
        select={},
    )  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = smk("--cores", "2", "--configfile", str(path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    for cls in ("woven", "wood"):
        layout = json.loads((tmp_path / "results" / "data" / "synthetic" / cls / "layout.json").read_text())
        assert layout["counts"] == {"test/fold": 1, "test/good": 2, "test/hole": 1, "test/scratch": 1,
                                    "test/stain": 1, "train/good": 3}  # fmt: skip
        sheet = tmp_path / "results" / "data" / "synthetic" / cls / "contact_sheet.png"
        assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "results" / "benchmarks" / "synth" / f"{cls}.tsv").is_file()
        assert (tmp_path / "results" / "logs" / "synth" / f"{cls}.log").is_file()
        result = json.loads(
            (
                tmp_path / "results" / "runs" / "synthetic" / cls / "method_b" / "default" / "seed0.json"
            ).read_text()
        )
        # the demo's Method B: 10 steps x (1 + blur guidance), maps standardised by the 2 training images that
        # remain (the third is the validation split's)
        assert 0.0 <= result["metrics"]["image_auroc"] <= 1.0 and result["timings"]["nfe_per_image"] == 20
        assert result["evaluation"]["switches"]["normalise"] == "train_stats"
        assert result["extra"]["train_stats_images"] == 2
        assert result["extra"]["holdout"] == {"holdout": 0.2, "min_holdout": 1, "seed": 0}
        split = json.loads((tmp_path / "results/validation/synthetic" / cls / "split.json").read_text())
        view = json.loads((tmp_path / "results/splits/synthetic" / cls / "view.json").read_text())
        assert split["held_out"] == view["held_out"] and len(view["trains_on"]) == 2
        assert split["n_normal"] == 1 and split["n_anomalous"] == 2
        assert not split["validates_on_training_images"]
        assert result["backbone"]["name"] == "efficientnet_lite0" and result["model_hash"]
        assert ("adapted" in result["backbone"]) == (cls == "wood")
        if cls == "wood":  # adapted at the side at which the maps compare images
            models = tmp_path / "results" / "models" / "synthetic" / cls / "seed0"
            (features,) = models.glob("features-*.pt")
            adapted = torch.load(features, weights_only=True)["identity"]["settings"]
            assert adapted["feature_size"] == cfg["methods"]["method_b"]["inference"]["feature_size"] == 128
        simplenet = json.loads(
            (
                tmp_path / "results" / "runs" / "synthetic" / cls / "simplenet" / "default" / "seed0.json"
            ).read_text()
        )
        assert simplenet["extra"]["selection"] == {**simplenet["extra"]["selection"], "mode": "last",
                                                   "used_test_set": False}  # fmt: skip
        draem = json.loads(
            (
                tmp_path / "results" / "runs" / "synthetic" / cls / "draem" / "default" / "seed0.json"
            ).read_text()
        )
        other = {"woven": "wood", "wood": "woven"}[cls]  # the other class is the anomaly source
        assert draem["backbone"] is None and draem["extra"]["anomaly_source"]["groups"] == [other]
        runs_a = tmp_path / "results" / "runs" / "synthetic" / cls / "method_a"
        method_a = {v: json.loads((runs_a / v / "seed0.json").read_text()) for v in ("default", "full_chain",
                                                                                    "shared_ddpm")}  # fmt: skip
        assert method_a["default"]["timings"]["nfe_per_image"] == 4 * 5
        assert method_a["full_chain"]["evaluation"]["switches"]["mode"] == "full_chain"
        assert set(method_a["full_chain"]["extra"]["timing"]["s_per_image_at_batch"]) == {"1", "16"}
        # the shared_ddpm point reads Method B's DDPM: no model of its own was trained for it
        assert method_a["shared_ddpm"]["model_hash"] == result["model_hash"]
        assert method_a["default"]["model_hash"] != result["model_hash"]
    # every result records the settings it ran with: a valid config part on its own (texad predict rebuilds the
    # run from it), naming the model the run loaded
    # the selected and oracle variants: each a candidate's test-set run, relabelled with what was chosen and how
    runs = tmp_path / "results" / "runs" / "synthetic"
    for cls in ("woven", "wood"):
        for method, names in (
            ("method_b", ["default", "w4_s0.5_blur3_t250"]),
            ("draem", ["default", "pool1"]),
        ):
            choice = json.loads(
                (tmp_path / "results/selection/synthetic" / cls / method / "seed0.json").read_text()
            )
            assert [c["name"] for c in choice["candidates"]] == names and choice["chosen"] in names
            assert (
                choice["validation"]["n_normal"] == 1
                and not choice["validation"]["validates_on_training_images"]
            )
            for variant, on in (("selected", "validation"), ("oracle", "test")):
                relabelled = json.loads((runs / cls / method / variant / "seed0.json").read_text())
                sel = relabelled["extra"]["selection"]
                assert sel["chosen_on"] == on and relabelled["variant"] == variant
                chosen = json.loads((runs / cls / method / sel["chosen"] / "seed0.json").read_text())
                assert relabelled["metrics"] == chosen["metrics"]
            assert (
                sel["chosen"]
                == max(  # the oracle: the best mean AUROC on the test set, ties to the first
                    sel["candidates"],
                    key=lambda c: (
                        c["test"]["image_auroc"] + c["test"]["pixel_auroc"],
                        -names.index(c["name"]),
                    ),  # fmt: skip
                )["name"]
            )
    selection = pd.read_csv(tmp_path / "results" / "tables" / "selection.csv")
    assert set(selection["method"]) == {"method_b", "draem"} and set(selection["class"]) == {
        "woven",
        "wood",
        "mean",
    }
    thresholds = sorted((tmp_path / "results" / "runs").rglob("*.threshold.json"))
    assert len(thresholds) == 4 * 2  # one beside each default run
    for result_path in sorted(set((tmp_path / "results" / "runs").rglob("*.json")) - set(thresholds)):
        result = json.loads(result_path.read_text())
        # and its fit state beside it, the file the result names (texad predict loads it)
        fit = result_path.with_name(result["extra"]["fit_state"]["file"])
        assert fit.name == f"{result_path.stem}.fit.npz", result_path
        assert hashlib.sha256(fit.read_bytes()).hexdigest() == result["extra"]["fit_state"]["sha256"], (
            result_path
        )
        config = validate_config(result["extra"]["config"], partial=True)
        settings = method_settings(config, result["method"], result["class"])
        kind = get(result["method"]).models(settings)["model"]
        if kind in get(result["method"]).MODELS:
            held = Holdout.from_identity(result["extra"]["holdout"])  # the training images its models lacked
            run = RunKey(result["dataset"], result["class"], result["seed"], "default", held)
            assert get(result["method"]).identity(kind, settings, run) == result["model_hash"], result_path
    # issue 24: every run's metrics (default, ablation points, candidates, selected and oracle) follow from its
    # maps file, the class folder's own masks on the evaluation grid and its labels (tests/saved_outputs.py)
    checked = check_saved_runs(tmp_path, "synthetic")
    assert {(c, m) for c, m, _, _ in checked} == {(c, m) for c in ("woven", "wood") for m in METHODS}
    variants = {v for _, _, v, _ in checked}
    assert variants >= {"default", "full_chain", "shared_ddpm", "selected", "oracle", "pool1"}, variants
    models = sorted(p.name.split("-")[0] for p in (tmp_path / "results" / "models").rglob("*.pt"))
    assert models == sorted(["score", "ddpm", "simplenet", "draem"] * 2 + ["features"])
    # each model file keeps the whole block it was trained with: the ints as the schema's floats, and the
    # inference keys a model file alone is later scored with (texad predict)
    (ddpm,) = (tmp_path / "results" / "models" / "synthetic" / "wood").rglob("ddpm-*.pt")
    ddpm = torch.load(ddpm, weights_only=True)
    assert ddpm["settings"]["ema"] == 0.0 and ddpm["settings"]["grad_clip"] == 0.0
    assert ddpm["config"]["methods"]["method_b"]["inference"]["w"] == {"default": 11.0}
    (draem_file,) = (tmp_path / "results" / "models" / "synthetic" / "wood").rglob("draem-*.pt")
    assert torch.load(draem_file, weights_only=True)["config"]["methods"]["draem"]["score_pool"] == 3
    table = (tmp_path / "results" / "tables" / "image_auroc.md").read_text()
    assert all(m in table for m in ("method_a", "method_b", "simplenet", "draem"))
    ablation = (tmp_path / "results" / "tables" / "ablation_method_a.md").read_text()
    assert all(f"| {v} |" in ablation for v in ("default", "full_chain", "shared_ddpm"))
    # Method B's guidance points around the class's w (11): w 4, and w 4 with s = 0 (half the network evaluations)
    ablation_b = (tmp_path / "results" / "tables" / "ablation_method_b.md").read_text()
    assert "| default | 20 |" in ablation_b and "| w4_s0_blur3_t250 | 10 |" in ablation_b
    # issue 21: each class's runs resampled together; intervals in the tables, the claims judged by them
    for cls in ("woven", "wood"):
        with np.load(tmp_path / "results" / "uncertainty" / "synthetic" / f"{cls}.npz") as z:
            assert len(z["method"]) == len(
                list((tmp_path / "results" / "runs" / "synthetic" / cls).rglob("seed0.json"))
            )
    assert (
        re.search(r"\| \d+\.\d \[\d+\.\d, \d+\.\d\] \|", table) and "bootstrap interval of that mean" in table
    )
    claims = pd.read_csv(tmp_path / "results" / "tables" / "claims.csv")
    tested = claims[claims["verdict"] != "untested"]
    # this config runs no w 0, s 0, map-terms or recon point: those claims say which keys would run them
    assert set(tested["claim"]) == {"method_b_beats_simplenet", "method_b_beats_draem", "t_scales_cut_cost",
                                    "test_set_choice_inflates_method_b"}  # fmt: skip
    assert (
        claims.loc[claims["claim"] == "conditioning_helps", "reason"]
        .str.contains("ablation.w: \\[0\\]")
        .all()
    )
    assert (tested["low"] <= tested["difference"]).all() and (tested["difference"] <= tested["high"]).all()
    again = smk("--cores", "2", "--configfile", str(path), cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
    # evaluation-only changes (a new ablation point, DRAEM's score pool, SimpleNet's map smoothing) retrain nothing
    # and re-run only what they touch
    cfg["methods"]["method_a"]["ablation"]["n_scales"] = [2, 4]
    cfg["methods"]["draem"]["score_pool"] = 5
    cfg["methods"]["simplenet"]["smoothing_sigma"] = 2
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    plan = smk("-n", "--configfile", str(changed), cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = job_counts(plan.stdout + plan.stderr)
    assert not [job for job in counts if job.startswith(("train_", "adapt_"))], counts
    # DRAEM: the default and the pool-1 candidate, whose job carries the default's block as an ablation point does;
    # its choice is made again, Method B's is left alone
    assert counts["method_a"] == 2 and counts["draem"] == 4 and counts["simplenet"] == 2, counts
    assert counts["select"] == 2 and counts["choose"] == 2, counts
    assert "method_b" not in counts, counts
    report = smk(
        "--cores", "1", "--configfile", str(path), "--report", str(tmp_path / "report.html"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr[-3000:]
    check_report(tmp_path / "report.html", tmp_path, classes=("woven", "wood"))


def report_items(classes) -> dict[str, dict]:
    """Every entry the demo report must have: its path in the report's menus and the label of its row."""
    items = {}
    for cls in classes:
        row = [f"synthetic / {cls}"]
        items[f"results/data/synthetic/{cls}/contact_sheet.png"] = {"path": ["Data", "synthetic"], "row": row}
        items[f"results/data/synthetic/{cls}/validation_sheet.png"] = {
            "path": ["Data", "synthetic validation"], "row": row}  # fmt: skip
        items[f"results/figures/synthetic/{cls}/figure1.png"] = {
            "path": ["Figures", "Reconstructions (Figure 1)"], "row": row}  # fmt: skip
        items[f"results/figures/synthetic/{cls}/roc.png"] = {"path": ["Figures", "ROC curves"], "row": row}
    for method in ("method_a", "method_b"):
        items[f"results/figures/ablation_{method}.png"] = {"path": ["Figures", "Ablations"], "row": [method]}
    items["results/figures/speed_accuracy.png"] = {
        "path": ["Figures", "Speed vs accuracy"], "row": ["all methods and ablation points"]}  # fmt: skip
    items["results/figures/selection.png"] = {
        "path": ["Figures", "Selection"], "row": ["default, selected and oracle"]}  # fmt: skip
    groups = {"benchmark": ["image_auroc", "pixel_auroc", "aupro", "pixel_ap"],
              "paper": ["paper_method_b_table1", "paper_method_a_main", "paper_method_a_tscales", "extended"],
              "ablation": ["ablation_method_a", "ablation_method_b"], "claims": ["claims"],
              "selection": ["selection"]}  # fmt: skip
    for group, tables in groups.items():
        for table in tables:
            items[f"results/report/tables/{group}/{table}.html"] = {"path": ["Tables", group], "row": [table]}
    return items


def check_report(report: Path, workdir: Path, classes) -> None:
    """The report holds every table and figure with a caption, and a browser shows each of them."""
    from report_browser import decode_data_url, embedded, find_chromium, open_items, screenshot
    from services import require

    items = report_items(classes)
    results = embedded(report, "results")
    assert set(results) == set(items), set(results) ^ set(items)
    assert all(entry["caption"].strip() for entry in results.values())
    categories = embedded(report, "categories")
    assert set(categories) == {"Data", "Tables", "Figures"}
    binary = find_chromium()
    if binary is None:
        require("headless Chromium is not installed and cannot be (apt-get chromium-headless-shell as root)")
    shown = open_items(binary, report, [{**v, "file": k} for k, v in items.items()], workdir)
    assert [s["file"] for s in shown] == list(items)
    for entry in shown:
        assert "src" in entry and entry["src"], entry
        mime, content = decode_data_url(entry["src"])
        if entry["file"].endswith(".png"):
            assert mime == "image/png" and content[:8] == b"\x89PNG\r\n\x1a\n", entry["file"]
        else:
            assert mime == "text/html" and b"<table>" in content, entry["file"]
            # the HTML page shows the same table as the Markdown file it came from
            name = Path(entry["file"]).stem
            md = (workdir / "results" / "tables" / f"{name}.md").read_text()
            row = [line for line in md.splitlines() if line.startswith("|")][2]  # the first data row
            cells = [c.strip().replace("**", "") for c in row.strip("|").split("|")]
            page = content.decode()
            assert all(f">{c}<" in page.replace("<b>", "").replace("</b>", "") for c in cells), (name, cells)
    # what a user sees first: the paper's table in the main panel (kept for a look under results/)
    shot = screenshot(binary, report, items["results/report/tables/paper/paper_method_b_table1.html"],
                      ROOT / "results" / "test-artifacts" / "report-paper-table.png", workdir)  # fmt: skip
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (900, 1400) and image.std() > 10


@pytest.mark.slow
def test_download_stage_runs_through_the_workflow(tmp_path, server):
    """DTD-Synthetic from a local server: localrule download, trust-on-first-use checks, class check, sheet."""
    import tarfile

    from texad.data.synth import generate_class

    build = tmp_path / "build" / "DTD-Synthetic"
    generate_class(build, "woven", image_size=48, n_train=2, n_test_good=1, n_test_per_defect=1, seed=1)
    cls = build / "woven"
    cls.rename(build / "Mesh_114")
    cls = build / "Mesh_114"
    # DTD-Synthetic's own layout: one anomaly folder, masks named like their image
    (cls / "test" / "bad").mkdir()
    (cls / "ground_truth" / "bad").mkdir()
    for i, defect in enumerate(("fold", "hole", "scratch", "stain")):
        (cls / "test" / defect / "000.png").rename(cls / "test" / "bad" / f"{i:03d}.png")
        (cls / "ground_truth" / defect / "000_mask.png").rename(cls / "ground_truth" / "bad" / f"{i:03d}.png")
        (cls / "test" / defect).rmdir()
        (cls / "ground_truth" / defect).rmdir()
    archive = tmp_path / "DTD-Synthetic.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(build, arcname="DTD-Synthetic")
    url = server.add(archive.name, archive.read_bytes())

    cfg = {
        "run_name": "download-test",
        "datasets": {
            "dtd_synthetic": {
                "enabled": True,
                "classes": ["Mesh_114"],
                "accept_license": True,
                "url": url,
            }
        },
        "methods": {},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    run = smk("--cores", "1", "--configfile", str(path), cwd=work)
    assert run.returncode == 0, run.stderr[-3000:]
    marker = json.loads((work / "resources" / "datasets" / "dtd_synthetic.staged.json").read_text())
    assert marker["source"] == "url" and marker["checksum"] == "trust-on-first-use"
    layout = json.loads(
        (work / "results" / "data" / "dtd_synthetic" / "Mesh_114" / "layout.json").read_text()
    )
    assert layout["counts"] == {"test/bad": 4, "test/good": 1, "train/good": 2}
    assert (work / "results" / "data" / "dtd_synthetic" / "Mesh_114" / "contact_sheet.png").is_file()
    assert (work / "resources" / "downloads" / "DTD-Synthetic.tar.gz").is_file()  # kept for offline reruns
