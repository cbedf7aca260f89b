"""Tests of texad.results.record: the per-run result JSON (schema, atomic write, read back)."""

from __future__ import annotations

import copy
import json
import math
import re
import tempfile

import numpy as np
import pytest

from texad.config.identity import settings_hash
from texad.config.schema import ConfigError, load_schema, validate
from texad.results import record as R


def make_metrics(value: float = 0.9) -> dict:
    return {
        "image_auroc": value,
        "image_ap": value,
        "pixel_auroc": value,
        "pixel_ap": value / 2,
        "aupro": value / 3,
        "pixel_f1_max": value / 4,
        "pixel_f1_threshold": 12.5,
        "n_images": 20,
        "n_anomalous": 12,
        "grid": [64, 64],
    }


def make_result(**overrides) -> dict:
    kwargs = dict(
        run_name="unit",
        dataset="mvtec_ad",
        class_name="carpet",
        method="method_a",
        variant="default",
        seed=0,
        metrics=make_metrics(),
        evaluation={"resolution": 64, "fpr_limit": 0.3, "grid": [64, 64], "switches": {"center_crop": False}},
        timings={"train_s": 1.5, "inference_s": 0.25, "images_per_s": 80.0, "nfe_per_image": None},
        device={"type": "cpu", "name": "test cpu", "precision": "fp32"},
        config_hash=settings_hash({"a": 1}),
        backbone={"name": "wide_resnet50_2", "weights": "torchvision", "sha256": "ab" * 32},
        model_hash=settings_hash({"model": 1}),
        extra={"note": "anything", "nested": {"list": [1, 2]}},
    )
    kwargs.update(overrides)
    return R.build_result(**kwargs)


# ----------------------------------------------------------------------------------------------------
# schema file
# ----------------------------------------------------------------------------------------------------
def test_schema_is_packaged_and_closed():
    schema = load_schema("result")
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    for key in ("metrics", "evaluation", "timings", "versions", "device", "backbone"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    assert schema["properties"]["schema_version"]["const"] == R.RESULT_SCHEMA_VERSION


# ----------------------------------------------------------------------------------------------------
# build / write / read
# ----------------------------------------------------------------------------------------------------
def test_build_write_read_round_trip(tmp_path):
    result = make_result()
    assert result["schema_version"] == 1
    assert result["class"] == "carpet"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["created"])
    assert result["versions"]["cuda"] is None and result["versions"]["cudnn"] is None  # a CPU run
    assert result["versions"]["numpy"] == np.__version__

    path = tmp_path / "runs" / "mvtec_ad" / "carpet" / "seed0.json"
    R.write_result(path, result)
    assert path.read_text(encoding="utf-8").endswith("}\n")
    back = R.read_result(path)
    assert back == result
    assert json.loads(path.read_text()) == result
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed0.json"]  # no temp file left


def test_build_converts_numpy_and_tuples():
    metrics = make_metrics()
    metrics["image_auroc"] = np.float32(0.75)
    metrics["n_images"] = np.int64(20)
    metrics["grid"] = (64, 64)
    result = make_result(metrics=metrics, seed=np.int64(3),
                         evaluation={"resolution": "native", "fpr_limit": 0.3, "grid": np.array([64, 64]), "switches": {}})  # fmt: skip
    assert type(result["metrics"]["image_auroc"]) is float and result["metrics"]["image_auroc"] == 0.75
    assert type(result["metrics"]["n_images"]) is int
    assert result["metrics"]["grid"] == [64, 64] and result["evaluation"]["grid"] == [64, 64]
    assert type(result["seed"]) is int
    json.dumps(result, allow_nan=False)


def test_null_metrics_timings_backbone_and_model_hash_allowed(tmp_path):
    metrics = make_metrics()
    metrics["image_auroc"] = None
    metrics["pixel_f1_threshold"] = None
    result = make_result(metrics=metrics, backbone=None, model_hash=None,
                         timings={"train_s": None, "inference_s": None, "images_per_s": None, "nfe_per_image": None})  # fmt: skip
    R.write_result(tmp_path / "r.json", result)
    assert R.read_result(tmp_path / "r.json")["metrics"]["image_auroc"] is None


