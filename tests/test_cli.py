"""The texad command: synth is deterministic and atomic; ``texad train`` and ``texad run`` take their settings as
one validated block (JSON text or a YAML file); user errors exit 1 with a message naming the cause."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from texad import cli
from texad.data import synth
from texad.data.synth import generate_class
from texad.diffusion.settings import DiffusionTrainSettings
from texad.methods import get, make_settings
from texad.methods.base import RunKey

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
    # a job's settings without the block it reads
    run = texad("train", "ddpm", "--settings", '{"image_size": 32}', "--dataset", "synthetic", "--class", "wood",
                "--seed", "0", "--class-dir", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--ckpt-dir",
                str(tmp_path / "ck"))  # fmt: skip
    assert run.returncode == 1 and run.stderr.startswith("texad: error:")
    assert "no methods.method_b block" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "m.pt").exists()


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
    from texad.methods.base import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' was requested but torch sees no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


# ------------------------------------------------------------------------ texad train / texad run
RUN = RunKey("synthetic", "wood", 0, "default")
RUNTIME = {"run_name": "t", "device": "cpu", "evaluation": {"resolution": 32}}
#: a DDPM of one epoch; train.ema, grad_clip and weight_decay written as ints (0, not 0.0)
DDPM_INTS = {
    **RUNTIME,
    "image_size": 32,
    "methods": {
        "method_b": {
            "diffusion": {"preset": "tiny"},
            "train": {"epochs": {"default": 1}, "batch_size": 2, "ema": 0, "grad_clip": 0, "weight_decay": 0},
            "inference": {"t_start": 100, "skip": 50, "blur_kernel": 15, "feature_size": 64,
                          "feature_backbone": "efficientnet_lite0", "batch_size": 4},
        }
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def wood(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_data")
    generate_class(root, "wood", image_size=48, n_train=4, n_test_good=2, n_test_per_defect=1, seed=0)
    return root / "wood"


def _job(*args: str, class_dir: Path) -> list[str]:
    return [*args, "--dataset", RUN.dataset, "--class", RUN.class_name, "--seed", str(RUN.seed), "--class-dir",
            str(class_dir)]  # fmt: skip


def _train(settings: str, class_dir: Path, out: Path, *extra: str) -> int:
    return cli.main(_job("train", "ddpm", "--settings", settings, class_dir=class_dir) + [
        "--out", str(out), "--ckpt-dir", str(out.parent / f"{out.stem}_ckpt"), *extra])  # fmt: skip


def _float_hash() -> str:
    """The DDPM's identity with ema, grad_clip and weight_decay as floats, built without the config package."""
    return DiffusionTrainSettings(
        dataset="synthetic", class_name="wood", preset="tiny", image_size=32, timesteps=1000, beta_start=1e-4,
        beta_end=0.02, epochs=1, batch_size=2, lr=3e-4, weight_decay=0.0, optimizer="adam", ema=0.0, grad_clip=0.0,
        seed=0, t_max=None, holdout=None,
    ).model_hash()  # fmt: skip


@pytest.fixture(scope="module")
def ddpm(wood, one_torch_thread, tmp_path_factory) -> Path:
    """The DDPM of ``DDPM_INTS``, trained by ``texad train ddpm`` with its settings as JSON text."""
    out = tmp_path_factory.mktemp("cli_models") / "json.pt"
    assert _train(json.dumps(DDPM_INTS), wood, out) == 0
    return out


def test_ints_where_the_schema_says_number_hash_as_floats(wood, ddpm, tmp_path):
    """train.ema/grad_clip/weight_decay written as 0 train the model that 0.0 names (the int/float hash bug):
    --expect-hash computed from the floats accepts the ints."""
    assert _train(json.dumps(DDPM_INTS), wood, tmp_path / "expected.pt", "--expect-hash", _float_hash()) == 0
    assert torch.load(tmp_path / "expected.pt", weights_only=True)["model_hash"] == _float_hash()
    stored = torch.load(ddpm, map_location="cpu", weights_only=True)
    assert stored["model_hash"] == _float_hash()
    for key in ("ema", "grad_clip", "weight_decay"):
        value = stored["settings"][key]
        assert value == 0 and isinstance(value, float), key
        assert isinstance(stored["config"]["methods"]["method_b"]["train"][key], float), key
    floats = {"epochs": {"default": 1}, "batch_size": 2, "ema": 0.0, "grad_clip": 0.0, "weight_decay": 0.0}
    settings = make_settings("method_b", {"diffusion": {"preset": "tiny"}, "train": floats}, class_name="wood",
                             image_size=32)  # fmt: skip
    assert get("method_b").model_file("ddpm", settings, RUN) == f"ddpm-{_float_hash()}.pt"
    # the model file keeps its config block: the train keys as normalised, the inference keys as given
    assert stored["config"]["methods"]["method_b"]["inference"]["t_start"] == 100
    assert stored["train"]["epochs"] == 1


