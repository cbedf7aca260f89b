"""The workflow on a real one-node SLURM cluster (munged, MariaDB + slurmdbd, slurmctld, slurmd on 127.0.0.1),
through `snakemake --profile profiles/slurm`: every non-local job is submitted with sbatch and accounted
(`sacct` lists it COMPLETED), and the results are bit-identical to a local run of the same config and seed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from services import require
from slurm_cluster import ACCOUNT, PARTITION, SYSTEM_PATH, SlurmCluster, install_packages, poll

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)
PROFILE = ROOT / "profiles" / "slurm"
CLASS = "woven"
# the data stage, the four trainings (DDPM, its adapted feature extractor, score model, SimpleNet) and one
# evaluation per method; the metric tables come from the head node's `aggregate` (a localrule)
TARGETS = [f"results/data/synthetic/{CLASS}/layout.json", "results/tables/image_auroc.csv"]
METRIC_TABLES = ["image_auroc.csv", "image_auroc.md", "pixel_auroc.md", "aupro.md", "pixel_ap.md"]
SNAKEMAKE_TIMEOUT = 1200


def tiny_config() -> dict:
    """The demo config shrunk like tests/test_workflow.py's tiny run, on one class (DRAEM, which takes its
    anomalies from the other classes, is off)."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["datasets"]["synthetic"].update(classes=[CLASS], image_size=64, n_train=3, n_test_good=2,
                                        n_test_per_defect=1)  # fmt: skip
    cfg["image_size"] = 32
    cfg["validation"] = {"holdout": 0, "anomalies": ["scratch"]}  # 3 training images: none held out
    cfg["methods"]["method_b"]["train"] = {"epochs": {"default": 2}, "batch_size": 2}
    cfg["methods"]["method_b"]["feature_adaptation"] = {"epochs": {"default": 1}, "batch_size": 2}
    cfg["methods"]["simplenet"].update(meta_epochs=1, gan_epochs=1, image_size=32, resize=32)
    cfg["methods"]["draem"]["enabled"] = False
    cfg["methods"]["method_a"].update(
        sde={"sigma_max": 1.0, "n_steps": 10}, network={"preset": "tiny", "nf": 8},
        train={"batch_size": 2, "iterations": 3, "warmup": 1}, inference={"draws": 1, "batch_size": 4},
    )  # fmt: skip
    # no ablation point and no selection: the cluster path is what this test covers (test_workflow runs them)
    cfg["methods"]["method_a"]["ablation"] = {"n_scales": [], "steps_per_scale": [], "sigma_hi": [],
                                              "full_chain": False, "metric": [], "shared_ddpm": False,
                                              "speed_batches": []}  # fmt: skip
    cfg["methods"]["method_b"]["ablation"] = {"w": [], "s": [], "joint_w": [], "joint_s": [], "blur_sigma": [],
                                              "t_start": []}  # fmt: skip
    for block in cfg["methods"].values():
        block["select"] = {key: [] for key in block.get("select", {})}
    return cfg


def snakemake_env() -> dict[str, str]:
    """What a user's shell has: the venv first on PATH, no SLURM_CONF (jobs read /etc/slurm/slurm.conf)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = os.pathsep.join([BIN, env.get("PATH", ""), SYSTEM_PATH])
    return env


class Snakemake:
    """`python -m snakemake` in the background, output to files; stopped with SIGINT (it ignores SIGTERM while
    it waits for jobs, see the spec's O6) and then SIGKILL if it overruns."""

    def __init__(self, args: list[str], workdir: Path, name: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.out, self.err = workdir.parent / f"{name}.stdout", workdir.parent / f"{name}.stderr"
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
               str(workdir), *args]  # fmt: skip
        self.cmd = cmd
        self.t0 = time.monotonic()
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=snakemake_env()
            )
        self.ended: float | None = None
        self.timed_out = False
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        self.ended = time.monotonic()

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.t0

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.stop()
            rc = -1
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        head = f"timed out after {SNAKEMAKE_TIMEOUT} s; " if self.timed_out else ""
        return f"--- {head}snakemake stderr+stdout (last {chars} chars) ---\n" + self.output()[-chars:]