def _expect_error(result: dict, *fragments: str, tmp_path=None) -> str:
    with pytest.raises(ConfigError) as info:
        validate(result, "result", what="result x")
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return msg


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda r: r.__setitem__("colour", "red"), ["colour: unknown key"]),
        (lambda r: r["metrics"].__setitem__("iou", 0.5), ["metrics.iou: unknown key"]),
        (lambda r: r["backbone"].__setitem__("layers", 3), ["backbone.layers: unknown key"]),
        (lambda r: r["metrics"].pop("aupro"), ["metrics: missing required key 'aupro'"]),
        (lambda r: r.pop("config_hash"), ["missing required key 'config_hash'"]),
        (
            lambda r: r["metrics"].__setitem__("image_auroc", 1.2),
            ["metrics.image_auroc: 1.2 is out of range"],
        ),
        (lambda r: r["metrics"].__setitem__("aupro", -0.01), ["metrics.aupro: -0.01 is out of range"]),
        (
            lambda r: r["metrics"].__setitem__("pixel_ap", "0.5"),
            ["metrics.pixel_ap: '0.5' has the wrong type"],
        ),
        (
            lambda r: r["device"].__setitem__("type", "tpu"),
            ["device.type: 'tpu' is not allowed", "'cpu', 'cuda'"],
        ),
        (lambda r: r["device"].__setitem__("precision", "fp8"), ["device.precision"]),
        (lambda r: r["timings"].__setitem__("train_s", -1.0), ["timings.train_s: -1.0 is out of range"]),
        (lambda r: r["evaluation"].__setitem__("resolution", "full"), ["evaluation.resolution"]),
        (lambda r: r["evaluation"].__setitem__("grid", [64]), ["evaluation.grid"]),
        (lambda r: r.__setitem__("config_hash", "XYZ"), ["config_hash: 'XYZ' does not match"]),
        (lambda r: r.__setitem__("created", "yesterday"), ["created: 'yesterday' does not match"]),
        (lambda r: r.__setitem__("schema_version", 2), ["schema_version: 2 is not allowed"]),
        (lambda r: r.__setitem__("variant", "w 4"), ["variant: 'w 4' does not match"]),
    ],
)
def test_schema_rejects_with_key_path(tmp_path, mutate, fragments):
    good = make_result()
    bad = copy.deepcopy(good)
    mutate(bad)
    _expect_error(bad, *fragments)

    # write_result refuses it, naming the file and the key, and writes nothing
    path = tmp_path / "bad.json"
    with pytest.raises(ConfigError) as info:
        R.write_result(path, bad)
    assert f"result {path}" in str(info.value)
    for frag in fragments:
        assert frag in str(info.value)
    assert list(tmp_path.iterdir()) == []

    # read_result refuses the same content found on disk
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        R.read_result(path)
    assert str(path) in str(info.value)
    for frag in fragments:
        assert frag in str(info.value)


def test_build_result_validates():
    with pytest.raises(ConfigError, match=r"device\.type: 'gpu' is not allowed"):
        make_result(device={"type": "gpu", "name": "x", "precision": "fp32"})
    metrics = make_metrics()
    metrics["pixel_auroc"] = 1.0001
    with pytest.raises(ConfigError, match=r"metrics\.pixel_auroc: 1\.0001 is out of range"):
        make_result(metrics=metrics)
    metrics = make_metrics()
    metrics["aupro"] = float("nan")
    with pytest.raises(ConfigError, match=r"metrics\.aupro: not a finite number"):
        make_result(metrics=metrics)


# ----------------------------------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------------------------------
def _spy_mkstemp(monkeypatch) -> list[str]:
    """Record the temp files write_result creates (to check the failure path really ran and cleaned up)."""
    created: list[str] = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        created.append(name)
        return fd, name

    monkeypatch.setattr(R.tempfile, "mkstemp", spy)
    return created


def test_failed_serialisation_leaves_no_file(tmp_path, monkeypatch):
    created = _spy_mkstemp(monkeypatch)
    bad = make_result()
    bad["metrics"]["image_auroc"] = float("nan")  # passes the schema (NaN compares False) but JSON refuses it
    path = tmp_path / "seed0.json"
    with pytest.raises(ConfigError) as info:
        R.write_result(path, bad)
    assert "metrics.image_auroc: not a finite number" in str(info.value)
    assert str(path) in str(info.value)
    assert len(created) == 1  # the failure happened while writing the temp file ...
    assert list(tmp_path.iterdir()) == []  # ... which was removed; no destination file either


def test_failed_write_keeps_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "seed0.json"
    good = make_result()
    R.write_result(path, good)
    before = path.read_bytes()
    created = _spy_mkstemp(monkeypatch)

    bad = copy.deepcopy(good)
    bad["metrics"]["image_auroc"] = 0.5
    bad["timings"]["train_s"] = math.inf
    with pytest.raises(ConfigError, match=r"timings\.train_s: not a finite number"):
        R.write_result(path, bad)
    assert len(created) == 1
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0.json"]
    assert R.read_result(path) == good

    # a failure at the rename itself also leaves the old file and no temp file
    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(R.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        R.write_result(path, bad | {"timings": good["timings"]})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0.json"]


def test_atomic_write_text_replaces(tmp_path):
    path = tmp_path / "sub" / "t.md"
    R.atomic_write_text(path, "one\n")
    R.atomic_write_text(path, "two\n")
    assert path.read_text() == "two\n"
    assert [p.name for p in path.parent.iterdir()] == ["t.md"]


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------
def test_read_bad_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"schema_version": 1, "metrics": {', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"result file {path} is not valid JSON")):
        R.read_result(path)


def test_read_refuses_nan_literal_and_non_objects(tmp_path):
    result = make_result()
    text = json.dumps(result).replace('"image_auroc": 0.9', '"image_auroc": NaN')
    assert "NaN" in text
    path = tmp_path / "nan.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="NaN is not valid JSON"):
        R.read_result(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a JSON object"):
        R.read_result(path)
    with pytest.raises(ConfigError, match="does not exist"):
        R.read_result(tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------------
def test_device_info_and_versions():
    info = R.device_info("cpu", "bf16")
    assert info["type"] == "cpu" and info["name"] and info["precision"] == "fp32"  # the CPU runs fp32
    with pytest.raises(ValueError, match="precision"):
        R.device_info("cpu", "fp64")
    with pytest.raises(ValueError, match="cpu or cuda"):
        R.device_info("meta")
    versions = R.collect_versions("cpu")
    assert set(versions) == {"texad", "python", "torch", "torchvision", "numpy", "cuda", "cudnn"}
    assert versions["cuda"] is None and versions["cudnn"] is None
    validate({**make_result(), "device": info, "versions": versions}, "result")
