"""One class's bootstrap: every run of the class resampled on the same test images (``texad bootstrap``).

Inputs: the result JSON and maps file of each run of one (dataset, class): every method, variant and seed that the
tables and claims use. Every run must score the same test images in the same order (the maps files' ``paths``), so
that one set of stratified resamples (:func:`texad.evaluation.uncertainty.bootstrap_weights`) serves them all: a
difference between two runs is then a paired comparison. The rows are drawn from ``evaluation.bootstrap.seed`` and
the class's name (:func:`class_seed`), so classes are resampled independently of each other.

Per run and metric the file holds the exact estimate (the result JSON's, as the tables show it) and B resampled
values. Pixel metrics come from quantile-binned histograms of the saved maps; each run's resampled values are
shifted by (exact estimate − binned estimate on all images), so that the binning moves no interval off the
number it surrounds (the shift is recorded, and is at most a few 1e-4 at 1000 bins); shifted values are clipped to
[0, 1], the range of every metric here.

The file (``results/uncertainty/<dataset>/<class>.npz``) holds:

- ``dataset``, ``class``, ``metrics`` (M), ``level``, ``resamples``, ``seed``, ``row_seed`` (the class's own);
- per run (R): ``method``, ``variant``, ``seed_of_run``, ``point`` (a run's ablation point, its variant name when it
  records none), ``nfe_per_image`` (NaN when not a diffusion method), ``estimate`` (R, M), ``binning_shift`` (R, M)
  and ``replicates`` (R, B, M) float32 (NaN for a pixel metric of a class without masks);
- the image scores ``scores`` (R, N) and ``labels`` (N), for DeLong's test, and the test images' ``paths`` (N).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from texad.atomic import atomic_write
from texad.config.settings import build

__all__ = ["FORMAT", "METRICS", "BootstrapSettings", "class_seed", "bootstrap_class", "write_bootstrap"]

#: Version of the file's layout.
FORMAT = "texad.bootstrap/1"
#: The metrics resampled, in the file's order.
METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
_PIXEL_METRICS = METRICS[1:]
N_BINS = 1000  # quantile bins of the pixel scores: shifts of a few 1e-4 at most (tests/test_uncertainty.py)


@dataclass(frozen=True)
class BootstrapSettings:
    """``evaluation.bootstrap``, key for key."""

    resamples: int
    level: float
    seed: int

    @classmethod
    def from_config(cls, config: dict) -> BootstrapSettings:
        """From a validated config (or the part of one that ``texad bootstrap`` reads)."""
        return build(cls, config["evaluation"]["bootstrap"], class_name=None, where="evaluation.bootstrap")


def class_seed(seed: int, dataset: str, cls: str) -> int:
    """The resamples' seed of one class: from ``evaluation.bootstrap.seed`` and the class's name only."""
    return zlib.crc32(f"{seed}/bootstrap/{dataset}/{cls}".encode()) & 0x7FFFFFFF


def _run_arrays(result: dict, maps, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate (M), shift (M), replicates (B, M)) of one run."""
    from texad.evaluation.uncertainty import image_auroc_resampled, pixel_histograms, pixel_metrics_resampled

    metrics, fpr_limit = result["metrics"], float(result["evaluation"]["fpr_limit"])
    estimate = np.array([np.nan if metrics[m] is None else float(metrics[m]) for m in METRICS])
    labels = maps.labels.astype(bool)
    ones = np.ones((1, labels.size))
    replicates = np.full((weights.shape[0], len(METRICS)), np.nan)
    binned = np.full(len(METRICS), np.nan)
    scores = np.asarray(maps.scores, dtype=np.float64)
    replicates[:, 0] = image_auroc_resampled(scores, labels, weights)
    binned[0] = image_auroc_resampled(scores, labels, ones)[0]
    if not np.isnan(estimate[1:]).all():
        hist = pixel_histograms(maps.maps.astype(np.float64), maps.masks, n_bins=N_BINS)
        resampled = pixel_metrics_resampled(hist, np.vstack([ones, weights]), fpr_limit)
        for j, name in enumerate(_PIXEL_METRICS, start=1):
            binned[j], replicates[:, j] = resampled[name][0], resampled[name][1:]
    shift = estimate - binned
    # every metric here lies in [0, 1]: a shifted replicate of a perfect separation must not pass 1
    return estimate, shift, np.clip(replicates + shift, 0.0, 1.0)


