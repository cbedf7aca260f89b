"""Tests of texad.evaluation.metrics against scikit-learn and slow, obviously-correct references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from texad.evaluation import metrics as M

SEEDS = [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def blob_masks(rng: np.random.Generator, n: int, h: int, w: int, n_good: int, level: float = 0.9):
    """Random blob-shaped masks (thresholded smoothed noise); the first ``n_good`` images are good."""
    noise = ndi.gaussian_filter(rng.standard_normal((n, h, w)), sigma=(0, 1.5, 1.5))
    noise /= noise.std()
    masks = noise > level
    masks[:n_good] = False
    # make sure the anomalous images really have at least one anomalous pixel
    for i in range(n_good, n):
        if not masks[i].any():
            masks[i, rng.integers(h), rng.integers(w)] = True
    return masks


def random_maps(rng: np.random.Generator, masks: np.ndarray, *, ties: bool, dtype=np.float64):
    """Noisy maps that are higher on anomalous pixels; with ``ties`` the scores take few values."""
    maps = rng.random(masks.shape) + 0.6 * masks
    if ties:
        maps = np.round(maps * 6) / 6  # ~10 distinct values: lots of ties, across both classes
    return maps.astype(dtype)


def reference_pro_curve(maps: np.ndarray, masks: np.ndarray):
    """Loop over every distinct threshold; FPR and mean per-region overlap computed directly."""
    regions = []
    for i in range(masks.shape[0]):
        lab, k = ndi.label(masks[i], structure=np.ones((3, 3), dtype=int))
        regions += [(i, lab == r) for r in range(1, k + 1)]
    normal_scores = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fprs.append(float(np.mean(normal_scores >= t)))
        pros.append(float(np.mean([np.mean(maps[i][reg] >= t) for i, reg in regions])))
    if (fprs[-1], pros[-1]) != (1.0, 1.0):
        fprs.append(1.0)
        pros.append(1.0)
    return np.array(fprs), np.array(pros)


def reference_area(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Segment-by-segment trapezoid on [0, limit], cutting the segment that crosses ``limit``."""
    area = 0.0
    for x0, y0, x1, y1 in zip(fpr[:-1], pro[:-1], fpr[1:], pro[1:], strict=True):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_cut = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_cut) / 2
            break
    return area / limit


def reference_aupro(maps, masks, limit):
    return reference_area(*reference_pro_curve(maps, masks), limit)


def brute_force_f1(maps: np.ndarray, masks: np.ndarray):
    """Best F1 over every distinct threshold (lowest threshold among ties)."""
    s, y = maps.ravel(), masks.ravel()
    n_pos = y.sum()
    best, best_t = -1.0, None
    for t in np.unique(s):  # ascending; strict '>' keeps the lowest threshold among ties
        pred = s >= t
        tp = np.sum(pred & y)
        fp = np.sum(pred & ~y)
        p = tp / (tp + fp)
        r = tp / n_pos
        f1 = 2 * p * r / (p + r + 1e-12)
        if f1 > best:
            best, best_t = f1, t
    return best, best_t


