"""Faults users meet on clusters, survived: a killed job, a failing job among many, a full disk, an
unwritable results folder. Each test asserts the message and that earlier results are intact."""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_workflow import BIN, ROOT, smk

from texad.cli import main

pytestmark = pytest.mark.slow


def tiny_method_b_config(classes, epochs=2) -> dict:
    """The demo config cut down to Method B on tiny synthetic classes (one job per stage)."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["datasets"]["synthetic"].update(classes=list(classes), image_size=64, n_train=4, n_test_good=2,
                                        n_test_per_defect=1)  # fmt: skip
    cfg["image_size"] = 32
    # holdout 0: the models train on the class folders themselves (these tests are about faults, not the split)
    cfg["validation"] = {"holdout": 0, "anomalies": ["scratch"]}
    for method in ("method_a", "simplenet", "draem"):
        cfg["methods"][method]["enabled"] = False
    cfg["methods"]["method_b"]["train"] = {
        "epochs": {"default": epochs},
        "batch_size": 2,
        "checkpoint_every": 1,
    }
    # every grid holds only the default point, which is not a point of its own: no ablation jobs
    cfg["methods"]["method_b"]["ablation"] = {"w": [4], "s": [0.5], "joint_w": [4], "joint_s": [0.5],
                                              "blur_sigma": [3], "t_start": [250]}  # fmt: skip
    return cfg


def write_config(folder: Path, cfg: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_file(path: Path) -> dict:
    """What a trained DDPM file holds: its (EMA) weights, trainer settings, model hash and config block."""
    return torch.load(path, map_location="cpu", weights_only=True)


def test_killed_training_resumes_and_ends_with_the_uninterrupted_model(tmp_path):
    cfg = tiny_method_b_config(["wood"], epochs=60)
    from texad.config import load_config
    from texad.plan import Plan

    # the DDPM file is the target: the run and its feature adaptation read it, and equal weights score equally
    ref_dir = tmp_path / "reference"
    ref_config = write_config(ref_dir, cfg)
    target = Plan(load_config(ref_config)).model_path("ddpm", "synthetic", "wood", 0)
    # the reference: the same config, never interrupted
    run = smk(target, "--cores", "1", "--configfile", str(ref_config), cwd=ref_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    (ref_model,) = (ref_dir / "results" / "models").rglob("ddpm-*.pt")

    work = tmp_path / "killed"
    config = write_config(work, cfg)
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           target, "--cores", "1", "--configfile", str(config)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    ckpt_root = work / "resources" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(ckpt_root.rglob("ddpm-*/*.pt")):
        assert proc.poll() is None, "the workflow ended before its first training checkpoint"
        assert time.monotonic() < deadline, "no training checkpoint within 300 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the node died: snakemake and its job, no clean-up
    proc.wait()
    models = work / "results" / "models"
    assert not list(models.rglob("ddpm-*.pt")), (
        "a killed training left a model that Snakemake would take as done"
    )
    assert not list((work / "results").rglob("runs/**/*.json"))
    layouts = sorted((work / "results" / "data").rglob("layout.json"))
    before = {p: digest(p) for p in layouts}

    # as after a node failure: snakemake names the stale lock and how to clear it; then the run goes on
    locked = smk(target, "--cores", "1", "--configfile", str(config), cwd=work)
    assert locked.returncode != 0 and "--unlock" in locked.stderr
    assert smk("--unlock", "--configfile", str(config), cwd=work).returncode == 0
    again = smk(target, "--cores", "1", "--rerun-incomplete", "--configfile", str(config), cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    (log,) = (work / "results" / "logs" / "train_diffusion").rglob("*.log")
    assert "resuming from" in log.read_text()
    (model,) = models.rglob("ddpm-*.pt")
    assert model.name == ref_model.name  # the same settings hash
    # ...the one Method B's module gives the config (the workflow names the file by it)
    from texad.methods import get
    from texad.methods.base import RunKey
    from texad.methods.jobs import method_settings

    settings = method_settings(load_config(config), "method_b", "wood")
    assert model.name == get("method_b").model_file(
        "ddpm", settings, RunKey("synthetic", "wood", 0, "default")
    )
    resumed, reference = model_file(model), model_file(ref_model)
    assert resumed["model_hash"] == reference["model_hash"] and resumed["settings"] == reference["settings"]
    # the file keeps the config block it was trained with (texad predict reads its inference keys)
    assert resumed["config"] == reference["config"] == settings.to_config()
    got, want = resumed["state_dict"], reference["state_dict"]
    assert got.keys() == want.keys() and got
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), f"{name} differs from the uninterrupted run"
    assert {p: digest(p) for p in layouts} == before  # finished jobs were not redone


def test_keep_going_finishes_the_healthy_class_and_names_the_broken_file(tmp_path):
    cfg = tiny_method_b_config(["wood", "woven"])
    # no feature adaptation: one training job per class
    cfg["methods"]["method_b"]["feature_adaptation"] = {"epochs": {"default": 0}}
    config = write_config(tmp_path, cfg)
    first = smk("--cores", "2", "--configfile", str(config), "--until", "synth_class", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    broken = tmp_path / "resources" / "datasets" / "synthetic" / "woven" / "train" / "good" / "001.png"
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated PNG, as after an interrupted copy
    run = smk("--cores", "2", "--keep-going", "--configfile", str(config), cwd=tmp_path)
    assert run.returncode != 0
    runs = tmp_path / "results" / "runs" / "synthetic"
    assert (runs / "wood" / "method_b" / "default" / "seed0.json").is_file()  # the healthy class completed
    assert not (runs / "woven").exists()
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "logs").rglob("*woven*.log"))
    logs += "".join(p.read_text() for p in (tmp_path / "results" / "logs").rglob("woven/**/*.log"))
    assert "001.png" in logs, logs[-2000:]
    # the data stage (already done before the run) is not touched by the failure
    assert broken.stat().st_size == 100
    wood_result = runs / "wood" / "method_b" / "default" / "seed0.json"
    stamp = digest(wood_result)
    # repairing the file and re-running finishes the rest, and leaves the finished class alone
    broken.unlink()
    redo = smk("results/runs/synthetic/woven/method_b/default/seed0.json", "--cores", "2", "--forcerun", "synth_class",
               "--configfile", str(config), cwd=tmp_path)  # fmt: skip
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert (runs / "woven" / "method_b" / "default" / "seed0.json").is_file()
    assert digest(wood_result) == stamp


def test_full_disk_is_a_clear_error_and_keeps_the_earlier_file(tmp_path, monkeypatch, capsys):
    md = tmp_path / "t.md"
    md.write_text("| a | b |\n|---|---:|\n| x | 1 |\n")
    out = tmp_path / "t.html"
    out.write_text("the earlier table")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("texad.atomic.os.fsync", no_space)
    assert main(["table-html", "--markdown", str(md), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(out) in err and "free space" in err
    assert out.read_text() == "the earlier table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.html", "t.md"]  # no temp file left behind


def test_unwritable_results_folder_is_a_clear_error(tmp_path, capsys):
    md = tmp_path / "t.md"
    md.write_text("| a | b |\n|---|---:|\n| x | 1 |\n")
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")  # e.g. a stray file where the results folder should be
    assert main(["table-html", "--markdown", str(md), "--out", str(blocker / "tables" / "t.html")]) == 1
    err = capsys.readouterr().err
    assert "texad: error:" in err and str(blocker) in err
    assert blocker.read_text() == "not a folder"
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            assert main(["table-html", "--markdown", str(md), "--out", str(ro / "t.html")]) == 1
            assert str(ro) in capsys.readouterr().err
        finally:
            ro.chmod(0o700)
