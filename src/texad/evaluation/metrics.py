"""Anomaly-detection metrics on the shared evaluation grid.

All pixel metrics pool every pixel of every test image of one class (good images included) and
compute a single number per class; none of them is a per-image mean.

* image AUROC / image AP  -- ``roc_auc_score`` / ``average_precision_score`` on one score per image;
* pixel AUROC / pixel AP  -- scikit-learn on the flattened maps and masks (see below);
* AUPRO                   -- the MVTec AD definition (8-connected ground-truth regions, exact curve over
  every distinct score, trapezoid integral up to ``fpr_limit`` normalised by ``fpr_limit``),
  vectorised: one global sort and two cumulative sums, no loop over thresholds or regions;
* pixel F1-max            -- maximum of 2PR / (P + R + 1e-12) over the precision-recall curve.

The pixel metrics share one ranking of the pixels: the scores are sorted once (descending) and the
sorted arrays are handed to scikit-learn's ``confusion_matrix_at_thresholds`` (the counting behind
``roc_curve`` / ``precision_recall_curve``; its own stable sort is cheap on already-sorted input).  From
its per-threshold (FP, TP) counts, pixel AUROC is ``sklearn.metrics.auc(fpr, tpr)`` -- what
``roc_auc_score`` computes -- and pixel AP is scikit-learn's step integral sum_k (R_k - R_{k-1}) P_k.
The results agree with ``roc_auc_score`` / ``average_precision_score`` on the flattened arrays to
floating-point rounding (the tests check 1e-12), at a fraction of the time and memory of calling them
one after another on ~10^7 pixels.

Inputs may be numpy arrays or torch tensors.  Maps are ``(N, H, W)`` floats (``(N, 1, H, W)`` and a
single ``(H, W)`` map are accepted too); masks have the same shape and are boolean or 0/1.  float32 maps
are kept float32 (no float64 copy of a whole class is made).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi
from sklearn.metrics import auc as _sk_auc
from sklearn.metrics import average_precision_score, roc_auc_score

from texad.evaluation.arrays import as_binary, to_numpy

try:  # public since scikit-learn 1.8
    from sklearn.metrics import confusion_matrix_at_thresholds as _sk_confusion_matrix_at_thresholds
except ImportError:  # pragma: no cover - older scikit-learn
    from sklearn.metrics._ranking import _binary_clf_curve

    def _sk_confusion_matrix_at_thresholds(y_true, y_score):  # type: ignore[no-redef]
        fps, tps, thresholds = _binary_clf_curve(y_true, y_score)
        return None, fps, None, tps, thresholds


__all__ = [
    "image_auroc",
    "image_ap",
    "pixel_auroc",
    "pixel_ap",
    "pro_curve",
    "aupro",
    "pixel_f1_max",
    "evaluate",
]

_F1_EPS = 1e-12
# 8-connectivity inside each image, no connectivity across images: labelling the whole (N, H, W) stack
# with this structuring element is the same as labelling every image with a 3x3 element of ones.
_STRUCTURE_8_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_8_IN_PLANE[1] = True


# ----------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------
def _check_finite(a: np.ndarray, what: str) -> None:
    if a.dtype.kind != "f":
        return
    n_nan = int(np.count_nonzero(np.isnan(a)))
    if n_nan:
        raise ValueError(f"{what} contain {n_nan} NaN value{'s' if n_nan != 1 else ''} (of {a.size})")
    n_inf = int(np.count_nonzero(np.isinf(a)))
    if n_inf:
        raise ValueError(f"{what} contain {n_inf} infinite value{'s' if n_inf != 1 else ''} (of {a.size})")


def _as_float(a: np.ndarray) -> np.ndarray:
    """float32/float64 kept as they are; float16 -> float32; ints/bools -> float64 (exact)."""
    if a.dtype == np.float32 or a.dtype == np.float64:
        return a
    if a.dtype.kind == "f" and a.dtype.itemsize < 4:
        return a.astype(np.float32)
    if a.dtype.kind in "biuf":
        return a.astype(np.float64)
    raise ValueError(f"scores must be numeric, got dtype {a.dtype}")


def _as_stack(a: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W); (N, 1, H, W) -> (N, H, W); (N, H, W) unchanged."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 4 and a.shape[1] == 1:
        return a[:, 0]
    return a


def _validate_pixels(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    maps_np = to_numpy(maps)
    masks_np = to_numpy(masks)
    m, g = _as_stack(maps_np), _as_stack(masks_np)
    if m.shape != g.shape:
        raise ValueError(
            f"maps shape {tuple(maps_np.shape)} does not match masks shape {tuple(masks_np.shape)}"
        )
    if m.ndim != 3:
        raise ValueError(f"maps and masks must be (N, H, W), got shape {tuple(maps_np.shape)}")
    if m.size == 0:
        raise ValueError(f"maps are empty (shape {tuple(maps_np.shape)})")
    m = _as_float(m)
    _check_finite(m, "maps")
    return m, as_binary(g, "masks")


def _validate_image_level(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s_np = to_numpy(scores)
    l_np = to_numpy(labels)
    if s_np.ndim > 1 or l_np.ndim > 1:
        raise ValueError(
            f"image scores and labels must be 1-D, got shapes {tuple(s_np.shape)} and {tuple(l_np.shape)}"
        )
    s = _as_float(s_np).reshape(-1)
    lab = as_binary(l_np.reshape(-1), "labels")
    if s.shape != lab.shape:
        raise ValueError(
            f"image scores shape {tuple(s_np.shape)} does not match labels shape {tuple(l_np.shape)}"
        )
    _check_finite(s, "image scores")
    n_pos = int(np.count_nonzero(lab))
    if n_pos == 0 or n_pos == lab.size:
        kind = "normal" if n_pos == 0 else "anomalous"
        raise ValueError(
            "image AUROC needs both normal and anomalous test images; "
            f"got only {lab.size} {kind} image{'s' if lab.size != 1 else ''}"
        )
    return s, lab


# ----------------------------------------------------------------------------------------------------
# image-level metrics
# ----------------------------------------------------------------------------------------------------
def image_auroc(scores: Any, labels: Any) -> float:
    """ROC AUC of one anomaly score per image against binary labels (1 = anomalous)."""
    s, lab = _validate_image_level(scores, labels)
    return float(roc_auc_score(lab, s))


def image_ap(scores: Any, labels: Any) -> float:
    """Average precision of one anomaly score per image against binary labels (1 = anomalous)."""
    s, lab = _validate_image_level(scores, labels)
    # a perfect ranking can sum to 1 + 1 ulp in floating point; a score lies in [0, 1]
    return float(min(1.0, average_precision_score(lab, s)))


# ----------------------------------------------------------------------------------------------------
# pixel-level metrics
# ----------------------------------------------------------------------------------------------------
def _argsort(flat: np.ndarray) -> np.ndarray:
    """Ascending argsort of a 1-D float array (order among equal scores unspecified).

    For float32 (the usual case) the scores' bit patterns are mapped to order-preserving unsigned ints
    and packed with the pixel index into one uint64 key; sorting those keys is markedly faster than
    ``np.argsort`` on the floats.  NaN must have been rejected before.
    """
    n = flat.size
    if flat.dtype != np.float32 or n >= 2**32:
        return np.argsort(flat)
    bits = flat.view(np.uint32)
    # negative floats: flip all bits (larger magnitude -> smaller key); non-negative: set the sign bit.
    keys = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    keys &= np.uint64(0xFFFFFFFF)
    return keys.view(np.int64)  # the indices (< 2**32) reinterpreted in place, no copy


class _PixelRanking:
    """All pixels of one class ranked once by descending score; shared by every pixel metric."""

    def __init__(self, maps: np.ndarray, masks: np.ndarray, what: str = "pixel metrics") -> None:
        self.masks = masks
        flat = maps.reshape(-1)
        truth = masks.reshape(-1)
        self.n_pixels = flat.size
        self.n_anomalous = int(np.count_nonzero(truth))
        self.n_normal = self.n_pixels - self.n_anomalous
        if self.n_anomalous == 0:
            raise ValueError(
                f"{what} need anomalous pixels; the masks of all {maps.shape[0]} test images are empty"
            )
        if self.n_normal == 0:
            raise ValueError(f"{what} need anomaly-free pixels; every pixel of every mask is anomalous")
        # One global sort.  Ties are resolved by merging runs of equal scores (here and in
        # scikit-learn), so the order inside a run of ties does not matter.
        self.order = _argsort(flat)[::-1]  # descending
        self.scores = flat[self.order]
        self.truth = truth[self.order]
        self._counts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # scikit-learn ------------------------------------------------------------------------------------
    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """scikit-learn's (fps, tps, thresholds) at every distinct score, thresholds decreasing.

        The arrays handed over are already sorted, so scikit-learn's own stable sort is cheap.
        """
        if self._counts is None:
            _, fps, _, tps, thresholds = _sk_confusion_matrix_at_thresholds(self.truth, self.scores)
            self._counts = (fps, tps, thresholds)
        return self._counts

    def auroc(self) -> float:
        # roc_auc_score = auc(roc_curve): the curve starts at (0, 0) and visits every distinct
        # threshold (roc_curve also drops collinear points, which does not change the area).
        fps, tps, _ = self.counts()
        fpr = np.concatenate(([0.0], fps / fps[-1]))
        tpr = np.concatenate(([0.0], tps / tps[-1]))
        return float(_sk_auc(fpr, tpr))

    def _precision_recall(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """precision, recall, thresholds (decreasing) up to the first threshold with full recall,
        i.e. scikit-learn's precision_recall_curve in reverse order without its final (1, 0) point."""
        fps, tps, thresholds = self.counts()
        stop = int(np.searchsorted(tps, tps[-1])) + 1
        fps, tps = fps[:stop], tps[:stop]
        precision = tps / (tps + fps)
        recall = tps / tps[-1]
        return precision, recall, thresholds[:stop]

    def ap(self) -> float:
        # average_precision_score: sum over thresholds of (R_k - R_{k-1}) * P_k.
        precision, recall, _ = self._precision_recall()
        delta_recall = np.diff(recall, prepend=0.0)
        return float(min(1.0, max(0.0, np.sum(delta_recall * precision))))

    def f1_max(self) -> tuple[float, float]:
        precision, recall, thresholds = self._precision_recall()
        f1 = 2.0 * precision * recall / (precision + recall + _F1_EPS)
        # Ties: take the lowest threshold, as argmax over scikit-learn's increasing thresholds would.
        i = f1.size - 1 - int(np.argmax(f1[::-1]))
        return float(f1[i]), float(thresholds[i])

    # AUPRO -------------------------------------------------------------------------------------------
    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        labels, n_regions = ndi.label(self.masks, structure=_STRUCTURE_8_IN_PLANE)
        sizes = np.bincount(labels.reshape(-1), minlength=n_regions + 1)
        # Weight of an anomalous pixel: 1 / (size of its region * number of regions), so that the
        # cumulative weight above a threshold is the mean per-region overlap.  Label 0 (normal) -> 0.
        # The 1 / number-of-regions factor is applied as a division by the total weight (which is
        # the number of regions up to rounding), so that the last point is exactly PRO = 1.
        weight_of_label = np.zeros(n_regions + 1, dtype=np.float64)
        weight_of_label[1:] = 1.0 / sizes[1:].astype(np.float64)

        pro = weight_of_label[labels.reshape(-1)[self.order]]
        del labels
        np.cumsum(pro, out=pro)
        pro /= pro[-1]
        fp = np.cumsum(~self.truth, dtype=np.int32 if self.n_pixels < 2**31 else np.int64)

        # Thresholds are the distinct scores: keep only the last point of each run of equal scores.
        keep = np.empty(self.scores.size, dtype=bool)
        np.not_equal(self.scores[1:], self.scores[:-1], out=keep[:-1])
        keep[-1] = True
        idx = np.flatnonzero(keep)
        del keep

        fpr = fp[idx] / float(self.n_normal)
        pro = pro[idx]
        np.clip(fpr, None, 1.0, out=fpr)
        np.clip(pro, None, 1.0, out=pro)
        if not (fpr[0] == 0.0 and pro[0] == 0.0):
            fpr = np.concatenate(([0.0], fpr))
            pro = np.concatenate(([0.0], pro))
        if not (fpr[-1] == 1.0 and pro[-1] == 1.0):
            fpr = np.concatenate((fpr, [1.0]))
            pro = np.concatenate((pro, [1.0]))
        return fpr, pro

    def aupro(self, fpr_limit: float) -> float:
        fpr, pro = self.pro_curve()
        return _normalised_partial_area(fpr, pro, fpr_limit)