# ----------------------------------------------------------------------------------------------------
# image and pixel metrics against scikit-learn
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_image_auroc_matches_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.5
    labels[:2] = [False, True]
    scores = rng.random(40) + 0.5 * labels
    if ties:
        scores = np.round(scores * 4) / 4
    assert M.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M.image_ap(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    # 0/1 ints and torch tensors are accepted as well
    assert M.image_auroc(torch.from_numpy(scores), torch.from_numpy(labels.astype(np.int64))) == (
        pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_auroc_and_ap_match_sklearn(seed, ties, dtype):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, 6, 20, 24, n_good=2)
    maps = random_maps(rng, masks, ties=ties, dtype=dtype)
    y, s = masks.ravel(), maps.ravel()
    assert abs(M.pixel_auroc(maps, masks) - roc_auc_score(y, s)) < 1e-12
    assert abs(M.pixel_ap(maps, masks) - average_precision_score(y, s)) < 1e-12


def test_pixel_auroc_negative_scores_and_signed_zero():
    # exercises the float32 bit-pattern sort on negative values, -0.0 and +0.0
    rng = np.random.default_rng(7)
    masks = blob_masks(rng, 3, 16, 16, n_good=1)
    maps = (rng.standard_normal(masks.shape) + masks).astype(np.float32)
    maps[0, :4] = -0.0
    maps[0, 4:8] = 0.0
    maps[1, masks[1]] = 0.0
    y, s = masks.ravel(), maps.ravel()
    assert abs(M.pixel_auroc(maps, masks) - roc_auc_score(y, s)) < 1e-12
    assert abs(M.pixel_ap(maps, masks) - average_precision_score(y, s)) < 1e-12
    assert M.aupro(maps, masks, 0.3) == pytest.approx(reference_aupro(maps, masks, 0.3), abs=1e-6)


def test_pixel_metrics_are_pooled_not_per_image_means():
    # image 0 ranks perfectly, image 1 ranks perfectly, but image 1's scores are all higher than
    # image 0's: pooled AUROC < 1 while the mean of the per-image AUROCs is 1.
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[:, 0, 0] = True
    maps = np.zeros((2, 4, 4))
    maps[0] = 0.1
    maps[0, 0, 0] = 0.2
    maps[1] = 0.5
    maps[1, 0, 0] = 0.6
    got = M.pixel_auroc(maps, masks)
    assert got == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert got < 0.99


# ----------------------------------------------------------------------------------------------------
# AUPRO against the slow reference
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_pro_curve_matches_reference(seed, ties):
    rng = np.random.default_rng(100 + seed)
    masks = blob_masks(rng, 5, 12, 14, n_good=2)
    maps = random_maps(rng, masks, ties=ties)
    fpr, pro = M.pro_curve(maps, masks)
    ref_fpr, ref_pro = reference_pro_curve(maps, masks)
    assert fpr.shape == ref_fpr.shape
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12, rtol=0)
    np.testing.assert_allclose(pro, ref_pro, atol=1e-12, rtol=0)
    assert (fpr[0], pro[0]) == (0.0, 0.0) and (fpr[-1], pro[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("limit", [0.3, 0.1, 1.0])
def test_aupro_matches_reference(seed, ties, limit):
    rng = np.random.default_rng(200 + seed)
    masks = blob_masks(rng, 5, 12, 14, n_good=2)
    maps = random_maps(rng, masks, ties=ties, dtype=np.float32)
    got = M.aupro(maps, masks, fpr_limit=limit)
    assert got == pytest.approx(reference_aupro(maps, masks, limit), abs=1e-6)


def test_aupro_good_images_count_as_false_positives():
    rng = np.random.default_rng(5)
    masks = blob_masks(rng, 4, 12, 12, n_good=1)
    maps = random_maps(rng, masks, ties=False)
    base = M.aupro(maps[1:], masks[1:])
    maps_hot_good = maps.copy()
    maps_hot_good[0] += 1.0  # a good image with very high scores -> many false positives
    assert M.aupro(maps_hot_good, masks) < base - 0.05
    assert M.aupro(maps_hot_good, masks) == pytest.approx(reference_aupro(maps_hot_good, masks, 0.3))


# ----------------------------------------------------------------------------------------------------
# hand-computed AUPRO cases
# ----------------------------------------------------------------------------------------------------
def test_aupro_perfect_map_is_one():
    rng = np.random.default_rng(0)
    masks = blob_masks(rng, 4, 10, 10, n_good=1)
    maps = masks.astype(np.float32)
    for limit in (0.3, 0.1, 1.0):
        assert M.aupro(maps, masks, limit) == pytest.approx(1.0, abs=1e-12)


def test_aupro_inverted_map_is_zero():
    rng = np.random.default_rng(0)
    masks = blob_masks(rng, 4, 10, 10, n_good=1)
    maps = (~masks).astype(np.float32)  # every normal pixel above every anomalous one
    for limit in (0.3, 0.1, 1.0):
        assert M.aupro(maps, masks, limit) == pytest.approx(0.0, abs=1e-12)


def test_aupro_hand_computed_two_images():
    # Two 4x4 images; 26 normal pixels in total.
    #   image A: region R1 = 2x2 block at the top-left (4 px), scores 0.9 0.9 / 0.5 0.5
    #   image B: region R2 = 2 px at the bottom-right, scores 0.7 and 0.1
    #   normal pixels: two at 0.8 (one per image), one at 0.5 (ties with R1), the other 23 at 0.1
    #   (tie with R2's second pixel).
    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.full((2, 4, 4), 0.1)
    masks[0, :2, :2] = True
    maps[0, 0, :2] = 0.9
    maps[0, 1, :2] = 0.5
    masks[1, 3, 2:] = True
    maps[1, 3, 2] = 0.7
    maps[1, 3, 3] = 0.1
    maps[0, 3, 3] = 0.8
    maps[1, 0, 0] = 0.8
    maps[0, 2, 3] = 0.5
    #  t     normal >= t   FPR     R1 overlap  R2 overlap  PRO
    #  0.9   0             0       2/4         0/2         0.25
    #  0.8   2             2/26    2/4         0/2         0.25
    #  0.7   2             2/26    2/4         1/2         0.5
    #  0.5   3             3/26    4/4         1/2         0.75
    #  0.1   26            1       4/4         2/2         1
    # plus the prepended (0, 0); (1, 1) is already a curve point.
    fpr, pro = M.pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 2 / 26, 2 / 26, 3 / 26, 1], atol=1e-15)
    np.testing.assert_allclose(pro, [0, 0.25, 0.25, 0.5, 0.75, 1], atol=1e-15)
    # Area up to 0.3:
    #   (0,.25)->(2/26,.25): 2/26 * .25 = 0.5/26        (vertical steps add nothing)
    #   (2/26,.5)->(3/26,.75): 1/26 * .625 = 0.625/26
    #   (3/26,.75)->(0.3, p): p = .75 + .25 * (0.3 - 3/26) / (1 - 3/26) = .75 + 1.2/23
    #     area = (0.3 - 3/26) * (.75 + p) / 2 = (4.8/26) * (1.5 + 1.2/23) / 2
    #   total = (1.125 + 2.4 * (1.5 + 1.2/23)) / 26 = (4.725 + 2.88/23) / 26 ~= 0.1865468
    #   AUPRO = total / 0.3 ~= 0.6218227
    expected_03 = (4.725 + 2.88 / 23) / 26 / 0.3
    assert M.aupro(maps, masks, 0.3) == pytest.approx(expected_03, abs=1e-12)
    assert expected_03 == pytest.approx(0.6218227, abs=1e-7)
    # Up to 0.1 (< 2/26 ~= 0.0769? no: 2/26 ~= 0.0769 < 0.1 < 3/26 ~= 0.1154):
    #   0.5/26 + [(2/26,.5)->(0.1, .5 + .25*(0.1-2/26)*26)] = 0.5/26 + (0.1-2/26)*(.5+p)/2
    p = 0.5 + 0.25 * (0.1 - 2 / 26) * 26
    expected_01 = (0.5 / 26 + (0.1 - 2 / 26) * (0.5 + p) / 2) / 0.1
    assert M.aupro(maps, masks, 0.1) == pytest.approx(expected_01, abs=1e-12)
    # Whole curve: 1.125/26 + (23/26) * (.75 + 1) / 2 = 21.25/26
    assert M.aupro(maps, masks, 1.0) == pytest.approx(21.25 / 26, abs=1e-12)
    # ... and the reference agrees with the hand computation
    assert reference_aupro(maps, masks, 0.3) == pytest.approx(expected_03, abs=1e-12)


