"""texad's one evaluation protocol, shared by every method (spec README, decision 2).

Each method produces maps at its own input size; they are resized bilinearly to the evaluation grid
(N x N, or the masks' native size), masks come onto the same grid by area interpolation and ``>= 0.5``,
and all metrics are computed there. Image scores are the method's own (passed in).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from texad.evaluation.grid import resize_maps
from texad.evaluation.metrics import evaluate


def grid_size(resolution: int | str, native_hw: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the evaluation grid: ``resolution`` x ``resolution``, or the masks' own size for ``native``."""
    if resolution == "native":
        return (int(native_hw[0]), int(native_hw[1]))
    return (int(resolution), int(resolution))


def evaluate_on_grid(
    maps: Any, image_scores: Any, masks_on_grid: np.ndarray, labels: Any, *, fpr_limit: float = 0.3
) -> tuple[dict, np.ndarray]:
    """Resize ``maps`` (N, h, w) to the masks' grid and compute every metric; returns (metrics, maps on grid).

    ``labels`` come from the dataset (a defect folder), not from the resized masks, so a tiny defect that
    vanishes on a coarse grid still counts as an anomalous image.
    """
    masks_on_grid = np.asarray(masks_on_grid, dtype=bool)
    on_grid = resize_maps(maps, tuple(masks_on_grid.shape[-2:]))
    metrics = evaluate(image_scores, on_grid, masks_on_grid, labels=labels, fpr_limit=fpr_limit)
    return metrics, on_grid
