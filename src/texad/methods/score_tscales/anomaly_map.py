"""Method A map post-processing (spec ``method_a_score_tscales.md`` §3.3, steps 2-4; all CHOSEN).

1. Per-class normalisation (``normalise="train_stats"``): M <- (M - mu) / (sd + 1e-6), with mu and sd the per-pixel
   mean and std of the raw maps of the class's *training* images (removes the texture's baseline score energy and
   fixed-position effects such as borders). ``"none"`` keeps M.
2. Gaussian smoothing (``texad.evaluation.grid.gaussian_smooth``, std in pixels of the map).
3. Image score = maximum of the smoothed map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from texad.evaluation.grid import gaussian_smooth

__all__ = ["NORM_EPS", "TrainStats", "train_statistics", "normalise_maps", "anomaly_maps"]

NORM_EPS = 1e-6


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


@dataclass(frozen=True)
class TrainStats:
    """Per-pixel mean and (population) std of the raw training maps, each (H, W)."""

    mean: np.ndarray
    std: np.ndarray


def train_statistics(train_maps: Any) -> TrainStats:
    """Statistics of raw maps (N, H, W) of normal training images (N >= 2)."""
    m = _np(train_maps)
    if m.ndim != 3 or m.shape[0] < 2:
        raise ValueError(f"need raw training maps of shape (N >= 2, H, W), got {m.shape}")
    return TrainStats(mean=m.mean(axis=0), std=m.std(axis=0))


def normalise_maps(maps: Any, stats: TrainStats | None) -> np.ndarray:
    """(M - mu) / (sd + 1e-6) per pixel, or M unchanged for ``stats=None``; float64 (N, H, W)."""
    m = _np(maps)
    if stats is None:
        return m
    if m.shape[-2:] != stats.mean.shape:
        raise ValueError(
            f"maps of size {m.shape[-2:]} do not match training statistics of size {stats.mean.shape}"
        )
    return (m - stats.mean) / (stats.std + NORM_EPS)


def anomaly_maps(raw: Any, stats: TrainStats | None, smoothing_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised, smoothed maps (N, H, W) float32 and image scores (N,) = max of each smoothed map."""
    maps = gaussian_smooth(normalise_maps(raw, stats), smoothing_sigma)
    scores = maps.reshape(maps.shape[0], -1).max(axis=1) if maps.shape[0] else np.zeros(0, np.float32)
    return maps, scores