def test_aupro_uses_8_connectivity():
    # Region = (1,1), (2,2), (2,3): (1,1) only touches (2,2) diagonally.
    #   8-connectivity: one region of 3 px.  4-connectivity: {(1,1)} and {(2,2), (2,3)}.
    # Scores: (1,1)=0.9, (2,2)=(2,3)=0.5, one normal pixel 0.7, the other 21 normals 0.1.
    masks = np.zeros((1, 5, 5), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 2, 3] = True
    maps = np.full((1, 5, 5), 0.1)
    maps[0, 1, 1] = 0.9
    maps[0, 2, 2] = maps[0, 2, 3] = 0.5
    maps[0, 4, 0] = 0.7
    # 8-conn curve: (0,0) (0,1/3) (1/22,1/3) (1/22,1) (1,1)
    #   area(0.3) = (1/22)(1/3) + (0.3 - 1/22) * 1
    # 4-conn curve: (0,0) (0,1/2) (1/22,1/2) (1/22,1) (1,1)
    #   area(0.3) = (1/22)(1/2) + (0.3 - 1/22) * 1
    eight = ((1 / 22) * (1 / 3) + (0.3 - 1 / 22)) / 0.3
    four = ((1 / 22) * (1 / 2) + (0.3 - 1 / 22)) / 0.3
    got = M.aupro(maps, masks, 0.3)
    assert got == pytest.approx(eight, abs=1e-12)
    assert abs(got - four) > 1e-2
    lab4, n4 = ndi.label(masks[0])  # scipy's default structure is 4-connectivity
    lab8, n8 = ndi.label(masks[0], structure=np.ones((3, 3)))
    assert (n4, n8) == (2, 1)


