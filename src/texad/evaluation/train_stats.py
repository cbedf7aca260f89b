"""Per-pixel statistics of normal training images' anomaly maps, and the maps standardised by them.

M <- (M - mu) / (sd + 1e-6), with mu and sd the per-pixel mean and (population) std of the raw maps of a class's
*training* images. It removes the score a method gives normal texture anyway, and fixed-position effects such as
the borders of a reconstruction (Method A's CHOSEN step 2; Method B's ``normalise: train_stats``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["NORM_EPS", "TrainStats", "train_statistics", "normalise_maps"]

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
