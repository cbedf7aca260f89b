"""texad gpu-check at test size on the CPU: the JSON's structure, fp32 against itself, tolerances applied."""

from __future__ import annotations

import json

import pytest

from texad.cost import gpu_check
from texad.cost.devices import resolve

NETS = ("draem", "simplenet_head")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    data = gpu_check.run_check(tiny=True, out=out, steps=1, only=NETS)
    return out, data


def test_writes_the_agreed_format(result):
    out, data = result
    assert json.loads(out.read_text()) == data
    assert data["kind"] == "cpu" and data["tiny"] is True and data["device"] == "cpu"
    assert set(data["networks"]) == set(NETS)
    for net in data["networks"].values():
        assert net["gflop_fwd_per_image"] > 0 and net["batch_size"] == gpu_check.TINY_BATCH
        assert set(net["modes"]) == {"fp32", "bf16", "channels_last"}  # no compile on the CPU test
        for mode, rec in net["modes"].items():
            assert rec["tolerance"] == gpu_check.TOLERANCE[mode]
            assert (
                rec["train_images_per_s"] > 0 and rec["infer_images_per_s"] > 0 and rec["peak_memory_mb"] > 0
            )
            assert rec["ok"] == (rec["max_abs_err_vs_fp32"] <= rec["tolerance"])
            assert rec["utilisation"] is None  # no peak for a CPU


def test_fp32_against_itself_is_exact_and_bf16_differs(result):
    _, data = result
    draem = data["networks"]["draem"]["modes"]
    assert draem["fp32"]["max_abs_err_vs_fp32"] == 0.0
    assert 0 < draem["bf16"]["max_abs_err_vs_fp32"] <= gpu_check.TOLERANCE["bf16"]


def test_a_mode_outside_its_tolerance_is_not_ok(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.TOLERANCE, "bf16", 0.0)
    data = gpu_check.run_check(tiny=True, out=tmp_path / "g.json", steps=1, only=("draem",))
    assert data["networks"]["draem"]["modes"]["bf16"]["ok"] is False
    assert data["networks"]["draem"]["modes"]["fp32"]["ok"] is True


def test_relative_error():
    import torch

    ref = torch.tensor([1.0, -4.0])
    assert gpu_check.relative_error(torch.tensor([1.0, -3.0]), ref) == pytest.approx(0.25)
    assert gpu_check.relative_error([ref, ref], [ref, ref]) == 0.0


def test_a_tiny_run_never_sets_the_cost_utilisation(result):
    out, _ = result
    assert resolve("h100", "bf16", None, out).source == "default"