def test_regions_do_not_connect_across_images():
    # The same pixel anomalous in two consecutive images: two regions, not one.
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[:, 1, 1] = True
    masks[1, 1, 2] = True
    maps = np.zeros((2, 3, 3))
    maps[0, 1, 1] = 1.0  # region of image 0 fully found, region of image 1 not at all
    fpr, pro = M.pro_curve(maps, masks)
    # threshold 1: FPR 0, PRO = (1 + 0) / 2 (a single 3-px region would give 1/3)
    assert pro[1] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------------
# F1-max
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_pixel_f1_max_matches_brute_force(seed, ties):
    rng = np.random.default_rng(300 + seed)
    masks = blob_masks(rng, 4, 10, 12, n_good=1)
    maps = random_maps(rng, masks, ties=ties)
    f1, thr = M.pixel_f1_max(maps, masks)
    ref_f1, ref_thr = brute_force_f1(maps, masks)
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    assert thr == ref_thr
    # and the scikit-learn formulation of the definition
    p, r, t = precision_recall_curve(masks.ravel(), maps.ravel())
    sk = 2 * p[:-1] * r[:-1] / (p[:-1] + r[:-1] + 1e-12)
    assert f1 == pytest.approx(sk.max(), abs=1e-12)
    assert thr == t[np.argmax(sk)]


def test_pixel_f1_max_tie_takes_lowest_threshold():
    # descending: TP 0.9, FP 0.8, FP 0.7, TP 0.6, then 12 FPs at 0.1
    #   t=0.9: P=1,   R=1/2 -> F1 = 2/3
    #   t=0.6: P=1/2, R=1   -> F1 = 2/3 (same value, bit for bit), every other threshold is lower
    maps = np.full((1, 4, 4), 0.1)
    masks = np.zeros((1, 4, 4), dtype=bool)
    for (r, c), v, anomalous in [((0, 0), 0.9, True), ((0, 1), 0.8, False), ((0, 2), 0.7, False),
                                 ((0, 3), 0.6, True)]:  # fmt: skip
        maps[0, r, c] = v
        masks[0, r, c] = anomalous
    f1, thr = M.pixel_f1_max(maps, masks)
    assert f1 == pytest.approx(2 / 3, abs=1e-11)
    assert thr == 0.6
    assert brute_force_f1(maps, masks)[1] == 0.6


# ----------------------------------------------------------------------------------------------------
# evaluate()
# ----------------------------------------------------------------------------------------------------
def test_evaluate_combines_the_metrics():
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, 8, 16, 16, n_good=3)
    maps = random_maps(rng, masks, ties=True, dtype=np.float32)
    scores = maps.reshape(8, -1).max(axis=1) + rng.random(8) * 1e-3
    labels = masks.reshape(8, -1).any(axis=1)
    out = M.evaluate(scores, torch.from_numpy(maps), masks, fpr_limit=0.2)
    assert set(out) == {
        "image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro",
        "pixel_f1_max", "pixel_f1_threshold", "n_images", "n_anomalous", "grid",
    }  # fmt: skip
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert out["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert out["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert out["aupro"] == pytest.approx(M.aupro(maps, masks, 0.2), abs=1e-12)
    assert out["aupro"] == pytest.approx(reference_aupro(maps, masks, 0.2), abs=1e-6)
    assert (out["pixel_f1_max"], out["pixel_f1_threshold"]) == M.pixel_f1_max(maps, masks)
    assert out["n_images"] == 8 and out["n_anomalous"] == 5 and out["grid"] == [16, 16]
    for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_threshold"):
        assert type(out[k]) is float

    # explicit labels override the masks
    other = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    out2 = M.evaluate(scores, maps, masks, labels=other)
    assert out2["image_auroc"] == pytest.approx(roc_auc_score(other, scores), abs=1e-12)
    assert out2["n_anomalous"] == 4


def test_evaluate_rejects_wrong_number_of_scores():
    rng = np.random.default_rng(0)
    masks = blob_masks(rng, 4, 8, 8, n_good=1)
    with pytest.raises(ValueError, match="3 image scores for 4 maps"):
        M.evaluate(np.arange(3.0), random_maps(rng, masks, ties=False), masks)


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [0.0, -0.1, 1.0000001, 2, float("nan"), "x"])
def test_fpr_limit_out_of_range(limit):
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[1, 1, 1] = True
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.raises(ValueError, match="fpr_limit"):
        M.aupro(maps, masks, fpr_limit=limit)
    with pytest.raises(ValueError, match="fpr_limit"):
        M.evaluate(np.array([0.0, 1.0]), maps, masks, fpr_limit=limit)