def planned_jobs(output: str) -> dict[str, int]:
    """Snakemake's first `Job stats:` table: jobs per rule."""
    block = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def submitted_jobs(output: str) -> dict[str, dict]:
    """What Snakemake submitted, by SLURM job id: the rule and the resources it asked for."""
    blocks = {}
    for m in re.finditer(r"^rule (\w+):\n((?:    .*\n)+)", output, re.M):
        body = m.group(2)
        resources = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", body).group(1).split(", "))
        threads = re.search(r"threads: (\d+)", body)  # Snakemake leaves out `threads: 1`
        blocks[re.search(r"jobid: (\d+)", body).group(1)] = {
            "rule": m.group(1),
            "runtime": int(resources["runtime"]),
            "mem_mb": int(resources["mem_mb"]),
            "threads": int(threads.group(1)) if threads else 1,
        }
    submitted = re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", output, re.M)
    return {slurm_id: blocks[job] for job, slurm_id in submitted}


def minutes(timelimit: str) -> int:
    """sacct's Timelimit ([days-]hours:minutes:seconds) in minutes."""
    days, _, hms = timelimit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)


def submitted_rule(comment: str) -> str:
    """The rule of a job from the comment the slurm plugin gives it (`rule_<rule>[_wildcards_<wildcards>]`)."""
    assert comment.startswith("rule_"), comment
    return comment[len("rule_") :].split("_wildcards_", 1)[0]


