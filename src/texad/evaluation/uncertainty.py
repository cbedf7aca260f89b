"""How sure a metric is: stratified bootstrap over test images, paired differences, and DeLong's test.

Every resample draws, with replacement, as many normal and as many anomalous test images as the test set holds
(stratified by label), and the pixel metrics resample whole images, never pixels. A resample is a row of
multiplicities ``W`` (B, N). Each metric is computed from per-image histograms, so all B resamples cost a few
matrix products:

- image AUROC: per image a one-hot over the distinct scores (exact, ties counted half, as scikit-learn does);
- pixel AUROC and pixel AP: per image the counts of normal and anomalous pixels per score bin; the bin edges are
  ``n_bins`` quantiles of all pixel scores and as many of the anomalous pixels' (AP turns on their ranks), so a
  resample's value is that of scores rounded to their bin (the point estimate stays the exact one of
  :mod:`texad.evaluation.metrics`; only the spread comes from here);
- AUPRO: per image, per bin, the sum over its defect regions of the share of the region above the bin; a
  resample's PRO curve is the multiplicity-weighted sum over images divided by the number of regions drawn.

A paired comparison applies the same rows ``W`` to two methods' outputs on the same test images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy import stats

from texad.evaluation.metrics import _STRUCTURE_8_IN_PLANE, _normalised_partial_area

__all__ = [
    "Interval",
    "PixelHistograms",
    "bootstrap_weights",
    "delong",
    "image_auroc_resampled",
    "interval",
    "pixel_histograms",
    "pixel_metrics_resampled",
]


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval at ``level`` (e.g. 0.95) from ``n`` resamples."""

    low: float
    high: float
    level: float
    n: int


def interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """The central percentile interval of bootstrap ``values`` (NaN resamples dropped)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite bootstrap values to take an interval of")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(v, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), float(level), int(v.size))


def bootstrap_weights(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(B, N) multiplicities of a stratified bootstrap: each row draws as many normal and as many anomalous
    images as ``labels`` holds, with replacement, from their own group."""
    labels = np.asarray(labels).astype(bool)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    w = np.zeros((n_resamples, labels.size), dtype=np.float64)
    for group in (np.flatnonzero(~labels), np.flatnonzero(labels)):
        if group.size == 0:
            continue
        picks = group[rng.integers(0, group.size, size=(n_resamples, group.size))]
        np.add.at(w, (np.arange(n_resamples)[:, None], picks), 1.0)
    return w