@pytest.mark.parametrize("value", [0, 1])
def test_single_class_image_labels(value):
    scores = np.arange(5.0)
    with pytest.raises(ValueError, match="needs both normal and anomalous test images; got only 5"):
        M.image_auroc(scores, np.full(5, value))


def test_evaluate_all_good_images():
    masks = np.zeros((3, 4, 4), dtype=bool)
    maps = np.random.default_rng(0).random((3, 4, 4))
    with pytest.raises(ValueError, match="got only 3 normal images"):
        M.evaluate(np.arange(3.0), maps, masks)


@pytest.mark.parametrize("fn", [M.pixel_auroc, M.pixel_ap, M.aupro, M.pro_curve, M.pixel_f1_max])
def test_pixel_metrics_need_anomalous_pixels(fn):
    masks = np.zeros((3, 4, 4), dtype=bool)
    maps = np.random.default_rng(0).random((3, 4, 4))
    with pytest.raises(ValueError, match="need anomalous pixels"):
        fn(maps, masks)
    with pytest.raises(ValueError, match="need anomaly-free pixels"):
        fn(maps, ~masks)


@pytest.mark.parametrize("fn", [M.pixel_auroc, M.pixel_ap, M.aupro, M.pro_curve, M.pixel_f1_max])
def test_shape_mismatch(fn):
    maps = np.zeros((3, 4, 4))
    masks = np.zeros((3, 4, 5), dtype=bool)
    with pytest.raises(ValueError, match=r"\(3, 4, 4\).*\(3, 4, 5\)"):
        fn(maps, masks)


def test_image_level_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
        M.image_auroc(np.zeros(4), np.array([0, 1, 0, 1, 1]))


@pytest.mark.parametrize("fn", [M.pixel_auroc, M.pixel_ap, M.aupro, M.pro_curve, M.pixel_f1_max])
def test_nan_in_maps(fn):
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[1, :2, :2] = True
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    maps[0, 0, :3] = np.nan
    with pytest.raises(ValueError, match="3 NaN values"):
        fn(maps, masks)


def test_nan_in_image_scores():
    with pytest.raises(ValueError, match="1 NaN value"):
        M.image_auroc(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))


def test_non_binary_masks_are_rejected():
    maps = np.random.default_rng(0).random((2, 4, 4))
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[1, 0, 0] = 255
    with pytest.raises(ValueError, match="boolean or 0/1"):
        M.pixel_auroc(maps, masks)


def test_accepts_01_masks_torch_and_channel_axis():
    rng = np.random.default_rng(3)
    masks = blob_masks(rng, 4, 10, 10, n_good=1)
    maps = random_maps(rng, masks, ties=False, dtype=np.float32)
    ref = M.aupro(maps, masks)
    assert M.aupro(torch.from_numpy(maps), torch.from_numpy(masks.astype(np.uint8))) == ref
    assert M.aupro(maps[:, None], masks[:, None]) == ref
    assert M.pixel_auroc(torch.from_numpy(maps).half(), masks) == pytest.approx(
        roc_auc_score(masks.ravel(), maps.astype(np.float16).ravel()), abs=1e-12
    )
    assert math.isfinite(M.pixel_f1_max(maps, masks.astype(float))[0])


def test_image_ap_of_a_perfect_ranking_is_exactly_one():
    """scikit-learn sums to 1 + 1 ulp here; a metric above 1 would fail the result schema."""
    from texad.evaluation.metrics import image_ap

    labels = np.r_[np.zeros(2), np.ones(9)]
    scores = np.r_[np.arange(2) * 0.1, 10 + np.arange(9) * 0.37]
    assert image_ap(scores, labels) == 1.0
    # evaluate() reports the same capped value (a demo run once failed the result schema with 1 + 1 ulp)
    maps = np.zeros((11, 4, 4))
    masks = np.zeros((11, 4, 4), bool)
    masks[2:, 0, 0] = True
    maps[2:, 0, 0] = 1.0
    assert M.evaluate(scores, maps, masks, labels=labels)["image_ap"] == 1.0
