"""Tests of texad.evaluation.grid: resizing maps and masks to the evaluation grid, smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from texad.evaluation.grid import DEFAULT_GRID, gaussian_smooth, resize_maps, resize_masks


def test_default_grid():
    assert DEFAULT_GRID == (256, 256)


# ----------------------------------------------------------------------------------------------------
# resize_masks
# ----------------------------------------------------------------------------------------------------
def test_resize_masks_half_covered_blocks_follow_the_half_rule():
    # 4x6 mask -> 2x3: each 2x2 block has 0, 1, 2 / 3, 4, 2 anomalous pixels.
    m = np.zeros((1, 4, 6), dtype=bool)
    # block (0,0): 0 px
    m[0, 0, 2] = True  # block (0,1): 1 px
    m[0, 0, 4:6] = True  # block (0,2): 2 px (top row: exactly half)
    m[0, 2, 0] = m[0, 2, 1] = m[0, 3, 0] = True  # block (1,0): 3 px
    m[0, 2:4, 2:4] = True  # block (1,1): 4 px
    m[0, 2, 5] = m[0, 3, 4] = True  # block (1,2): 2 px (anti-diagonal: exactly half)
    out = resize_masks(m, (2, 3))
    expected = np.array([[[False, False, True], [True, True, True]]])
    assert out.dtype == bool
    np.testing.assert_array_equal(out, expected)
    # nearest-neighbour resampling would take one pixel per block and disagree here
    nearest = F.interpolate(torch.from_numpy(m[:, None].astype(np.float32)), size=(2, 3), mode="nearest")
    assert not np.array_equal(nearest[:, 0].numpy() >= 0.5, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("factor", [(2, 2), (3, 3), (4, 2), (8, 8)])
def test_resize_masks_integral_downscale_is_box_average(seed, factor):
    rng = np.random.default_rng(seed)
    kh, kw = factor
    h, w = 5, 7
    m = rng.random((3, h * kh, w * kw)) < 0.5
    out = resize_masks(m, (h, w))
    box = m.reshape(3, h, kh, w, kw).mean(axis=(2, 4))
    np.testing.assert_array_equal(out, box >= 0.5)
    # the same as torch's area interpolation followed by >= 0.5
    area = F.interpolate(torch.from_numpy(m[:, None].astype(np.float64)), size=(h, w), mode="area")
    np.testing.assert_array_equal(out, area[:, 0].numpy() >= 0.5)


def test_resize_masks_non_integral_uses_area_interpolation():
    rng = np.random.default_rng(0)
    m = rng.random((2, 50, 37)) < 0.4
    out = resize_masks(m, (32, 24))
    area = F.interpolate(torch.from_numpy(m[:, None].astype(np.float64)), size=(32, 24), mode="area")
    assert out.shape == (2, 32, 24) and out.dtype == bool
    np.testing.assert_array_equal(out, area[:, 0].numpy() >= 0.5)


def test_resize_masks_upscale_repeats_pixels():
    rng = np.random.default_rng(1)
    m = rng.random((2, 4, 5)) < 0.5
    out = resize_masks(m, (8, 15))
    np.testing.assert_array_equal(out, m.repeat(2, axis=1).repeat(3, axis=2))


def test_resize_masks_noop_and_inputs():
    rng = np.random.default_rng(2)
    m = rng.random((3, 16, 16)) < 0.5
    np.testing.assert_array_equal(resize_masks(m, (16, 16)), m)
    np.testing.assert_array_equal(resize_masks(m.astype(np.uint8), (16, 16)), m)
    np.testing.assert_array_equal(resize_masks(torch.from_numpy(m), (8, 8)), resize_masks(m, (8, 8)))
    assert resize_masks(m[0], (8, 4)).shape == (8, 4)  # (H, W) in -> (H', W') out
    assert resize_masks(m[:, None], (32, 24)).shape == (3, 1, 32, 24)
    with pytest.raises(ValueError, match="boolean or 0/1"):
        resize_masks(m.astype(np.uint8) * 255, (8, 8))


# ----------------------------------------------------------------------------------------------------
# resize_maps
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(256, 256), (64, 48), (37, 91)])
def test_resize_maps_keeps_constant_maps_constant(size):
    maps = np.full((2, 100, 80), 3.25, dtype=np.float32)
    out = resize_maps(maps, size)
    assert out.shape == (2, *size) and out.dtype == np.float32
    np.testing.assert_allclose(out, 3.25, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(256, 256), (32, 32), (50, 70)])
def test_resize_maps_matches_torch_bilinear(size):
    rng = np.random.default_rng(0)
    maps = rng.random((3, 64, 64)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(resize_maps(maps, size), ref[:, 0].numpy())
    np.testing.assert_array_equal(resize_maps(torch.from_numpy(maps), size), ref[:, 0].numpy())
    # align_corners=True would differ
    other = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear", align_corners=True)
    assert not np.allclose(resize_maps(maps, size), other[:, 0].numpy())


def test_resize_maps_shapes_and_noop():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 28, 28))  # float64 in
    up = resize_maps(maps, (256, 256))
    down = resize_maps(up, (14, 14))
    assert up.shape == (4, 256, 256) and down.shape == (4, 14, 14)
    assert up.dtype == down.dtype == np.float32
    same = resize_maps(maps, (28, 28))
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, maps.astype(np.float32))
    assert resize_maps(maps[0], (56, 56)).shape == (56, 56)
    with pytest.raises(ValueError, match="size"):
        resize_maps(maps, (0, 10))
    with pytest.raises(ValueError, match="size"):
        resize_maps(maps, (10,))


# ----------------------------------------------------------------------------------------------------
# gaussian_smooth
# ----------------------------------------------------------------------------------------------------
def test_gaussian_smooth_sigma_zero_is_identity():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(gaussian_smooth(maps, 0), maps)
    np.testing.assert_array_equal(gaussian_smooth(torch.from_numpy(maps), 0.0), maps)


def test_gaussian_smooth_preserves_constant_maps():
    maps = np.full((2, 30, 40), 0.7, dtype=np.float32)
    out = gaussian_smooth(maps, 4.0)
    assert out.mean() == pytest.approx(0.7, abs=1e-6)
    np.testing.assert_allclose(out, 0.7, atol=1e-6)


def test_gaussian_smooth_is_per_map_2d_reflect():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 25, 31)).astype(np.float32)
    out = gaussian_smooth(maps, 2.0, truncate=3.0)
    for i in range(3):
        ref = ndi.gaussian_filter(maps[i], 2.0, mode="reflect", truncate=3.0)
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-6)
    # no leakage across maps: an impulse in map 0 leaves map 1 untouched
    imp = np.zeros((2, 9, 9), dtype=np.float32)
    imp[0, 4, 4] = 1.0
    sm = gaussian_smooth(imp, 1.5)
    assert np.all(sm[1] == 0) and sm[0].sum() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth(maps, -1.0)
