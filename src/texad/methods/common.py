"""Pieces every method's run shares: per-image noise seeds, the compact maps file and the result record.

A run writes one result JSON (``texad.results.record``) and one ``.npz`` beside it with the maps on the
evaluation grid (float16), the image scores, labels, image paths and, for reconstruction methods, the
reconstructions (uint8, N x H x W x 3) used by the Figure-1 grids.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from texad.atomic import atomic_write
from texad.evaluation.protocol import evaluate_on_grid
from texad.results.record import build_result, device_info

__all__ = ["RunIdentity", "image_seed", "save_maps", "evaluate_and_save_maps", "run_result"]


class RunIdentity(Protocol):
    """What every method's run spec carries: the run key, the evaluation protocol and the device."""

    run_name: str
    dataset: str
    class_name: str
    variant: str
    seed: int
    resolution: int | str
    fpr_limit: float
    device: str


def image_seed(seed: int, class_name: str, index: int) -> int:
    """The noise seed of one test image: independent of batch size and order."""
    return zlib.crc32(f"{seed}/{class_name}/{index}".encode()) & 0x7FFFFFFF


def to_uint8_hwc(images01) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> uint8 (N, H, W, C), as the maps files store reconstructions."""
    return (images01.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def save_maps(path: Path, **arrays: np.ndarray) -> None:
    """Maps (float16), scores, labels and reconstructions, compressed, written atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()), binary=True)


def evaluate_and_save_maps(
    out_maps: Path,
    maps: np.ndarray,
    scores: np.ndarray,
    masks: list[np.ndarray],
    labels: list[np.ndarray],
    samples,
    *,
    fpr_limit: float,
    **arrays: np.ndarray,
) -> dict:
    """Score a class's maps on the evaluation grid (per-batch ``masks`` and ``labels`` in test order) and write the
    maps file: the maps on that grid, the scores, labels and image paths of ``samples``, plus ``arrays`` (e.g. the
    reconstructions). Returns the metrics."""
    labels_all = np.concatenate(labels)
    metrics, on_grid = evaluate_on_grid(maps, scores, np.concatenate(masks), labels_all, fpr_limit=fpr_limit)
    save_maps(
        out_maps,
        maps=on_grid.astype(np.float16),
        scores=np.asarray(scores).astype(np.float32),
        labels=labels_all,
        paths=np.array([str(s.path) for s in samples]),
        **arrays,
    )
    return metrics


def run_result(
    spec: RunIdentity,
    method: str,
    *,
    metrics: dict,
    grid,
    switches: dict,
    timings: dict,
    precision: str = "fp32",
    **fields: Any,
) -> dict:
    """The result record of one run: the run key and evaluation protocol from ``spec``, the device it ran on, and
    the method's own ``fields`` (config_hash, backbone, model_hash, extra) passed on to ``build_result``."""
    return build_result(
        run_name=spec.run_name,
        dataset=spec.dataset,
        class_name=spec.class_name,
        method=method,
        variant=spec.variant,
        seed=spec.seed,
        metrics=metrics,
        evaluation={
            "resolution": spec.resolution,
            "fpr_limit": spec.fpr_limit,
            "grid": list(grid),
            "switches": switches,
        },
        timings=timings,
        device=device_info(spec.device, precision),
        **fields,
    )
