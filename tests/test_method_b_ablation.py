"""Method B's guidance ablation: the points each class runs, their names, the default point's place, and the
grid each point carries."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
from settings_checks import assert_each_grid_regenerates_its_variant

from texad.methods import make_settings
from texad.methods.base import variant_settings
from texad.methods.method_b import (
    MethodBSettings,
    inference_point,
    neighbour_point,
    official,
    parse_point,
    point_name,
    variants,
)

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
        "w": (), "s": (), "joint_w": (0.0,), "joint_s": (1.0,), "blur_sigma": (), "t_start": (), "map_terms": (),
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


def test_map_terms_axis_adds_two_suffixed_points_and_leaves_every_other_alone():
    """map_terms [pixel, feature]: the class's default point with a map of one term, named with a suffix; every
    other point (and ``default``) keeps its name, inference and grid, so no existing run changes."""
    block = {**BLOCK, "ablation": {**BLOCK["ablation"], "map_terms": ["pixel", "feature"]}}
    for cls in ("grid", "carpet"):
        before, after = variants(_settings(cls)), variants(_settings(cls, block))
        base = inference_point(_settings(cls).inference)
        assert [v.name for v in after] == [v.name for v in before] + [f"{base}_pixel", f"{base}_feature"]
        old = {v.name: v for v in before}
        for v in after[: len(before)]:
            assert v.grid == old[v.name].grid and v.settings.inference == old[v.name].settings.inference, (
                v.name
            )
        settings = _settings(cls, block)
        for terms in ("pixel", "feature"):
            v = after[[u.name for u in after].index(f"{base}_{terms}")]
            assert v.settings.inference == replace(settings.inference, map_terms=terms)
            assert asdict(v.grid)["map_terms"] == (terms,) and sum(map(len, asdict(v.grid).values())) == 1
            assert inference_point(v.settings.inference) == v.name
        assert_each_grid_regenerates_its_variant("method_b", settings)
        # official: the default's map terms (both), whatever the axis
        assert official(settings).settings.inference.map_terms == "both"
    # `both` on the axis is the default point itself: nothing more to run
    block = {**BLOCK, "ablation": {**BLOCK["ablation"], "map_terms": ["both"]}}
    assert [v.name for v in variants(_settings("grid", block))] == [
        v.name for v in variants(_settings("grid"))
    ]
    # a default of one term: the axis runs the fusion under the plain name
    pixel = {**block, "inference": {**BLOCK["inference"], "map_terms": "pixel"}}
    names = [v.name for v in variants(_settings("grid", pixel))]
    assert inference_point(_settings("grid", pixel).inference) == "w4_s0.5_blur3_t250_pixel"
    assert "w4_s0.5_blur3_t250" in names and "w0_s0.5_blur3_t250_pixel" in names


def test_neighbour_point_round_trips_with_point_name():
    points = [(4, 0.5, 3, 250, "both"), (0, 0, 1, 150, "pixel"), (11, 0.25, 9, 350, "feature"),
              (2.5, 1e-05, 0.3, 1000, "both"), (1 / 3, 0.1, 3, 250, "pixel")]  # fmt: skip
    for w, s, blur, t, terms in points:
        name = point_name(w, s, blur, t, terms)
        parsed = parse_point(name)
        assert point_name(**parsed) == name and parsed["map_terms"] == terms
        assert neighbour_point(name) == name
        assert neighbour_point(name, w=0) == point_name(0, s, blur, t, terms)
        assert neighbour_point(name, s=1.0, t_start=150) == point_name(w, 1.0, blur, 150, terms)
        assert neighbour_point(name, map_terms="feature") == point_name(w, s, blur, t, "feature")
        assert neighbour_point(name, blur_sigma=5, map_terms="both") == point_name(w, s, 5, t)
    assert neighbour_point("w4_s0.5_blur3_t250", w=0) == "w0_s0.5_blur3_t250"
    assert neighbour_point("w4_s0.5_blur3_t250_pixel", w=0, map_terms="both") == "w0_s0.5_blur3_t250"
    assert neighbour_point("w4_s0.5_blur3_t250", map_terms="pixel") == "w4_s0.5_blur3_t250_pixel"
    assert parse_point("w4_s0.5_blur3_t250") == {"w": 4.0, "s": 0.5, "blur_sigma": 3.0, "t_start": 250,
                                                 "map_terms": "both"}  # fmt: skip
    # the name a default run records (extra.ablation_point) is the one its neighbours are found from
    settings = _settings("grid")
    assert neighbour_point(inference_point(settings.inference), w=0) in [v.name for v in variants(settings)]
    for bad in ("default", "w4_s0.5_blur3", "w4_s0.5_blur3_t250_both", "wx_s0.5_blur3_t250", "K4_n5_s0.4"):
        with pytest.raises(ValueError, match="not a Method B point name"):
            neighbour_point(bad, w=0)
    with pytest.raises(TypeError, match="skip"):
        neighbour_point("w4_s0.5_blur3_t250", skip=10)
    with pytest.raises(ValueError, match="map_terms"):
        neighbour_point("w4_s0.5_blur3_t250", map_terms="pixels")