def _check_fpr_limit(fpr_limit: float) -> float:
    try:
        limit = float(fpr_limit)
    except (TypeError, ValueError):
        raise ValueError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}") from None
    if not (0.0 < limit <= 1.0):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    return limit


def _normalised_partial_area(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoid area under (fpr, pro) for fpr in [0, limit], divided by limit.

    ``fpr`` is non-decreasing and starts at 0.  When ``limit`` is not a curve point, PRO is interpolated
    linearly between the last point below and the first point above it.
    """
    stop = int(np.searchsorted(fpr, limit, side="right"))  # points [0, stop) have fpr <= limit
    x, y = fpr[:stop], pro[:stop]
    if x[-1] != limit:  # then fpr[stop - 1] < limit < fpr[stop]
        x0, x1, y0, y1 = fpr[stop - 1], fpr[stop], pro[stop - 1], pro[stop]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        x = np.append(x, limit)
        y = np.append(y, y_lim)
    return float(np.trapezoid(y, x) / limit)


def pixel_auroc(maps: Any, masks: Any) -> float:
    """ROC AUC over all pixels of all test images of a class (one number per class)."""
    m, g = _validate_pixels(maps, masks)
    return _PixelRanking(m, g, "pixel AUROC").auroc()


def pixel_ap(maps: Any, masks: Any) -> float:
    """Average precision over all pixels of all test images of a class."""
    m, g = _validate_pixels(maps, masks)
    return _PixelRanking(m, g, "pixel AP").ap()


def pro_curve(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The full per-region-overlap curve ``(fpr, pro)`` over every distinct score (MVTec definition).

    Starts at (0, 0) and ends at (1, 1); ``fpr`` is non-decreasing (vertical steps occur where a
    threshold only adds anomalous pixels).
    """
    m, g = _validate_pixels(maps, masks)
    return _PixelRanking(m, g, "PRO").pro_curve()


def aupro(maps: Any, masks: Any, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit`` (in (0, 1]), divided by ``fpr_limit``."""
    limit = _check_fpr_limit(fpr_limit)
    m, g = _validate_pixels(maps, masks)
    return _PixelRanking(m, g, "AUPRO").aupro(limit)


def pixel_f1_max(maps: Any, masks: Any) -> tuple[float, float]:
    """Best pixel F1 over the precision-recall curve and the score threshold that attains it.

    F1 = 2PR / (P + R + 1e-12); scikit-learn's final (P=1, R=0) point is left out.  A pixel is predicted
    anomalous when its score is >= the threshold.
    """
    m, g = _validate_pixels(maps, masks)
    return _PixelRanking(m, g, "pixel F1").f1_max()


# ----------------------------------------------------------------------------------------------------
# everything at once
# ----------------------------------------------------------------------------------------------------
def evaluate(
    image_scores: Any,
    maps: Any,
    masks: Any,
    *,
    labels: Any = None,
    fpr_limit: float = 0.3,
    pixel_metrics: bool = True,
) -> dict:
    """All metrics of one class.

    ``labels`` default to "the mask has an anomalous pixel".  The pixels are sorted once and shared by
    the pixel metrics.  Returns a JSON-serialisable dict with ``image_auroc``, ``image_ap``,
    ``pixel_auroc``, ``pixel_ap``, ``aupro``, ``pixel_f1_max``, ``pixel_f1_threshold``, ``n_images``,
    ``n_anomalous`` (anomalous images) and ``grid`` ([H, W] of the maps).
    """
    limit = _check_fpr_limit(fpr_limit)
    m, g = _validate_pixels(maps, masks)
    n = m.shape[0]
    n_scores = int(np.size(to_numpy(image_scores)))
    if n_scores != n:
        raise ValueError(f"got {n_scores} image scores for {n} maps (maps shape {tuple(m.shape)})")
    if labels is None:
        labels = g.reshape(n, -1).any(axis=1)
    s, lab = _validate_image_level(image_scores, labels)
    image = {
        "image_auroc": float(roc_auc_score(lab, s)),
        "image_ap": image_ap(s, lab),
        "n_images": int(n),
        "n_anomalous": int(np.count_nonzero(lab)),
        "grid": [int(m.shape[1]), int(m.shape[2])],
    }
    if not pixel_metrics:  # a class without masks (a user's folder): image metrics only
        return {
            **image,
            **dict.fromkeys(("pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max", "pixel_f1_threshold")),
        }

    ranking = _PixelRanking(m, g, "pixel metrics")
    # AUPRO first: its temporaries are freed before scikit-learn's counts are built (lower peak memory).
    aupro_value = ranking.aupro(limit)
    f1, thr = ranking.f1_max()
    return {
        **image,
        "pixel_auroc": ranking.auroc(),
        "pixel_ap": ranking.ap(),
        "aupro": aupro_value,
        "pixel_f1_max": f1,
        "pixel_f1_threshold": thr,
    }
