"""Method B's guidance ablation: the points each class runs, their names, the default point's place, and the
grid each point carries."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
from settings_checks import assert_each_grid_regenerates_its_variant

from texad.methods import make_settings
from texad.methods.base import variant_settings
from texad.methods.method_b import MethodBSettings, inference_point, point_name, variants

BLOCK = {
    "inference": {"w": {"carpet": 0, "default": 4}, "s": 0.5, "blur_sigma": 3, "t_start": 250, "skip": 25},
    "ablation": {"w": [0, 2, 4], "s": [0, 0.5], "joint_w": [0, 4], "joint_s": [0, 1.0], "blur_sigma": [3, 9],
                 "t_start": [150, 250]},
}  # fmt: skip


def _settings(class_name: str, block: dict = BLOCK) -> MethodBSettings:
    return make_settings("method_b", block, class_name=class_name)


def _guidance(settings: MethodBSettings) -> tuple:
    inf = settings.inference
    return inf.w, inf.s, inf.blur_sigma, inf.t_start, inf.skip


def test_points_of_a_class_one_factor_at_a_time_and_the_joint_grid():
    settings = _settings("grid")  # grid: w = 4 (the default)
    vs = variants(settings)
    names = [v.name for v in vs]
    assert names == [
        "default",
        "w0_s0.5_blur3_t250", "w2_s0.5_blur3_t250",  # w axis (w4 is the default point)
        "w4_s0_blur3_t250",  # s axis at the class's w
        "w0_s0_blur3_t250", "w0_s1_blur3_t250", "w4_s1_blur3_t250",  # the joint grid, less the repeats
        "w4_s0.5_blur9_t250",  # blur sigma
        "w4_s0.5_blur3_t150",  # start step
    ]  # fmt: skip
    by_name = {v.name: v.settings for v in vs}
    assert by_name["default"] == settings
    # each point's inference is the default's with its guidance point; nothing else changes
    for name, s in by_name.items():
        assert inference_point(s.inference) == (name if name != "default" else "w4_s0.5_blur3_t250")
        assert replace(s, inference=settings.inference) == settings, name
        w, g, blur, t, skip = _guidance(s)
        assert s.inference == replace(settings.inference, w=w, s=g, blur_sigma=blur, t_start=t, skip=skip)
    # the start step keeps the default's 10 steps
    assert _guidance(by_name["w4_s0.5_blur3_t150"]) == (4.0, 0.5, 3.0, 150, 15)
    assert _guidance(by_name["w0_s1_blur3_t250"]) == (0.0, 1.0, 3.0, 250, 25)
    assert_each_grid_regenerates_its_variant("method_b", settings)
    # a joint point carries its own (w, s) pair only; the default carries no point at all
    grids = {v.name: v.grid for v in vs}
    assert asdict(grids["w0_s1_blur3_t250"]) == {
        "w": (), "s": (), "joint_w": (0.0,), "joint_s": (1.0,), "blur_sigma": (), "t_start": (),
    }  # fmt: skip
    assert asdict(grids["w4_s0.5_blur3_t150"])["t_start"] == (150,)
    assert all(axis == () for axis in asdict(grids["default"]).values())


def test_an_empty_joint_list_leaves_the_joint_grid_out():
    block = {**BLOCK, "ablation": {**BLOCK["ablation"], "joint_w": [], "blur_sigma": [3], "t_start": [250]}}
    settings = _settings("grid", block)
    assert [v.name for v in variants(settings)] == [
        "default", "w0_s0.5_blur3_t250", "w2_s0.5_blur3_t250", "w4_s0_blur3_t250",
    ]  # fmt: skip
    assert_each_grid_regenerates_its_variant("method_b", settings)


def test_per_class_default_w_changes_which_points_a_class_runs():
    settings = _settings("carpet")  # carpet: w = 0
    vs = variants(settings)
    carpet = {v.name for v in vs}
    assert _guidance(variant_settings(vs, "default", "method_b")) == (0.0, 0.5, 3.0, 250, 25)
    assert inference_point(settings.inference) == "w0_s0.5_blur3_t250"
    assert "w0_s0.5_blur3_t250" not in carpet  # its own default runs as `default`
    assert "w4_s0.5_blur3_t250" in carpet and "w0_s0_blur3_t250" in carpet
    assert "w0_s0.5_blur9_t250" in carpet  # the blur axis at carpet's own w
    assert_each_grid_regenerates_its_variant("method_b", settings)


def test_resolve_point_and_names():
    settings = _settings("grid")
    vs = variants(settings)
    assert variant_settings(vs, "default", "method_b") == settings
    w2 = variant_settings(vs, "w2_s0.5_blur3_t250", "method_b")
    assert w2.inference == replace(settings.inference, w=2.0)
    assert point_name(4, 0.25, 3.0, 250) == "w4_s0.25_blur3_t250"
    with pytest.raises(ValueError, match="unknown method_b variant 'w4_s0.5_blur3_t250'"):
        variant_settings(vs, "w4_s0.5_blur3_t250", "method_b")  # the default point is `default`
