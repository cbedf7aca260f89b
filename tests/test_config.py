"""Config schema: both shipped configs validate; wrong keys, types and values stop with a message naming the key."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from texad.config import ConfigError, load_config, settings_hash, validate_config

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"datasets": {"synthetic": {"enabled": True}}, "methods": {}}


def with_change(path: str, value):
    """MINIMAL with the dotted key `path` set to `value`."""
    import copy

    cfg = copy.deepcopy(MINIMAL)
    node = cfg
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return cfg


def test_shipped_configs_are_valid():
    paper = load_config(ROOT / "config.yaml")
    demo = load_config(ROOT / "config" / "demo.yaml")
    assert paper["datasets"]["mvtec_ad"]["classes"] == ["carpet", "grid", "leather", "tile", "wood"]
    assert paper["datasets"]["dtd_synthetic"]["classes"] == ["Mesh_114", "Stratified_154", "Blotchy_099"]
    assert paper["datasets"]["dtd"]["enabled"] is True
    assert demo["datasets"]["synthetic"]["enabled"] is True and demo["device"] == "cpu"
    assert set(paper["methods"]) == {"method_a", "method_b", "simplenet", "draem"}


def test_defaults_are_filled_from_the_schema():
    cfg = validate_config(MINIMAL)
    assert cfg["evaluation"] == {"resolution": 256, "fpr_limit": 0.3}
    assert cfg["seeds"] == [0]
    assert cfg["datasets"]["synthetic"]["classes"] == ["woven", "carpet", "wood"]
    assert MINIMAL["datasets"]["synthetic"] == {"enabled": True}  # the input is not modified


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({**MINIMAL, "sedes": [0]}, ["sedes: unknown key", "seeds"]),
        (with_change("datasets.mvtec_ad", {"enabled": True, "classes": ["carpett"]}),
         ["datasets.mvtec_ad.classes[0]", "'carpett'", "'carpet', 'grid', 'leather', 'tile', 'wood'"]),
        (with_change("datasets.dtd_synthetic", {"enabled": True, "classes": ["Mesh_115"]}),
         ["datasets.dtd_synthetic.classes[0]", "Woven_127"]),
        (with_change("device", "gpu"), ["device", "'gpu'", "'auto', 'cpu', 'cuda'"]),
        (with_change("image_size", 100), ["image_size: 100 is out of range", "a multiple of 16"]),
        (with_change("image_size", "256"), ["image_size: '256' has the wrong type", "integer"]),
        (with_change("evaluation.fpr_limit", 1.5), ["evaluation.fpr_limit: 1.5 is out of range", "<= 1"]),
        (with_change("evaluation.resolution", "full"), ["evaluation.resolution", "'native'"]),
        (with_change("seeds", [1, 1]), ["seeds", "repeated"]),
        (with_change("seeds", []), ["seeds", "too short"]),
        (with_change("methods.method_b", {"enabled": True, "inference": {"s": -0.5}}),
         ["methods.method_b.inference.s: -0.5 is out of range", ">= 0"]),
        (with_change("methods.simplenet", {"enabled": True, "selection": "best"}),
         ["methods.simplenet.selection", "'last', 'official'"]),
        (with_change("methods.method_a", {"enabled": True, "inference": {"n_scales": 0}}),
         ["methods.method_a.inference.n_scales: 0"]),
        (with_change("methods.method_b", {"enabled": True, "train": {"epochs": {"carpet": 10}}}),
         ["methods.method_b.train.epochs: missing required key 'default'"]),
        (with_change("datasets.mvtec_ad", {"classes": ["grid"]}), ["datasets.mvtec_ad: missing required key 'enabled'"]),
        (with_change("datasets.mvtec_ad", {"enabled": True, "url": "ftp://x"}), ["datasets.mvtec_ad.url", "pattern"]),
        ({"datasets": {}}, ["missing required key 'methods'"]),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(cfg, expected):
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    for fragment in expected:
        assert fragment in str(err.value)


def test_t_max_must_exceed_every_start_level():
    """methods.method_b.train.t_max: each start step of inference, the ablation and Method A on the shared DDPM
    is checked at start-up, and the message names the key."""
    b = {"enabled": True, "train": {"t_max": 300}, "inference": {"t_start": 250},
         "ablation": {"t_start": [150, 250, 350]}}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        validate_config(with_change("methods.method_b", b))
    text = str(err.value)
    assert "methods.method_b.ablation.t_start[2]: starts at DDPM level 350" in text
    assert "methods.method_b.train.t_max = 300" in text and "t_start[1]" not in text
    validate_config(with_change("methods.method_b", {**b, "ablation": {"t_start": [150, 250]}}))
    with pytest.raises(ConfigError, match=r"t_max: 2000 exceeds methods.method_b.diffusion.timesteps = 1000"):
        validate_config(with_change("methods.method_b", {**b, "train": {"t_max": 2000}}))
    # Method A on Method B's DDPM: sigma_hi 0.8 is DDPM level 351 of the default schedule
    cfg = with_change("methods.method_b", {**b, "ablation": {"t_start": [250]}})
    cfg["methods"]["method_a"] = {
        "enabled": True,
        "inference": {"sigma_hi": 0.8},
        "ablation": {"shared_ddpm": True},
    }
    with pytest.raises(ConfigError, match=r"methods.method_a.inference.sigma_hi: starts at DDPM level 351.1"):
        validate_config(cfg)
    cfg["methods"]["method_a"]["inference"]["sigma_hi"] = 0.4  # level 217
    validate_config(cfg)


def test_ddpm_level_of_sigma_matches_the_discrete_vp_view():
    from texad.config.checks import ddpm_level_of_sigma
    from texad.diffusion.schedules import NoiseSchedule
    from texad.diffusion.sde import DiscreteVP

    vp = DiscreteVP(NoiseSchedule.linear(1000, 1e-4, 0.02))
    for sigma in (0.01, 0.2, 0.4, 0.8, 3.0):
        ref = float(vp.time_of_sigma(2 * sigma)) * 999
        assert ddpm_level_of_sigma(sigma, 1000, 1e-4, 0.02) == pytest.approx(ref, abs=1e-6)


def test_every_error_is_reported_at_once():
    cfg = with_change("device", "gpu")
    cfg["seeds"] = [-1]
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "device" in str(err.value) and "seeds[0]" in str(err.value)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**MINIMAL, "precision": "fp64"}))
    with pytest.raises(ConfigError, match=r"wrong\.yaml.*\n.*precision"):
        load_config(wrong)


def test_cli_validate_config_exit_status(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINIMAL, "devise": "cpu"}))
    run = subprocess.run(
        [sys.executable, "-m", "texad", "validate-config", str(bad)], capture_output=True, text=True
    )
    assert run.returncode == 1
    assert "devise: unknown key" in run.stderr
    ok = subprocess.run([sys.executable, "-m", "texad", "validate-config", str(ROOT / "config.yaml")],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_settings_hash_is_stable_and_order_free():
    a = settings_hash({"x": 1, "y": [1, 2], "z": {"b": 0.5, "a": "s"}})
    b = settings_hash({"z": {"a": "s", "b": 0.5}, "y": [1, 2], "x": 1})
    assert a == b and len(a) == 12
    assert settings_hash({"x": 1}) != settings_hash({"x": 2})
    assert settings_hash({"x": 1, "w": [0.5]}) == hashlib.sha256(b'{"w":[0.5],"x":1}').hexdigest()[:12]
