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


def center_crop(x, size: tuple[int, int]):
    """Crop the last two axes of a tensor to ``size`` around the centre (offsets rounded as torchvision's
    ``CenterCrop``)."""
    h, w = x.shape[-2:]
    ch, cw = size
    if ch > h or cw > w:
        raise ValueError(f"cannot centre-crop {h}x{w} to {ch}x{cw}")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top : top + ch, left : left + cw]


def mask_geometry(
    resolution: int | str, native_hw: tuple[int, int], keep: float = 1.0
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size the masks are loaded at, evaluation grid after a centre crop that keeps the fraction ``keep`` of each
    side). Without a crop both are :func:`grid_size`; with one (SimpleNet's official resize-then-crop) the masks
    are loaded at a grid that many times larger and cropped the same way, so the evaluation covers exactly the
    cropped field of view while keeping the mask rule (area interpolation, >= 0.5)."""
    if keep == 1.0:
        grid = grid_size(resolution, native_hw)
        return grid, grid
    if resolution == "native":
        load = (int(native_hw[0]), int(native_hw[1]))
        return load, (int(round(load[0] * keep)), int(round(load[1] * keep)))
    side = int(resolution)
    load_side = int(round(side / keep))
    return (load_side, load_side), (side, side)
