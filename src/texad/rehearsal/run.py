"""Run the paper config's workflow at paper size with shrunk counts, then check what it must have produced.

``texad rehearse`` (``make rehearse``; ``tests/test_rehearsal.py`` runs the ``test`` profile) builds the workspace
(:mod:`texad.rehearsal.workspace`), runs ``snakemake --configfile config.yaml <overlay>`` in it on the CPU with the
test-only switches on, builds the HTML report, and checks that

* every training job made at least one optimiser step (read back from each model file),
* every method scored at least two test images in every run (from each result JSON),
* the paper tables, the figures and the report were written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from texad.evaluation.thresholds import SUFFIX as THRESHOLD_SUFFIX
from texad.rehearsal.workspace import Sizes, build_workspace

__all__ = ["PROFILES", "Profile", "RehearsalError", "check_outputs", "merged_config", "rehearse"]


class RehearsalError(RuntimeError):
    """The rehearsal ran but something the paper config must produce is missing or did nothing."""


@dataclass(frozen=True)
class Profile:
    overlay: str  # relative to the repository root
    sizes: Sizes


#: ``test``: the test suite's (about 6 minutes on 2 cores); ``full``: ``make rehearse`` (about 40 minutes), a
#: DTD-Synthetic class too, every guidance and T-scales axis at one point, the full chain, two defect kinds.
PROFILES = {
    "test": Profile(
        "config/rehearsal.yaml",
        Sizes(
            n_train=2,
            n_test_good=1,
            n_test_per_defect=1,
            defects=("scratch",),
            dtd_categories=3,
            dtd_per_category=2,
        ),
    ),
    "full": Profile(
        "config/rehearsal-full.yaml",
        Sizes(
            n_train=2,
            n_test_good=1,
            n_test_per_defect=1,
            defects=("scratch", "hole"),
            dtd_categories=6,
            dtd_per_category=3,
        ),
    ),
}


def merged_config(root: Path, overlay: str) -> dict:
    """config.yaml with the overlay merged in as Snakemake merges two ``--configfile`` files, validated."""
    from snakemake.utils import update_config

    from texad.config import validate_config

    config = yaml.safe_load((root / "config.yaml").read_text())
    update_config(config, yaml.safe_load((root / overlay).read_text()))
    return validate_config(config)


def _snakemake(root: Path, workdir: Path, overlay: str, cores: int, env: dict, *extra: str) -> None:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), "--configfile", str(root / "config.yaml"), str(root / overlay), *extra]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log = workdir / "rehearsal-snakemake.log"
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
        raise RehearsalError(f"snakemake failed (exit {done.returncode}); full log in {log}:\n{tail}")


def _model_steps(path: Path) -> int:
    """Optimiser steps recorded in a model file (each trainer records its own summary)."""
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    summary = data.get("train") or data.get("summary") or {}
    if "steps" not in summary:
        raise RehearsalError(f"{path}: the model file records no optimiser steps")
    return int(summary["steps"])


def check_outputs(workdir: Path, config: dict) -> dict:
    """What the rehearsal must have produced (see the module docstring); returns a summary, raises otherwise."""
    from texad.plan import Plan

    workdir = Path(workdir)
    plan = Plan(config)
    models = sorted((workdir / "results" / "models").rglob("*.pt"))
    if not models:
        raise RehearsalError(f"{workdir}/results/models holds no model file")
    steps = {str(p.relative_to(workdir)): _model_steps(p) for p in models}
    idle = [p for p, n in steps.items() if n < 1]
    if idle:
        raise RehearsalError(f"training made no optimiser step for: {', '.join(idle)}")
    runs = {}
    for target in plan.final_outputs():
        if not (workdir / target).is_file():
            raise RehearsalError(f"{target} was not written")
    for path in sorted((workdir / "results" / "runs").rglob("*.json")):
        if path.name.endswith(THRESHOLD_SUFFIX):  # a run's thresholds, beside its result
            continue
        n = json.loads(path.read_text())["metrics"]["n_images"]
        runs[str(path.relative_to(workdir))] = n
        if n < 2:
            raise RehearsalError(f"{path}: scored {n} test image(s), the rehearsal needs 2 at least")
    expected = set(plan.method_results()) | {
        r for m in plan.enabled_methods() for r in plan.ablation_results(m)
    }
    missing = sorted(expected - set(runs))
    if missing:
        raise RehearsalError(f"results missing: {', '.join(missing)}")
    tables = sorted(str(p.relative_to(workdir)) for p in (workdir / "results" / "tables").glob("paper_*.md"))
    if not tables:
        raise RehearsalError("no paper table was written")
    report = workdir / "results" / "report.html"
    if not report.is_file() or report.stat().st_size == 0:
        raise RehearsalError(f"{report} was not written")
    return {"models": steps, "runs": runs, "paper_tables": tables, "report": str(report.relative_to(workdir))}


def rehearse(root: Path, workdir: Path, profile: str = "test", cores: int = 2) -> dict:
    """Build the workspace, run the workflow and its report, check the outputs; returns the checks' summary."""
    root, workdir = Path(root).resolve(), Path(workdir).resolve()
    chosen = PROFILES[profile]
    config = merged_config(root, chosen.overlay)
    classes = {d: config["datasets"][d]["classes"] for d in ("mvtec_ad", "dtd_synthetic")
               if config["datasets"][d]["enabled"]}  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    switches = build_workspace(workdir, classes, chosen.sizes)
    env = {
        **os.environ,
        **switches,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
    }
    _snakemake(root, workdir, chosen.overlay, cores, env)
    _snakemake(
        root, workdir, chosen.overlay, cores, env, "--report", str(workdir / "results" / "report.html")
    )
    summary = check_outputs(workdir, config)
    summary["wall_s"] = time.perf_counter() - start
    summary["profile"] = profile
    return summary