def _check_same_class(first: tuple, path: Path, result: dict, run_maps) -> None:
    """A run must be of the first run's class and score its test images in its order."""
    first_path, first_result, first_maps = first
    dataset, cls = first_result["dataset"], first_result["class"]
    if (result["dataset"], result["class"]) != (dataset, cls):
        raise ValueError(
            f"{path} is a run of {result['dataset']}/{result['class']}, not {dataset}/{cls}: one bootstrap job "
            "resamples one class"
        )
    if not np.array_equal(run_maps.paths, first_maps.paths) or not np.array_equal(
        run_maps.labels, first_maps.labels
    ):
        raise ValueError(
            f"{path} scored other test images (or another order) than {first_path}: a class's runs must share "
            "their test images to be resampled together; rerun the stale one"
        )


def bootstrap_class(
    results: Sequence[str | Path], maps: Sequence[str | Path], settings: BootstrapSettings
) -> dict:
    """The arrays of one class's bootstrap file (see the module doc) from its runs' result JSONs and maps files,
    given in the same order. Errors name the file and say what to do."""
    from texad.evaluation.thresholds import check_maps_belong
    from texad.evaluation.uncertainty import bootstrap_weights
    from texad.report.figures import load_maps
    from texad.results.record import read_result

    if len(results) != len(maps) or not results:
        raise ValueError(
            f"give one maps file per result JSON: {len(results)} results, {len(maps)} maps files"
        )
    first = None  # (path, result, maps) of the first run: every other one must share its test images
    weights = None
    runs, estimate, shift, replicates, scores = [], [], [], [], []
    for result_path, maps_path in zip(results, maps, strict=True):  # one maps file in memory at a time
        result, run_maps = read_result(result_path), load_maps(maps_path)
        check_maps_belong(result, run_maps, Path(result_path))
        if result["metrics"]["pixel_auroc"] is not None and run_maps.masks is None:
            raise ValueError(
                f"maps file {maps_path} records no masks (written by an earlier texad): rerun its run to record them"
            )
        if first is None:
            first = (Path(result_path), result, run_maps)
            row_seed = class_seed(settings.seed, result["dataset"], result["class"])
            weights = bootstrap_weights(run_maps.labels, settings.resamples, row_seed)
        _check_same_class(first, Path(result_path), result, run_maps)
        e, d, r = _run_arrays(result, run_maps, weights)
        runs.append(result)
        estimate.append(e)
        shift.append(d)
        replicates.append(r)
        scores.append(np.asarray(run_maps.scores, dtype=np.float64))
    _, first_result, first_maps = first
    dataset, cls = first_result["dataset"], first_result["class"]
    nfe = [r["timings"]["nfe_per_image"] for r in runs]
    return {
        "format": np.array(FORMAT),
        "dataset": np.array(dataset),
        "class": np.array(cls),
        "metrics": np.array(METRICS),
        "level": np.array(settings.level),
        "resamples": np.array(settings.resamples),
        "seed": np.array(settings.seed),
        "row_seed": np.array(row_seed),
        "method": np.array([r["method"] for r in runs]),
        "variant": np.array([r["variant"] for r in runs]),
        "seed_of_run": np.array([r["seed"] for r in runs], dtype=np.int64),
        "point": np.array([str(r.get("extra", {}).get("ablation_point") or r["variant"]) for r in runs]),
        "nfe_per_image": np.array([np.nan if v is None else float(v) for v in nfe]),
        "estimate": np.array(estimate),
        "binning_shift": np.array(shift),
        "replicates": np.array(replicates, dtype=np.float32),
        "scores": np.array(scores),
        "labels": np.asarray(first_maps.labels).astype(np.int8),
        "paths": np.asarray(first_maps.paths).astype(str),
    }


def write_bootstrap(arrays: dict, out: str | Path) -> Path:
    """Write a class's bootstrap file atomically (compressed ``.npz``)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write(out, lambda fh: fh.write(buffer.getvalue()), binary=True)