def _auroc_from_hist(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC per row from counts of positives and negatives per value, the values in ascending order; a tie
    between a positive and a negative counts one half."""
    below = np.cumsum(neg, axis=-1) - neg  # negatives strictly below each value
    num = (pos * (below + 0.5 * neg)).sum(axis=-1)
    den = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _ap_from_hist(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision per row (scikit-learn's step rule: thresholds at the distinct values), values ascending."""
    tp = np.cumsum(pos[..., ::-1], axis=-1)
    fp = np.cumsum(neg[..., ::-1], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall_step = pos[..., ::-1] / tp[..., -1:]
    return (recall_step * precision).sum(axis=-1)


def image_auroc_resampled(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Image AUROC of every resample (rows of ``weights``), exact with ties."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    values, index = np.unique(scores, return_inverse=True)
    onehot = np.zeros((scores.size, values.size))
    onehot[np.arange(scores.size), index] = 1.0
    pos = weights @ (onehot * labels[:, None])
    neg = weights @ (onehot * ~labels[:, None])
    return _auroc_from_hist(pos, neg)


@dataclass(frozen=True)
class PixelHistograms:
    """Per image (N) and score bin (K, ascending): normal and anomalous pixel counts, and the summed share of
    each defect region at or above the bin (for PRO), with the number of regions per image."""

    normal: np.ndarray
    anomalous: np.ndarray
    region_share_above: np.ndarray
    regions: np.ndarray


def pixel_histograms(maps: np.ndarray, masks: np.ndarray, n_bins: int = 1000) -> PixelHistograms:
    """The histograms behind :func:`pixel_metrics_resampled`: ``n_bins`` quantile bins of all pixel scores."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    n, k = maps.shape[0], n_bins
    inner = np.linspace(0.0, 1.0, k + 1)[1:-1]
    # quantiles of all pixels, and as many of the anomalous ones: AP and PRO turn on the ranks of the defects
    edges = np.quantile(maps, inner)
    if masks.any():
        edges = np.concatenate([edges, np.quantile(maps[masks], inner)])
    edges = np.unique(edges)
    bins = np.searchsorted(edges, maps.reshape(n, -1), side="right")  # 0 .. len(edges)
    k = edges.size + 1
    offset = (np.arange(n) * k)[:, None]
    flat = (bins + offset).ravel()
    truth = masks.reshape(n, -1).ravel()
    anomalous = np.bincount(flat[truth], minlength=n * k).reshape(n, k).astype(np.float64)
    normal = np.bincount(flat[~truth], minlength=n * k).reshape(n, k).astype(np.float64)
    share = np.zeros((n, k))
    regions = np.zeros(n)
    for i in range(n):
        if not masks[i].any():
            continue
        labels, count = ndi.label(masks[i], structure=_STRUCTURE_8_IN_PLANE[1])
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.float64)
        lab = labels.ravel()
        hit = lab > 0
        per_region = np.bincount((lab[hit] - 1) * k + bins[i][hit], minlength=count * k).reshape(count, k)
        above = np.cumsum(per_region[:, ::-1], axis=1)[:, ::-1] / sizes[:, None]  # share at or above each bin
        share[i] = above.sum(axis=0)
        regions[i] = count
    return PixelHistograms(normal, anomalous, share, regions)


def pixel_metrics_resampled(h: PixelHistograms, weights: np.ndarray, fpr_limit: float = 0.3) -> dict:
    """Pixel AUROC, pixel AP and AUPRO of every resample (rows of ``weights``)."""
    neg, pos = weights @ h.normal, weights @ h.anomalous
    pro = (weights @ h.region_share_above) / (weights @ h.regions)[:, None]
    # the PRO curve at thresholds from high to low: FPR of the normal pixels at or above each bin
    fpr = np.cumsum(neg[:, ::-1], axis=1) / neg.sum(axis=1, keepdims=True)
    pro_desc = pro[:, ::-1]
    aupro = np.array([
        _normalised_partial_area(np.concatenate(([0.0], f)), np.concatenate(([0.0], p)), fpr_limit)
        for f, p in zip(fpr, pro_desc, strict=True)
    ])  # fmt: skip
    return {"pixel_auroc": _auroc_from_hist(pos, neg), "pixel_ap": _ap_from_hist(pos, neg), "aupro": aupro}


def _placements(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of one score vector: per anomalous image the share of normal images below
    it, per normal image the share of anomalous images above it (ties count one half)."""
    x, y = scores[labels], scores[~labels]
    m, n = x.size, y.size
    rx = stats.rankdata(np.concatenate([x, y]))[:m]
    ry = stats.rankdata(np.concatenate([y, x]))[:n]
    return (rx - stats.rankdata(x)) / n, 1.0 - (ry - stats.rankdata(y)) / m


def delong(scores_a: np.ndarray, labels: np.ndarray, scores_b: np.ndarray | None = None) -> dict:
    """DeLong's AUROC variance (one method) or the paired difference A − B on the same images, with the
    two-sided p-value of a zero difference (DeLong, DeLong & Clarke-Pearson 1988; structural components).

    Scores are (N,) or (S, N) for S seeds of a method: then the AUROC is the mean over seeds, whose structural
    components are the seeds' mean components (a U-statistic of the averaged kernel)."""
    labels = np.asarray(labels).astype(bool)
    methods = [np.atleast_2d(np.asarray(scores_a, dtype=np.float64))]
    if scores_b is not None:
        methods.append(np.atleast_2d(np.asarray(scores_b, dtype=np.float64)))
    m, n = int(labels.sum()), int((~labels).sum())
    v10, v01 = [], []
    for seeds in methods:
        parts = [_placements(s, labels) for s in seeds]
        v10.append(np.mean([p[0] for p in parts], axis=0))
        v01.append(np.mean([p[1] for p in parts], axis=0))
    aucs = [float(v.mean()) for v in v10]
    s10, s01 = np.atleast_2d(np.cov(np.array(v10))), np.atleast_2d(np.cov(np.array(v01)))
    cov = s10 / m + s01 / n
    if scores_b is None:
        return {"auroc": aucs[0], "variance": float(cov[0, 0])}
    diff = aucs[0] - aucs[1]
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    z = diff / np.sqrt(var) if var > 0 else (0.0 if diff == 0 else np.inf)
    return {"difference": diff, "variance": var, "p_value": float(2 * stats.norm.sf(abs(z)))}
