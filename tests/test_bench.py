"""``make bench``'s code paths at the smallest sizes (a 2-image class, 1 training step, 1 repetition: 2 asked
for, the time guard stops after the first): the JSON records have their structure, and every ratio is computed
from the recorded times. No timing thresholds."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_metrics  # noqa: E402
import bench_pipeline as bp  # noqa: E402
import bench_snakemake  # noqa: E402
import bench_summary  # noqa: E402
from bench_common import write_json  # noqa: E402

TINY = bp.BenchSettings(
    image_size=32, class_image_size=32, n_train=2, n_test_good=1, n_test_per_defect=1, defects=("scratch",),
    batch_size=2, reps=2, min_reps=1, rep_budget_s=0.0, score_iterations=1, sde_steps=20, ddpm_epochs=1, feature_size=32,
    simplenet_meta_epochs=1, simplenet_gan_epochs=1, draem_epochs=1, fwd_calls=1, warmup=False,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """The records of one tiny ``run_all`` (memory measured for one method only, in its fresh process)."""
    folder = tmp_path_factory.mktemp("bench_out")
    work = tmp_path_factory.mktemp("bench_work")
    bp.run_all(folder, TINY, devices=["cpu"], memory_methods=("draem",), work=work, log=lambda _m: None)
    assert not list(work.iterdir())  # the temporary class and models are gone
    return folder


def _load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_every_record_states_machine_settings_and_sizes(out):
    for name in ("tscales", "overhead", "throughput", "memory"):
        rec = _load(out, name)
        m = rec["machine"]
        assert m["cpu_model"] and m["cpu_count"] >= 1 and m["torch_threads"] == 1 and m["torch"]
        assert rec["settings"]["batch_size"] == 2 and rec["settings"]["image_size"] == 32
        assert rec["settings"]["n_test"] == 2 and rec["settings"]["reps"] == 2
        assert set(rec["method_settings"]) == {"method_a", "method_b", "simplenet", "draem"}
        assert set(rec["setup"]["train_s"]) == {"method_a", "method_b", "simplenet", "draem"}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))  # atomic writes leave no temp files


def test_tscales_speedup_is_the_ratio_of_the_recorded_times(out):
    from texad.diffusion.sde import VESDE
    from texad.methods.method_a.infer import ScoreModel, full_chain_levels

    d = _load(out, "tscales")["devices"]["cpu"]
    assert d["batch_size"] == 2 and d["image_size"] == 32 and d["n_images"] == 2
    for v in ("default", "full_chain"):
        rows = d[v]["reps"]
        assert len(rows) == 1 and rows[0]["variant"] == v and rows[0]["n_images"] == 2
        assert d[v]["s_per_image"]["values"] == [r["pipeline_s"] / r["n_images"] for r in rows]
        assert 0.0 <= d[v]["image_auroc"]["median"] <= 1.0
    # NFE: 4 scales x 5 steps x 1 draw; the full chain walks the 20-level grid from 0.4 down to 0.01
    levels = full_chain_levels(ScoreModel(VESDE(0.01, 1.0, N=20), lambda x, t: x), 0.4, 0.01)
    assert d["default"]["nfe_per_image"] == 20
    assert (
        d["full_chain"]["nfe_per_image"] == len(levels) == math.floor(math.log(40) / math.log(100) * 19) + 1
    )
    assert d["nfe_ratio"] == d["full_chain"]["nfe_per_image"] / d["default"]["nfe_per_image"]
    assert d["speedup"] == d["full_chain"]["s_per_image"]["median"] / d["default"]["s_per_image"]["median"]
    pairs = [
        f["s_per_image"] / a["s_per_image"]
        for a, f in zip(d["default"]["reps"], d["full_chain"]["reps"], strict=True)
    ]
    assert d["speedup_per_pair"]["values"] == pairs
    best = min(d["full_chain"]["s_per_image"]["values"]) / min(d["default"]["s_per_image"]["values"])
    assert d["speedup_best"] == best
    # the time guard (budget 0 s, at least 1 repetition) stopped after the first of the 2 repetitions asked for
    assert d["reps_done"] == 1 and len(d["loadavg_1min_per_rep"]) == 1


def test_overhead_ratio_is_pipeline_over_nfe_times_forward(out):
    rec = _load(out, "overhead")
    d = rec["devices"]["cpu"]
    assert d["batch_sizes"] == [2] and d["n_images"] == 2 and d["reps_done"] == 1
    assert all(len(v) == 1 for v in d["task_wall_s"].values())
    assert set(d["methods"]) == {"method_a_default", "method_a_full_chain", "method_b"}
    for key, e in d["methods"].items():
        n, nfe = d["n_images"], e["nfe_per_image"]
        bare = [nfe * sum(f[str(b)] for b in d["batch_sizes"]) / n for f in e["forward_s_per_batch"]]
        assert e["bare_s_per_image"]["values"] == pytest.approx(bare, rel=1e-12)
        ratio = e["pipeline_s_per_image"]["median"] / e["bare_s_per_image"]["median"]
        assert e["overhead_ratio"] == pytest.approx(ratio, rel=1e-12)
        best = min(e["pipeline_s_per_image"]["values"]) / min(e["bare_s_per_image"]["values"])
        assert e["overhead_ratio_best"] == pytest.approx(best, rel=1e-12)
        assert e["meets_target"] == (e["overhead_ratio"] <= bp.OVERHEAD_TARGET) and e["target"] == 1.15
        assert e["overhead_ratio_per_rep"]["values"] == pytest.approx(
            [p / b for p, b in zip(e["pipeline_s_per_image"]["values"], bare, strict=True)], rel=1e-12
        )
        b = e["breakdown"]
        parts = [k for k in b if k != "rest"]
        assert {"network_bare", "data_loading", "sampler_without_network"} <= set(parts)
        assert ("feature_extractor" in parts) == (key == "method_b")
        pipe = e["pipeline_s_per_image"]["median"]
        assert b["rest"]["s_per_image"] == pytest.approx(pipe - sum(b[k]["s_per_image"] for k in parts))
        for v in b.values():
            assert v["share_of_pipeline"] == pytest.approx(v["s_per_image"] / pipe)
        assert e["biggest_non_network_part"] in b and e["biggest_non_network_part"] != "network_bare"
    assert d["methods"]["method_b"]["nfe_per_image"] == 20  # DDAD's 10 steps, each guided (2 calls)


def test_throughput_is_images_over_the_timed_seconds(out):
    d = _load(out, "throughput")["devices"]["cpu"]
    assert set(d["methods"]) == {"method_a", "method_a_full_chain", "method_b", "simplenet", "draem"}
    assert d["batch_size"] == 2 and d["image_size"] == 32
    for name, e in d["methods"].items():
        ips, spi = e["images_per_s"]["values"], e["s_per_image"]["values"]
        assert len(ips) == len(spi) == 1
        assert ips[0] == pytest.approx(1.0 / spi[0], rel=1e-9), name
    assert (
        d["methods"]["simplenet"]["nfe_per_image"] is None and d["methods"]["draem"]["nfe_per_image"] is None
    )


def test_memory_run_in_a_fresh_process(out):
    rec = _load(out, "memory")
    assert [(r["method"], r["device"]) for r in rec["runs"]] == [("draem", "cpu")]
    r = rec["runs"][0]
    assert r["rss_peak_mb"] >= r["rss_baseline_mb"] > 0 and r["rss_samples"] >= 1
    assert r["rss_peak_delta_mb"] == pytest.approx(r["rss_peak_mb"] - r["rss_baseline_mb"])
    assert r["ru_maxrss_after_mb"] >= r["ru_maxrss_before_mb"] and "cuda_max_allocated_mb" not in r


def test_snakemake_bench_times_fresh_dry_runs_and_counts_jobs(tmp_path):
    probe = "import os, sys; assert os.listdir(sys.argv[1]) == []; print('Job stats:'); print('total   1075')"
    rec = bench_snakemake.bench_snakemake(2, command=[sys.executable, "-c", probe, "{dir}"])
    assert rec["n_jobs"] == 1075 and [r["n_jobs"] for r in rec["runs"]] == [1075, 1075]
    assert rec["wall_s"]["values"] == [r["wall_s"] for r in rec["runs"]]
    assert rec["wall_s"]["median"] == statistics.median(r["wall_s"] for r in rec["runs"])
    assert rec["machine"]["cpu_model"] and rec["reps"] == 2
    with pytest.raises(RuntimeError, match="exit 3"):
        bench_snakemake.bench_snakemake(1, command=[sys.executable, "-c", "raise SystemExit(3)"])
    cmd = bench_snakemake.snakemake_command(ROOT / "config.yaml", ROOT / "Snakefile")
    assert cmd[1:] == ["-n", "--configfile", str(ROOT / "config.yaml"), "--directory", "{dir}", "--snakefile",
                       str(ROOT / "Snakefile")]  # fmt: skip


def test_summary_has_a_table_per_benchmark_and_every_ratio(out, tmp_path, capsys):
    bench_metrics.main(
        ["--n-images", "6", "--size", "32", "--repeats", "1", "--out", str(out / "metrics.json")]
    )
    snake = bench_snakemake.bench_snakemake(1, command=[sys.executable, "-c", "print('total 5')"])
    write_json(out / "snakemake.json", snake)
    capsys.readouterr()
    text = bench_summary.main(["--dir", str(out), "--out", str(tmp_path / "summary.md")])
    assert (tmp_path / "summary.md").read_text() == text
    assert "Not run" not in text
    for heading in ("Evaluation metrics", "(a) Method A", "(b) Diffusion pipeline overhead", "(c) Inference",
                    "(d) Peak memory", "(e) Workflow planning"):  # fmt: skip
        assert f"## {heading}" in text
    assert text.count("Machine: CPU") == 6
    ts = _load(out, "tscales")["devices"]["cpu"]
    assert f"**{bench_summary.num(ts['speedup'])}x**" in text
    for e in _load(out, "overhead")["devices"]["cpu"]["methods"].values():
        assert f"**{bench_summary.num(e['overhead_ratio'], 4)}**" in text
    assert "Device **cpu**, batch size 2" in text and "image size 32" in text
    assert "| `simplenet` |" in text and "| `draem` | cpu |" in text
    # a missing record is reported, not invented
    assert "Not run (no `memory.json`)" in bench_summary.render({})


def test_make_bench_runs_every_benchmark_into_benchmarks():
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    for script in ("bench_metrics.py", "bench_pipeline.py", "bench_snakemake.py", "bench_summary.py"):
        assert f"benchmarks/{script}" in recipe
    assert "benchmarks/summary.md" in recipe
