"""The official evaluation protocols against hand-made maps and masks (texad.evaluation.protocol).

DDAD (``ddad``): masks PIL-bilinear-resized to the maps' 256 px, both centre-cropped to 224 (offset 16), mask pixels
> 0 anomalous, image score = max of the cropped map. DRAEM (``draem``): masks bilinear-resized without antialiasing
(cv2's INTER_LINEAR), only pixels of exactly 255 anomalous. The expected masks are written down from the resampling
filters' closed forms, and the metrics are checked against sklearn on hand-cropped arrays.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from texad.evaluation.grid import resize_masks
from texad.evaluation.protocol import (
    ddad_crop_side,
    ddad_masks,
    draem_masks,
    evaluate_on_grid,
    geometry,
)


def _box(n: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    m = np.zeros((n, n), dtype=bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def test_ddad_crop_is_224_of_256_around_the_centre():
    assert ddad_crop_side(256) == 224 and ddad_crop_side(32) == 28
    geo = geometry("ddad", 256, (512, 512), map_size=256, crop=None, load=256)
    assert geo.grid == (224, 224) and geo.mask_load == "native" and geo.crop == (256, 224)
    # whatever evaluation.resolution says: the grid is the crop of the maps
    assert geometry("ddad", "native", (1024, 1024), map_size=256, crop=None, load=256).grid == (224, 224)
    assert geo.record() == {"name": "ddad", "masks": geo.record()["masks"], "crop": {"from": 256, "to": 224}}
    assert "> 0" in geo.record()["masks"]


def test_ddad_masks_are_dilated_by_the_bilinear_edge_and_cropped():
    """512 -> 256 is PIL's triangle filter over source pixels 2i-1 .. 2i+2 (weights 1/8, 3/8, 3/8, 1/8): a defect
    on source rows/cols [202, 300) reaches output pixels 100..150 with a value > 0, while area >= 0.5 keeps
    101..149 only. In the 224 crop (offset 16) that is 84..134."""
    native = _box(512, (202, 300), (202, 300))
    got = ddad_masks(native[None], 256)[0]
    expected = np.zeros((224, 224), dtype=bool)
    expected[84:135, 84:135] = True
    np.testing.assert_array_equal(got, expected)
    texad_rule = resize_masks(native, (256, 256))[16:240, 16:240]
    assert texad_rule.sum() == 49 * 49 and got.sum() == 51 * 51  # > 0 differs from >= 0.5 on the soft edge
    assert (got & ~texad_rule).any() and not (texad_rule & ~got).any()


def test_ddad_crop_removes_a_border_defect():
    """A defect on source rows [0, 20) reaches output rows 0..10 only: all in the 16 px the crop drops."""
    border = _box(512, (0, 20), (202, 300))
    assert ddad_masks(border[None], 256)[0].sum() == 0
    assert resize_masks(border, (256, 256)).any()  # texad's protocol keeps it


def test_draem_masks_keep_only_pixels_of_exactly_one():
    """64 -> 16 without antialiasing samples source 4i + 1.5, halfway between pixels 4i+1 and 4i+2: an output pixel
    is 255 only when both are in the defect. Defect [6, 30) -> 2..6; area >= 0.5 gives 1..7 (not the corners)."""
    native = _box(64, (6, 30), (6, 30))
    got = draem_masks(native[None], 16)[0]
    np.testing.assert_array_equal(got, _box(16, (2, 7), (2, 7)))
    # area >= 0.5: half of each edge pixel's 4 x 4 is in the defect, a quarter of each corner's
    area = _box(16, (1, 8), (2, 7)) | _box(16, (2, 7), (1, 8))
    np.testing.assert_array_equal(resize_masks(native, (16, 16)), area)
    geo = geometry("draem", 32, (64, 64), map_size=16, crop=None, load=16)
    assert geo.grid == (16, 16) and geo.crop is None
    maps, scores = np.ones((1, 16, 16), np.float32), np.array([0.25])
    out_maps, out_scores = geo.maps_and_scores(maps, scores)
    assert out_maps is maps and out_scores is scores  # DRAEM keeps its own (pooled) image score


def test_ddad_protocol_metrics_match_sklearn_on_hand_cropped_arrays():
    """Three images: a soft-edged central defect, a border defect the crop removes, and a good image whose map
    peaks outside the crop. Pixel AUROC and image AUROC under the protocol equal sklearn's on hand-cropped maps
    and hand-made masks, and the image scores are the maxima inside the crop."""
    rng = np.random.default_rng(0)
    native = np.stack(
        [_box(512, (202, 300), (202, 300)), _box(512, (0, 20), (202, 300)), np.zeros((512, 512), bool)]
    )
    labels = np.array([1, 1, 0])
    maps = rng.random((3, 256, 256)).astype(np.float32)
    maps[0, 110:140, 110:140] += 1.0  # the defect scores high
    maps[2, 3, 250] = 50.0  # a good image's peak in the cropped border
    geo = geometry("ddad", 256, (512, 512), map_size=256, crop=None, load=256)
    masks = geo.masks(native)
    cropped, scores = geo.maps_and_scores(maps, np.full(3, np.nan))
    hand = maps[:, 16:240, 16:240]
    np.testing.assert_array_equal(cropped, hand)
    np.testing.assert_array_equal(scores, hand.reshape(3, -1).max(axis=1))
    assert scores[2] < 2.0  # the peak outside the crop does not count
    expected = np.zeros((3, 224, 224), dtype=bool)
    expected[0, 84:135, 84:135] = True
    np.testing.assert_array_equal(masks, expected)

    metrics, on_grid = evaluate_on_grid(cropped, scores, masks, labels)
    assert on_grid.shape == (3, 224, 224)
    assert metrics["pixel_auroc"] == pytest.approx(roc_auc_score(expected.ravel(), hand.ravel()), abs=1e-12)
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, hand.reshape(3, -1).max(axis=1)))
    # the same maps under texad's rule score the good image by its peak: image AUROC drops
    assert roc_auc_score(labels, maps.reshape(3, -1).max(axis=1)) < metrics["image_auroc"]


def test_texad_protocol_keeps_the_grid_and_the_crop_rule():
    geo = geometry("texad", 32, (100, 100), map_size=64, crop=None, load=64)
    assert (geo.mask_load, geo.grid, geo.crop) == ((32, 32), (32, 32), None)
    assert geo.record() == {"name": "texad", "masks": "area interpolation to the grid, >= 0.5", "crop": None}
    crop = geometry("texad", 32, (100, 100), map_size=64, crop=64, load=80)  # SimpleNet's official input
    assert (crop.mask_load, crop.grid, crop.record()["crop"]) == ((40, 40), (32, 32), {"from": 80, "to": 64})
    m = np.zeros((1, 40, 40), bool)
    m[0, 4, 4] = m[0, 20, 20] = True
    np.testing.assert_array_equal(crop.masks(m), m[:, 4:36, 4:36])
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        geometry("mvtec", 32, (100, 100), map_size=64, crop=None, load=64)
    with pytest.raises(ValueError, match="uncropped"):
        geometry("ddad", 32, (100, 100), map_size=64, crop=48, load=64)
