"""Method B's guidance ablation: the points each class runs, their names, and the default point's place."""

from __future__ import annotations

import pytest

from texad.methods.conditioned_blur.ablation import (
    GuidancePoint,
    ablation_points,
    default_point,
    point_name,
    resolve_point,
)

BLOCK = {
    "inference": {"w": {"carpet": 0, "default": 4}, "s": 0.5, "blur_sigma": 3, "t_start": 250, "skip": 25},
    "ablation": {"w": [0, 2, 4], "s": [0, 0.5], "joint_w": [0, 4], "joint_s": [0, 1.0], "blur_sigma": [3, 9],
                 "t_start": [150, 250]},
}  # fmt: skip


def test_points_of_a_class_one_factor_at_a_time_and_the_joint_grid():
    names = [p.name for p in ablation_points(BLOCK, "grid")]  # grid: w = 4 (the default)
    assert names == [
        "w0_s0.5_blur3_t250", "w2_s0.5_blur3_t250",  # w axis (w4 is the default point)
        "w4_s0_blur3_t250",  # s axis at the class's w
        "w0_s0_blur3_t250", "w0_s1_blur3_t250", "w4_s1_blur3_t250",  # the joint grid, less the repeats
        "w4_s0.5_blur9_t250",  # blur sigma
        "w4_s0.5_blur3_t150",  # start step
    ]  # fmt: skip
    # the start step keeps the default's 10 steps
    assert {p.name: p for p in ablation_points(BLOCK, "grid")}["w4_s0.5_blur3_t150"].skip == 15


def test_an_empty_joint_list_leaves_the_joint_grid_out():
    block = {**BLOCK, "ablation": {**BLOCK["ablation"], "joint_w": [], "blur_sigma": [3], "t_start": [250]}}
    assert [p.name for p in ablation_points(block, "grid")] == [
        "w0_s0.5_blur3_t250", "w2_s0.5_blur3_t250", "w4_s0_blur3_t250",
    ]  # fmt: skip


def test_per_class_default_w_changes_which_points_a_class_runs():
    carpet = {p.name for p in ablation_points(BLOCK, "carpet")}  # carpet: w = 0
    assert default_point(BLOCK, "carpet") == GuidancePoint(0.0, 0.5, 3.0, 250, 25)
    assert "w0_s0.5_blur3_t250" not in carpet  # its own default runs as `default`
    assert "w4_s0.5_blur3_t250" in carpet and "w0_s0_blur3_t250" in carpet
    assert "w0_s0.5_blur9_t250" in carpet  # the blur axis at carpet's own w


def test_resolve_point_and_names():
    assert resolve_point(BLOCK, "grid", "default") == default_point(BLOCK, "grid")
    assert resolve_point(BLOCK, "grid", "w2_s0.5_blur3_t250").w == 2.0
    assert point_name(4, 0.25, 3.0, 250) == "w4_s0.25_blur3_t250"
    with pytest.raises(ValueError, match="unknown Method B variant 'w4_s0.5_blur3_t250' for class 'grid'"):
        resolve_point(BLOCK, "grid", "w4_s0.5_blur3_t250")  # the default point is `default`