def test_settings_as_json_text_and_as_a_yaml_file_train_the_same_model(wood, ddpm, tmp_path, capsys):
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(DDPM_INTS))
    assert "ema: 0\n" in path.read_text()  # ints in the file too
    assert _train(str(path), wood, tmp_path / "yaml.pt") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["precision"] == "fp32"
    a = torch.load(ddpm, map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "yaml.pt", map_location="cpu", weights_only=True)
    assert a["model_hash"] == b["model_hash"] and a["config"] == b["config"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, tensor in a["state_dict"].items():  # seeded CPU training: the same weights
        assert torch.equal(tensor, b["state_dict"][name]), name


def test_run_writes_the_result_and_the_maps(wood, ddpm, tmp_path, capsys):
    """``texad run method_b`` on the trained DDPM, its settings given with floats where it was trained with ints."""
    settings = json.loads(json.dumps(DDPM_INTS))
    settings["methods"]["method_b"]["train"].update(ema=0.0, grad_clip=0.0, weight_decay=0.0)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    out, maps = tmp_path / "runs" / "seed0.json", tmp_path / "maps" / "seed0.npz"
    args = _job("run", "method_b", "--settings", str(path), class_dir=wood)
    assert cli.main([*args, "--model", str(ddpm), "--out", str(out), "--maps", str(maps)]) == 0
    assert "method_b synthetic/wood default seed 0: image AUROC" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["method"] == "method_b" and result["variant"] == "default" and result["seed"] == 0
    assert result["model_hash"] == _float_hash()
    block = result["extra"]["config"]["methods"]["method_b"]
    assert block["train"]["ema"] == 0.0 and block["inference"]["t_start"] == 100
    assert all(axis == [] for axis in block["ablation"].values())  # the grid is not what the run ran
    assert result["timings"]["nfe_per_image"] == 2 * 2  # 2 steps x (1 + blur guidance)
    for name in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap"):
        assert 0.0 <= result["metrics"][name] <= 1.0, name
    n_test = len(list((wood / "test").rglob("*.png")))
    with np.load(maps) as npz:
        assert npz["maps"].shape == (n_test, 32, 32) and npz["scores"].shape == (n_test,)
        assert npz["reconstructions"].shape == (n_test, 32, 32, 3)


def test_job_errors_name_what_is_wrong(wood, ddpm, tmp_path, capsys):
    def error(argv: list[str]) -> str:
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("texad: error:"), err
        return err

    out = tmp_path / "m.pt"
    err = error(_job("train", "ddpm", "--settings", json.dumps(DDPM_INTS), class_dir=wood)
                + ["--out", str(out), "--ckpt-dir", str(tmp_path / "ck"), "--expect-hash", "0123"])  # fmt: skip
    assert f"the settings hash to {_float_hash()}, but the requested model file is for 0123" in err
    assert not out.exists() and not (tmp_path / "ck").exists()
    err = error(_job("train", "ddpm", "--settings", '{"image_size": 32}', class_dir=wood)
                + ["--out", str(out), "--ckpt-dir", str(tmp_path / "ck")])  # fmt: skip
    assert "no methods.method_b block" in err
    run = ["--model", str(ddpm), "--out", str(tmp_path / "r.json"), "--maps", str(tmp_path / "r.npz")]
    err = error(_job("run", "simplenet", "--settings", '{"methods": {"draem": {}}}', class_dir=wood) + run)
    assert "no methods.simplenet block" in err
    bad = {"methods": {"method_b": {"train": {"epoch": 1}}}}
    err = error(_job("train", "ddpm", "--settings", json.dumps(bad), class_dir=wood)
                + ["--out", str(out), "--ckpt-dir", str(tmp_path / "ck")])  # fmt: skip
    assert "methods.method_b.train.epoch: unknown key" in err and "epochs" in err
    err = error(_job("run", "method_b", "--settings", str(tmp_path / "nowhere.yaml"), class_dir=wood) + run)
    assert "nowhere.yaml does not exist" in err
    ablation = {"network": {"preset": "tiny"},
                "ablation": {"n_scales": [1], "steps_per_scale": [5], "sigma_hi": [0.4]}}  # fmt: skip
    settings = json.dumps({"image_size": 32, "methods": {"method_a": ablation}})
    err = error(
        _job("run", "method_a", "--settings", settings, "--variant", "K2_n5_s0.4", class_dir=wood) + run
    )
    assert "unknown method_a variant 'K2_n5_s0.4'" in err and "K1_n5_s0.4, full_chain" in err
    # a DDPM trained with other settings is refused by the run, naming both hashes
    other = json.loads(json.dumps(DDPM_INTS))
    other["methods"]["method_b"]["train"]["lr"] = 0.001
    err = error(_job("run", "method_b", "--settings", json.dumps(other), class_dir=wood) + run)
    assert f"holds DDPM {_float_hash()}" in err and "a setting that shapes the model differs" in err
    err = error(_job("train", "features", "--settings", json.dumps(DDPM_INTS), class_dir=wood)
                + ["--out", str(out), "--ckpt-dir", str(tmp_path / "ck"), "--model", str(ddpm)])  # fmt: skip
    assert "train no features model" in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.npz").exists() and not out.exists()


@pytest.mark.parametrize("command", ["train-diffusion", "method-b", "simplenet", "adapt-features"])
def test_the_old_method_commands_are_gone(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
