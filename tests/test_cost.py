"""texad cost: FLOPs against a hand count, job counts against `snakemake -n`, the GPU-hours arithmetic, the
device's utilisation source, the CLI table, and the quick profile's budget."""

from __future__ import annotations

import json
import re

import pytest
import torch
from test_workflow import ROOT, smk
from torch import nn

from texad.cli import main
from texad.config import load_config
from texad.cost.devices import Device, measured_utilisation, resolve
from texad.cost.flops import count_flops, profile
from texad.cost.networks import Net
from texad.cost.plan_cost import _run_work, class_counts, method_b_nfe, plan_jobs, rule_costs
from texad.methods.method_b import inference_point
from texad.plan import Plan


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cost") / "cost.json"


def test_flops_of_a_small_network_match_a_hand_count():
    # conv 3->8, 3x3, pad 1 on 16x16: 16*16 outputs x 8 channels x 3*3*3 MACs; linear 2048->10 on batch 2
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    x = torch.randn(2, 3, 16, 16)
    macs = 2 * (16 * 16 * 8 * 27) + 2 * (2048 * 10)
    assert count_flops(net, x) == 2 * macs


def test_paper_unet_profile_is_counted_on_the_meta_device(cache):
    prof = profile(Net.of("ddpm_unet", preset="paper", image_size=256), cache)
    assert prof.params == pytest.approx(34.6e6, rel=0.01)
    assert prof.infer_flops == pytest.approx(142.5e9, rel=0.01)  # measured on the CPU (issue 19's context)
    assert 2.5 < prof.train_flops / prof.infer_flops < 3.5  # backward ~ 2 x forward
    assert json.loads(cache.read_text())  # cached for the next run


def test_gpu_hours_arithmetic():
    dev = Device("h100", "bf16", peak_tflops=1000.0, utilisation=0.5, source="given")
    assert dev.hours(1.8e18) == pytest.approx(1.0)  # 1.8e18 / (500e12 FLOP/s) = 3600 s
    assert resolve("a100", "tf32", 0.25).tflops == pytest.approx(156 * 0.25)


def test_measured_utilisation_replaces_the_default_only_for_a_real_gpu_run(tmp_path):
    data = {"device": "NVIDIA H100 80GB HBM3", "kind": "cuda", "tiny": False, "networks": {
        "a": {"modes": {"bf16": {"utilisation": 0.2, "ok": True}, "fp32": {"utilisation": 0.5, "ok": True}}},
        "b": {"modes": {"bf16": {"utilisation": 0.4, "ok": True}}}}}  # fmt: skip
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(data))
    assert measured_utilisation(path, "h100", "bf16") == pytest.approx(0.3)
    assert resolve("h100", "bf16", None, path).utilisation == pytest.approx(0.3)
    assert measured_utilisation(path, "a100", "bf16") is None  # another device
    path.write_text(json.dumps({**data, "tiny": True}))
    assert resolve("h100", "bf16", None, path).source == "default"


def test_method_b_nfe_follows_the_loop():
    cfg = load_config(ROOT / "config.yaml")
    s = Plan(cfg).settings("method_b", "grid")  # t_start 250, skip 25: 10 steps, blur guidance doubles them
    assert method_b_nfe(s) == 20


def test_a_map_terms_point_costs_what_the_default_costs(cache):
    """Method B's map-terms points reuse the default's loop (the same reconstructions, both distances): the same
    network evaluations, FLOPs and networks as the class's default run."""
    plan = Plan(load_config(ROOT / "config.yaml"))
    for cls in ("carpet", "grid"):
        default = _run_work(plan, "method_b", "mvtec_ad", cls, "default", cache)
        point = inference_point(plan.settings("method_b", cls).inference)  # w0_s0.5_blur3_t250 on carpet
        for terms in ("pixel", "feature"):
            assert f"{point}_{terms}" in plan.variants("method_b", cls)
            work = _run_work(plan, "method_b", "mvtec_ad", cls, f"{point}_{terms}", cache)
            assert (work.flops, work.nets) == (default.flops, default.nets), (cls, terms)
            settings = plan._variant("method_b", cls, f"{point}_{terms}").settings
            assert method_b_nfe(settings) == method_b_nfe(plan.settings("method_b", cls)) == 20


def test_method_b_runs_count_the_training_images_they_fit_on(cache):
    """A Method B run reconstructs its first ``normalise_images`` training images (16 in config.yaml: the fusion
    scale of ``fusion_norm: train``) before its test images; the official variant (DDAD's batch16, no train_stats)
    fits none."""
    plan = Plan(load_config(ROOT / "config.yaml"))
    n_train, n_test = class_counts(plan, "mvtec_ad", "grid")
    assert plan.settings("method_b", "grid").inference.normalise_images == 16 < n_train
    default = _run_work(plan, "method_b", "mvtec_ad", "grid", "default", cache)
    official = _run_work(plan, "method_b", "mvtec_ad", "grid", "official", cache)
    assert default.flops == pytest.approx(official.flops * (n_test + 16) / n_test)


def _smk_counts(config: str) -> dict[str, int]:
    run = smk("-n", "--configfile", str(ROOT / config))
    assert run.returncode == 0, run.stderr
    block = (run.stdout + run.stderr).split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.mark.parametrize("config", ["config/demo.yaml", "config.yaml", "config/paper-quick.yaml"])
def test_job_counts_match_snakemake_dry_run(config, cache):
    counts: dict[str, int] = {}
    for job in plan_jobs(Plan(load_config(ROOT / config)), cache):
        counts[job.rule] = counts.get(job.rule, 0) + 1
    assert counts == _smk_counts(config)


def test_paper_quick_fits_twelve_h100_bf16_hours(cache):
    plan = Plan(load_config(ROOT / "config/paper-quick.yaml"))
    assert plan.config["run_name"] == "paper-quick" and plan.config["seeds"] == [0]
    rows = rule_costs(plan, resolve("h100", "bf16"), cache, measure_cpu=False)
    total = sum(r.gpu_hours for r in rows)
    assert 1.0 < total <= 12.0
    full = rule_costs(
        Plan(load_config(ROOT / "config.yaml")), resolve("h100", "bf16"), cache, measure_cpu=False
    )
    assert sum(r.gpu_hours for r in full) > total


def test_cli_prints_the_table_and_names_the_dominant_rule(tmp_path, cache, capsys):
    out = tmp_path / "cost.json"
    args = ["cost", "--configfile", str(ROOT / "config/paper-quick.yaml"), "--no-measure", "--cache", str(cache),
            "--gpu-json", "none", "--format", "json", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    data = json.loads(out.read_text())
    rules = sorted(data["rules"], key=lambda r: -r["gpu_hours"])
    assert data["dominant"][0] == rules[0]["rule"]
    assert rules[0]["rule"].startswith("train_")
    assert sum(r["jobs"] for r in data["rules"]) == data["total_jobs"]
    assert sum(r["gpu_hours"] for r in data["rules"]) == pytest.approx(data["total_gpu_hours"])
    assert main(args[:-4]) == 0
    text = capsys.readouterr().out
    assert "| total |" in text and f"Dominant rules (>= 10 % of the GPU-hours): {rules[0]['rule']}" in text
