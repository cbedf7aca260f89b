"""The texad command: synth is deterministic and atomic; user errors exit 1 with a message naming the cause."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from texad import cli
from texad.data import synth

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--image-size", "48", "--n-train", "2", "--n-test-good", "1", "--n-test-per-defect", "1"]


def texad(*args):
    return subprocess.run([sys.executable, "-m", "texad", *args], capture_output=True, text=True, timeout=300)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}  # fmt: skip


def test_synth_same_seed_same_bytes_and_marker(tmp_path):
    for out in ("a", "b"):
        run = texad("synth", "--class", "wood", "--out", str(tmp_path / out), "--seed", "7", *SMALL)
        assert run.returncode == 0, run.stderr
    assert tree_digest(tmp_path / "a" / "wood") == tree_digest(tmp_path / "b" / "wood")
    marker = json.loads((tmp_path / "a" / "wood.manifest.json").read_text())
    assert marker["counts"]["train/good"] == 2 and marker["mode"] == "RGB"
    other = texad("synth", "--class", "wood", "--out", str(tmp_path / "c"), "--seed", "8", *SMALL)
    assert other.returncode == 0
    assert tree_digest(tmp_path / "c" / "wood") != tree_digest(tmp_path / "a" / "wood")


def test_synth_takes_unset_sizes_from_the_config(tmp_path):
    run = texad("synth", "--class", "woven", "--out", str(tmp_path), "--config", str(ROOT / "config" / "demo.yaml"),
                "--n-train", "1", "--n-test-good", "1", "--n-test-per-defect", "1")  # fmt: skip
    assert run.returncode == 0, run.stderr
    marker = json.loads((tmp_path / "woven.manifest.json").read_text())
    assert marker["image_size"] == 128 and marker["mode"] == "L"  # image_size from config/demo.yaml


def test_killed_synth_leaves_no_class_and_no_marker(tmp_path, monkeypatch):
    real_save = synth._save_png
    calls = {"n": 0}

    def dying_save(arr, path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a job killed half-way
        real_save(arr, path)

    monkeypatch.setattr(synth, "_save_png", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["synth", "--class", "carpet", "--out", str(tmp_path), *SMALL])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no class, no marker, no temp folder
    monkeypatch.setattr(synth, "_save_png", real_save)
    (tmp_path / "carpet").mkdir()  # a stale half class from an older killed run is replaced
    (tmp_path / "carpet" / "junk.png").write_bytes(b"x")
    assert cli.main(["synth", "--class", "carpet", "--out", str(tmp_path), *SMALL]) == 0
    assert not (tmp_path / "carpet" / "junk.png").exists()
    assert (tmp_path / "carpet.manifest.json").is_file()


def test_user_errors_exit_1_with_a_message(tmp_path):
    run = texad("synth", "--class", "marble", "--out", str(tmp_path), *SMALL)
    assert run.returncode == 1 and "texad: error: name:" in run.stderr and "marble" in run.stderr
    run = texad("download", "mvtec_ad", "--root", str(tmp_path / "r"), "--cache", str(tmp_path / "c"),
                "--marker", str(tmp_path / "m.json"))  # fmt: skip
    assert run.returncode == 1
    assert "datasets.mvtec_ad.accept_license" in run.stderr and "CC BY-NC-SA 4.0" in run.stderr
    assert not (tmp_path / "m.json").exists()
    run = texad("check-class", "--dataset", "mvtec_ad", "--class-dir", str(tmp_path / "carpet"),
                "--out", str(tmp_path / "l.json"))  # fmt: skip
    assert run.returncode == 1 and "carpet does not exist" in run.stderr


def test_method_a_commands_name_what_is_wrong(tmp_path):
    common = [
        "--class-dir",
        str(tmp_path),
        "--dataset",
        "synthetic",
        "--class",
        "wood",
        "--out",
        str(tmp_path / "m"),
    ]
    run = texad("train-diffusion", "--kind", "score", *common, "--ckpt-dir", str(tmp_path / "c"))
    assert run.returncode == 1 and "needs --settings (the methods.method_a block as JSON)" in run.stderr
    run = texad("train-diffusion", *common, "--ckpt-dir", str(tmp_path / "c"))
    assert run.returncode == 1 and "--kind ddpm needs --epochs" in run.stderr
    settings = json.dumps({"ablation": {"n_scales": [1], "steps_per_scale": [5], "sigma_hi": [0.4]}})
    run = texad("train-diffusion", "--kind", "score", "--settings", settings, *common, "--ckpt-dir",
                str(tmp_path / "c"), "--expect-hash", "0123")  # fmt: skip
    assert run.returncode == 1 and "the requested model file is for 0123" in run.stderr
    run = texad("method-a", *common, "--settings", settings, "--variant", "K2_n5_s0.4", "--model",
                str(tmp_path / "x.pt"), "--maps", str(tmp_path / "m.npz"))  # fmt: skip
    assert run.returncode == 1
    assert "unknown Method A variant 'K2_n5_s0.4'" in run.stderr and "K1_n5_s0.4, full_chain" in run.stderr
    assert not (tmp_path / "m").exists()


def test_check_class_on_a_synthetic_class(tmp_path):
    assert cli.main(["synth", "--class", "woven", "--out", str(tmp_path), *SMALL]) == 0
    out = tmp_path / "layout.json"
    code = cli.main(["check-class", "--dataset", "synthetic", "--class-dir", str(tmp_path / "woven"),
                     "--manifest", str(tmp_path / "woven.manifest.json"), "--out", str(out)])  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["n_defective"] == 4
    (tmp_path / "woven" / "train" / "good" / "000.png").unlink()
    assert cli.main(["check-class", "--dataset", "synthetic", "--class-dir", str(tmp_path / "woven"),
                     "--manifest", str(tmp_path / "woven.manifest.json"), "--out", str(out)]) == 1  # fmt: skip


def test_download_reads_source_and_licence_from_the_config(tmp_path):
    import yaml

    copy = tmp_path / "my_copy"
    assert cli.main(["synth", "--class", "woven", "--out", str(copy), *SMALL]) == 0
    (copy / "woven").rename(copy / "Mesh_114")
    cfg = {
        "datasets": {"dtd_synthetic": {"enabled": True, "classes": ["Mesh_114"], "path": str(copy)}},
        "methods": {},
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    args = ["download", "dtd_synthetic", "--config", str(cfg_path), "--root", str(tmp_path / "root"),
            "--cache", str(tmp_path / "cache"), "--marker", str(tmp_path / "staged.json")]  # fmt: skip
    assert cli.main(args) == 1  # licence not accepted in the config
    assert not (tmp_path / "staged.json").exists()
    cfg["datasets"]["dtd_synthetic"]["accept_license"] = True
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert cli.main(args) == 0
    marker = json.loads((tmp_path / "staged.json").read_text())
    assert marker["source"] == "path" and marker["classes"] == ["Mesh_114"]


def test_stage_weights_refuses_a_wrong_file(tmp_path):
    fake = tmp_path / "wide_resnet50_2.pth"
    fake.write_bytes(b"not the ImageNet weights")
    run = texad("stage-weights", "wide_resnet50_2", "--cache", str(tmp_path / "cache"), "--source", str(fake))
    assert run.returncode == 1 and "does not match 95faca4d" in run.stderr
    assert not list((tmp_path / "cache").rglob("*.pth"))  # nothing unverified reaches the cache


def test_cuda_on_a_machine_without_it_is_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' was requested but torch sees no CUDA device"):
        cli.resolve_device("cuda")
    assert cli.resolve_device("auto") == "cpu"
