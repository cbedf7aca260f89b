"""Method A map post-processing (spec ``method_a_score_tscales.md`` §3.3, steps 2-4; all CHOSEN).

1. Per-class normalisation (``normalise="train_stats"``, :mod:`texad.evaluation.train_stats`): M <- (M - mu) /
   (sd + 1e-6), with mu and sd the per-pixel mean and std of the raw maps of the class's *training* images (removes
   the texture's baseline score energy and fixed-position effects such as borders). ``"none"`` keeps M.
2. Gaussian smoothing (``texad.evaluation.grid.gaussian_smooth``, std in pixels of the map).
3. Image score = maximum of the smoothed map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from texad.evaluation.grid import gaussian_smooth
from texad.evaluation.train_stats import NORM_EPS, TrainStats, normalise_maps, train_statistics

__all__ = ["NORM_EPS", "TrainStats", "train_statistics", "normalise_maps", "anomaly_maps"]


def anomaly_maps(raw: Any, stats: TrainStats | None, smoothing_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised, smoothed maps (N, H, W) float32 and image scores (N,) = max of each smoothed map."""
    maps = gaussian_smooth(normalise_maps(raw, stats), smoothing_sigma)
    scores = maps.reshape(maps.shape[0], -1).max(axis=1) if maps.shape[0] else np.zeros(0, np.float32)
    return maps, scores
