"""Config schema: both shipped configs validate; wrong keys, types and values stop with a message naming the key."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from texad.config import ConfigError, load_config, load_schema, settings_hash, validate_config

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
    assert cfg["evaluation"] == {
        "resolution": 256,
        "fpr_limit": 0.3,
        "threshold": {"rule": "fpr", "fpr": 0.01},
        "bootstrap": {"resamples": 1000, "level": 0.95, "seed": 0},
    }
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


# ---------------------------------------------------------------------------------- numbers and partial configs
def _ints_where_whole(value):
    """``value`` with every whole float written as an int (how a user might type 0 for 0.0)."""
    if isinstance(value, dict):
        return {k: _ints_where_whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints_where_whole(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def test_numbers_take_the_schema_type():
    from texad.config import normalise_numbers

    cfg = validate_config(with_change("methods.method_b", {"enabled": True, "train": {"ema": 0, "grad_clip": 0,
                                      "weight_decay": 0, "epochs": {"default": 3.0, "carpet": 2}},
                                      "inference": {"w": {"default": 4, "carpet": 0}, "t_start": 200.0}}))  # fmt: skip
    b = cfg["methods"]["method_b"]
    assert b["train"]["ema"] == 0.0 and type(b["train"]["ema"]) is float
    assert type(b["train"]["grad_clip"]) is float and type(b["train"]["weight_decay"]) is float
    assert (
        b["train"]["epochs"] == {"default": 3, "carpet": 2} and type(b["train"]["epochs"]["default"]) is int
    )
    assert b["inference"]["w"] == {"default": 4.0, "carpet": 0.0} and type(b["inference"]["t_start"]) is int
    assert all(type(v) is float for v in b["ablation"]["w"])  # the schema's own defaults too
    # one-of keys: a number branch, a constant, an integer branch, null
    schema = load_schema("config")
    a = normalise_numbers({"methods": {"method_a": {"sde": {"sigma_max": 2}}}}, schema)
    assert type(a["methods"]["method_a"]["sde"]["sigma_max"]) is float
    assert normalise_numbers({"evaluation": {"resolution": 128.0}}, schema)["evaluation"]["resolution"] == 128
    assert (
        normalise_numbers({"evaluation": {"resolution": "native"}}, schema)["evaluation"]["resolution"]
        == "native"
    )
    t_max = normalise_numbers({"methods": {"method_b": {"train": {"t_max": 300.0}}}}, schema)
    assert type(t_max["methods"]["method_b"]["train"]["t_max"]) is int
    assert normalise_numbers({"seeds": [True]}, schema) == {"seeds": [True]}  # booleans are not numbers


def test_0_and_0_0_name_the_same_models():
    """Every model of the paper and demo configs gets the same identity whether its numbers are written as 0 or
    0.0 (the bug: YAML's int and the command line's float hashed apart, and every train job refused to run)."""
    from texad.plan import Plan

    for path in (ROOT / "config.yaml", ROOT / "config" / "demo.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["methods"]["method_b"].setdefault("train", {}).update(ema=0.0, grad_clip=0.0, weight_decay=0.0)
        as_floats, as_ints = Plan(validate_config(raw)), Plan(validate_config(_ints_where_whole(raw)))
        for dataset, cls in as_floats.class_keys():
            for kind in ("ddpm", "score", "simplenet", "draem", "features"):
                assert as_floats.model_path(kind, dataset, cls, 0) == as_ints.model_path(
                    kind, dataset, cls, 0
                )


def test_a_part_of_a_config_takes_the_schema_defaults(tmp_path):
    from texad.config import load_settings

    part = {"methods": {"draem": {"score_pool": 5}}}
    cfg = validate_config(part, partial=True)
    assert cfg["methods"]["draem"]["epochs"] == 700 and cfg["device"] == "auto" and "datasets" not in cfg
    assert "enabled" not in cfg["methods"]["draem"]  # a part holds the blocks it uses
    with pytest.raises(ConfigError, match=r"methods.draem.scor_pool: unknown key"):
        validate_config({"methods": {"draem": {"scor_pool": 5}}}, partial=True)
    # --settings: JSON text or a YAML file, the same settings either way
    path = tmp_path / "part.yaml"
    path.write_text(yaml.safe_dump(part))
    assert load_settings(json.dumps(part)) == load_settings(str(path)) == cfg
    with pytest.raises(ConfigError, match="--settings is not valid JSON"):
        load_settings("{methods: ")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "missing.yaml"))
    assert load_settings(str(ROOT / "config" / "demo.yaml"))["methods"]["draem"]["score_pool"] == 5


def test_checks_the_schema_cannot_express_name_their_keys():
    cases = [
        ({"method_b": {"enabled": True, "inference": {"blur_kernel": 30}}}, "methods.method_b.inference.blur_kernel"),
        ({"method_a": {"enabled": True, "inference": {"sigma_lo": 0.5}}}, "methods.method_a.inference.sigma_lo"),
        ({"method_a": {"enabled": True, "inference": {"metric": "score_clean", "mode": "full_chain"}}},
         "methods.method_a.inference.mode"),
    ]  # fmt: skip
    for methods, key in cases:
        with pytest.raises(ConfigError, match=re.escape(key)):
            validate_config({**MINIMAL, "methods": methods})
