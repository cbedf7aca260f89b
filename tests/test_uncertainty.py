"""Bootstrap intervals, paired differences and DeLong's test (texad.evaluation.uncertainty)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from texad.evaluation.metrics import evaluate
from texad.evaluation.uncertainty import (
    bootstrap_weights,
    delong,
    image_auroc_resampled,
    interval,
    pixel_histograms,
    pixel_metrics_resampled,
)


def _class(seed: int = 0, n: int = 12):
    """Maps of few distinct values (so the bins hold one value each and the histograms are exact), two defect
    regions on some anomalous images, and image scores with ties."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * (n // 2) + [1] * (n // 2))
    masks = np.zeros((n, 16, 16), bool)
    for i in range(n // 2, n):
        masks[i, 3:7, 3:7] = True
        masks[i, 10:12, 9:14] = i % 2 == 0
    maps = rng.integers(0, 15, (n, 16, 16)).astype(float) + masks * rng.integers(0, 6, (n, 16, 16))
    scores = np.round(maps.reshape(n, -1).mean(1), 1)
    return maps, masks, scores, labels


def test_the_resample_of_every_image_once_is_the_exact_metric():
    maps, masks, scores, labels = _class()
    once = np.ones((1, len(labels)))
    exact = evaluate(scores, maps, masks, labels=labels)
    pixel = pixel_metrics_resampled(pixel_histograms(maps, masks), once)
    for key in ("pixel_auroc", "pixel_ap", "aupro"):
        assert pixel[key][0] == pytest.approx(exact[key], abs=1e-12), key
    assert image_auroc_resampled(scores, labels, once)[0] == pytest.approx(roc_auc_score(labels, scores))


def test_the_bootstrap_is_stratified_and_seeded():
    labels = np.array([0, 0, 0, 1, 1])
    w = bootstrap_weights(labels, 200, seed=3)
    assert w.shape == (200, 5) and (w[:, :3].sum(1) == 3).all() and (w[:, 3:].sum(1) == 2).all()
    assert (w == bootstrap_weights(labels, 200, seed=3)).all() and (
        w != bootstrap_weights(labels, 200, 4)
    ).any()
    # a multiplicity of 2 counts an image twice: the same as duplicating it
    maps, masks, scores, labels = _class(1)
    row = bootstrap_weights(labels, 1, seed=5)[0]
    picks = np.repeat(np.arange(len(labels)), row.astype(int))
    exact = evaluate(scores[picks], maps[picks], masks[picks], labels=labels[picks])
    pixel = pixel_metrics_resampled(pixel_histograms(maps, masks), row[None])
    assert pixel["aupro"][0] == pytest.approx(exact["aupro"], abs=1e-12)
    assert pixel["pixel_ap"][0] == pytest.approx(exact["pixel_ap"], abs=1e-12)
    assert image_auroc_resampled(scores, labels, row[None])[0] == pytest.approx(exact["image_auroc"])


def test_perfect_separation_gives_a_degenerate_interval_at_one():
    labels = np.array([0] * 20 + [1] * 20)
    scores = np.concatenate([np.linspace(0, 1, 20), np.linspace(2, 3, 20)])
    ci = interval(image_auroc_resampled(scores, labels, bootstrap_weights(labels, 500, 0)))
    assert ci.low == ci.high == 1.0 and ci.n == 500


def test_the_bootstrap_spread_matches_delongs_variance():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 150 + [1] * 150)
    scores = rng.normal(size=300) + labels * 1.0  # AUROC about 0.76
    boot = image_auroc_resampled(scores, labels, bootstrap_weights(labels, 4000, 1))
    analytic = delong(scores, labels)
    assert analytic["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert boot.std() == pytest.approx(np.sqrt(analytic["variance"]), rel=0.08)


def test_delong_on_a_hand_computed_case():
    # positives 0.8, 0.6; negatives 0.7, 0.2: AUROC 3/4; per positive 1, 1/2; per negative 1/2, 1;
    # variance = var(1, 1/2) / 2 + var(1/2, 1) / 2 = 0.125 / 2 + 0.125 / 2
    result = delong(np.array([0.8, 0.6, 0.7, 0.2]), np.array([1, 1, 0, 0]))
    assert result == {"auroc": 0.75, "variance": pytest.approx(0.125)}


def test_paired_differences_of_identical_maps_are_exactly_zero():
    maps, masks, scores, labels = _class(2)
    w = bootstrap_weights(labels, 300, seed=0)
    a = pixel_metrics_resampled(pixel_histograms(maps, masks), w)
    b = pixel_metrics_resampled(pixel_histograms(maps.copy(), masks), w)
    for key in a:
        assert (a[key] - b[key] == 0).all()
    assert (
        image_auroc_resampled(scores, labels, w) - image_auroc_resampled(scores.copy(), labels, w) == 0
    ).all()
    paired = delong(scores, labels, scores.copy())
    assert paired["difference"] == 0.0 and paired["p_value"] == 1.0
    # a better method: the paired bootstrap interval of the difference and DeLong's agree on its sign
    better = scores + labels * 3.0
    diff = image_auroc_resampled(better, labels, w) - image_auroc_resampled(scores, labels, w)
    assert interval(diff).low > 0 and delong(better, labels, scores)["difference"] > 0