# what a model file or result JSON records about wall time, which differs between two runs of the same job
TIMING_KEYS = {"timings", "created", "seconds", "images_per_s"}


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts and lists as {path: leaf}, without timing entries."""
    if isinstance(value, dict):
        items = (
            (f"{prefix}/{k}", v) for k, v in value.items() if k not in TIMING_KEYS and "timing" not in str(k)
        )
    elif isinstance(value, list | tuple):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    return {k: v for key, item in items for k, v in flatten(item, key).items()}


def model_differences(a: Path, b: Path) -> list[str]:
    """Where two model files differ: every tensor bit for bit, every other entry but the training's wall time
    (which the files record, so their bytes and sha256 differ between two runs)."""
    import torch

    fa, fb = (flatten(torch.load(p, map_location="cpu", weights_only=False)) for p in (a, b))
    diffs = [f"only in one: {sorted(set(fa) ^ set(fb))}"] if set(fa) != set(fb) else []
    for key in sorted(set(fa) & set(fb)):
        va, vb = fa[key], fb[key]
        if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
            same = va.dtype == vb.dtype and va.shape == vb.shape and torch.equal(va, vb)
        else:
            same = type(va) is type(vb) and va == vb
        if not same:
            diffs.append(key)
    return diffs


def stable(result: dict) -> dict:
    """A result JSON without its wall times, and without the sha256 of the adapted feature extractor's file
    (the file records its training's wall time; its tensors are compared instead)."""
    out = flatten(result)
    return {k: v for k, v in out.items() if k != "/backbone/adapted/sha256"}


def compare_outputs(slurm: Path, local: Path) -> list[str]:
    """What differs between the outputs of the two runs (empty: identical)."""
    diffs = []

    def files(root: Path, sub: str, pattern: str) -> dict[str, Path]:
        return {str(p.relative_to(root)): p for p in sorted((root / sub).rglob(pattern))}

    models = files(slurm, "results/models", "*.pt"), files(local, "results/models", "*.pt")
    if set(models[0]) != set(models[1]):  # the names carry the models' identity hashes
        diffs.append(f"model files: slurm {sorted(models[0])} != local {sorted(models[1])}")
    for name in sorted(set(models[0]) & set(models[1])):
        if differ := model_differences(models[0][name], models[1][name]):
            diffs.append(f"{name}: differs in {differ}")
    runs = files(slurm, "results/runs", "*.json"), files(local, "results/runs", "*.json")
    if set(runs[0]) != set(runs[1]) or not runs[0]:
        diffs.append(f"result files: slurm {sorted(runs[0])} != local {sorted(runs[1])}")
    for name in sorted(set(runs[0]) & set(runs[1])):
        a, b = (json.loads(r[name].read_text()) for r in runs)
        if a["metrics"] != b["metrics"]:
            diffs.append(f"{name}: metrics differ: slurm {a['metrics']} != local {b['metrics']}")
        a, b = stable(a), stable(b)
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            diffs.append(f"{name}: differs in {keys}")
    maps = files(slurm, "results/maps", "*.npz"), files(local, "results/maps", "*.npz")
    if set(maps[0]) != set(maps[1]):
        diffs.append(f"map files: slurm {sorted(maps[0])} != local {sorted(maps[1])}")
    for name in sorted(set(maps[0]) & set(maps[1])):
        with np.load(maps[0][name]) as a, np.load(maps[1][name]) as b:
            if set(a.files) != set(b.files) or any(not np.array_equal(a[k], b[k]) for k in a.files):
                diffs.append(f"{name}: anomaly maps differ")
    for rel in [f"results/data/synthetic/{CLASS}/layout.json"] + [
        f"results/tables/{t}" for t in METRIC_TABLES
    ]:
        a, b = slurm / rel, local / rel
        if not a.is_file() or not b.is_file() or a.read_text() != b.read_text():
            diffs.append(f"{rel}: differs (or is missing)")
    return diffs


def slurm_overrides(cpus: int) -> list[str]:
    """The test-only command-line overrides of profiles/slurm for this cluster and this CPU config."""
    profile = yaml.safe_load((PROFILE / "profile.yaml").read_text())
    # a command-line option replaces the profile's whole entry: keep its defaults, fill in the site's values
    defaults = {**profile["default-resources"], "slurm_partition": PARTITION, "slurm_account": ACCOUNT}
    # the profile sizes its GPU rules for the paper config on GPU nodes; this CPU-only config on a node without
    # GPUs takes the rules' own requests (device: cpu -> gpu 0), as a user of the demo would
    gpu_rules = [f"{rule}:gpu=0" for rule in profile.get("set-resources", {})]
    return [
        "--default-resources", *(f"{k}={v}" for k, v in defaults.items()),
        *(["--set-resources", *gpu_rules] if gpu_rules else []),
        "--jobs", str(2 * cpus),
        # the plugin's first status check comes after 40 s by default; these jobs take seconds
        "--slurm-init-seconds-before-status-checks", "2",
    ]  # fmt: skip


@pytest.fixture
def cluster(tmp_path):
    t0 = time.monotonic()
    reason = install_packages()
    if reason:
        require(f"cannot set up a SLURM cluster: {reason}")
    cluster = SlurmCluster()
    cluster.setup_began = t0  # for the test's wall time (installing and starting included)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop(keep_logs_in=tmp_path / "slurm-logs")  # a no-op when the test stopped it itself


@pytest.mark.slow
def test_workflow_runs_on_a_slurm_cluster_like_locally(cluster, tmp_path, record_property):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    # the local reference run (same config, seed and threads per job) beside the cluster run: the cluster run
    # mostly waits for status polls, so the two share the 2 cores well
    local = Snakemake(["--cores", "2", f"--configfile={config}", *TARGETS], tmp_path / "local", "local")
    slurm = Snakemake(
        ["--profile", str(PROFILE), *slurm_overrides(cluster.cpus), f"--configfile={config}", *TARGETS],
        tmp_path / "slurm",
        "slurm",
    )
    try:
        slurm_rc = slurm.wait(SNAKEMAKE_TIMEOUT)
        local_rc = local.wait(SNAKEMAKE_TIMEOUT)
    finally:
        slurm.stop()
        local.stop()
    assert slurm_rc == 0, f"snakemake --profile slurm: rc {slurm_rc}\n{slurm.tail()}\n{cluster.log_tails()}"
    assert local_rc == 0, f"local snakemake: rc {local_rc}\n{local.tail()}"
    output = slurm.output()
    context = f"\n{slurm.tail()}\n{cluster.log_tails()}"

    # what Snakemake planned, and which of it ran on the head node
    planned = planned_jobs(output)
    local_rules = set(re.findall(r"^localrule (\w+):", output, re.M))
    expected = {rule: n for rule, n in planned.items() if rule not in local_rules}
    assert local_rules == {"aggregate"}, local_rules
    assert {"train_diffusion", "train_score_model", "train_simplenet", "adapt_features"} <= set(expected)
    assert {"method_a", "method_b", "simplenet"} <= set(expected)
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, f"no SLURM run ID in Snakemake's output{context}"
    run_id = run_id.group(1)

    # every one of them was submitted with sbatch and accounted: sacct lists it, COMPLETED, under the account
    def accounted():
        jobs = [j for j in cluster.sacct() if j["JobName"] == run_id]
        unfinished = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED"}
        done = len(jobs) >= sum(expected.values()) and not any(j["State"] in unfinished for j in jobs)
        return jobs if done else None

    jobs = poll(
        accounted, 60, "every job in sacct", interval=1, on_fail=lambda: f"{cluster.sacct()}{context}"
    )
    assert all(j["State"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in jobs), f"{jobs}{context}"
    assert all(j["Account"] == ACCOUNT and j["Partition"] == PARTITION for j in jobs), jobs
    submitted: dict[str, int] = {}
    for job in jobs:
        submitted[submitted_rule(job["Comment"])] = submitted.get(submitted_rule(job["Comment"]), 0) + 1
    assert submitted == expected, (
        f"sbatch jobs per rule {submitted} != planned non-local jobs {expected}{context}"
    )
    assert len(jobs) == sum(expected.values())
    # the ids Snakemake reported are the ones sacct lists, with what each rule asked for: its runtime in
    # minutes, its memory and one CPU per thread
    requested = submitted_jobs(output)
    assert set(requested) == {j["JobID"] for j in jobs}, (requested, jobs)
    for job in jobs:
        want = requested[job["JobID"]]
        assert submitted_rule(job["Comment"]) == want["rule"], (job, want)
        got = {"runtime": minutes(job["Timelimit"]), "mem_mb": int(job["ReqMem"].rstrip("M")),
               "threads": int(job["AllocCPUS"])}  # fmt: skip
        assert got == {k: want[k] for k in got}, (job, want)

    # the same results as the local run, bit for bit
    diffs = compare_outputs(tmp_path / "slurm", tmp_path / "local")
    assert not diffs, "SLURM and local results differ:\n" + "\n".join(diffs)

    # every daemon stopped by PID, nothing left behind, /etc/slurm/slurm.conf removed
    cluster.stop(keep_logs_in=tmp_path / "slurm-logs")
    left = poll(lambda: not cluster.leftover_processes(), 30, "no SLURM processes left", on_fail=lambda: str(
        cluster.leftover_processes()))  # fmt: skip
    assert left and not cluster.killed_orphans, cluster.killed_orphans
    assert not Path("/etc/slurm/slurm.conf").is_symlink()

    wall = time.monotonic() - cluster.setup_began
    timings = {
        "cluster_start_s": round(cluster.start_seconds, 1),
        "slurm_run_s": round(slurm.seconds, 1),
        "local_run_s": round(local.seconds, 1),
        "test_wall_s": round(wall, 1),
        "sbatch_jobs": len(jobs),
        "sbatch_jobs_per_rule": submitted,
    }
    for key, value in timings.items():
        record_property(key, value)
    print(f"\nslurm test: {json.dumps(timings)}")
