"""A run's deployment thresholds: one image and one pixel threshold per benchmark run, from its test set.

Inputs: the run's result JSON (``results/runs/<dataset>/<class>/<method>/<variant>/seed<k>.json``) and its maps
file (``results/maps/<same>/seed<k>.npz``: per-image scores, labels, and the maps and masks on the evaluation
grid, :func:`texad.methods.run.save_maps`). The rule is ``evaluation.threshold`` (:class:`ThresholdSettings`):

- ``fpr``: chosen on the normal test images only (``test/good``: held out from training, never anomalous). The
  image threshold is the value of 0-based rank ``ceil((1 - fpr) (n - 1))`` among their n sorted scores
  (:func:`quantile_threshold`), so at most a fraction ``fpr`` of them lies above it (fpr 0: their maximum); the
  pixel threshold is the same over every pixel of their maps.
- ``f1_max``: the image threshold of best F1 over every test image and the pixel threshold of best F1 over every
  test pixel (the masks), on scikit-learn's precision-recall curve. It is chosen with the test labels, so the
  file marks it ``optimistic``. A class without masks gets no pixel threshold (null, with the reason).

A value is anomalous when it is *greater than* its threshold (as ``texad predict`` flags). The precision-recall
curve counts values *at or above* its threshold, so an ``f1_max`` threshold is the largest float32 below the
curve's: the maps file stores float32 scores and maps, so the same values are flagged.

The file (``<result stem>.threshold.json`` beside the result, :func:`threshold_path`) also holds what the
thresholds achieve on the test set (image and pixel FPR, TPR and F1; in-sample for the images they were chosen
on), the run and its model's identity, and the sha256 of both inputs. ``texad predict --model <result>`` reads it
(:func:`read_thresholds`) when no ``--normal`` images are given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from texad.config.settings import build, to_block

__all__ = [
    "FORMAT",
    "RULES",
    "SUFFIX",
    "ThresholdSettings",
    "quantile_threshold",
    "f1_max_threshold",
    "run_thresholds",
    "write_thresholds",
    "threshold_path",
    "read_thresholds",
]

#: Version of the threshold file's layout.
FORMAT = "texad.threshold/1"
RULES = ("fpr", "f1_max")
#: A run's threshold file is its result's name with this in place of ``.json``.
SUFFIX = ".threshold.json"
_F1_EPS = 1e-12  # as texad.evaluation.metrics: F1 = 2PR / (P + R + eps)


@dataclass(frozen=True)
class ThresholdSettings:
    """``evaluation.threshold``, key for key."""

    rule: str
    fpr: float

    @classmethod
    def from_config(cls, config: dict) -> ThresholdSettings:
        """From a validated config (or the part of one that ``texad threshold`` reads)."""
        return build(cls, config["evaluation"]["threshold"], class_name=None, where="evaluation.threshold")


def threshold_path(result: str | Path) -> Path:
    """The threshold file of the result JSON ``result``: ``seed0.json`` -> ``seed0.threshold.json``."""
    result = Path(result)
    return result.with_name(result.name.removesuffix(".json") + SUFFIX)


# ------------------------------------------------------------------------------------------------ rules
def quantile_threshold(values: np.ndarray, fpr: float) -> float:
    """The ``1 - fpr`` quantile of ``values`` taken at a data point at or above it (at most a fraction
    ``fpr`` of the values is larger)."""
    return float(np.quantile(np.asarray(values, dtype=np.float64).ravel(), 1.0 - fpr, method="higher"))


def f1_max_threshold(values: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of best F1 on scikit-learn's precision-recall curve, where ``values >= threshold`` are
    the positives (ties: the lowest threshold, as :func:`texad.evaluation.metrics.pixel_f1_max`)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(np.asarray(truth, bool).ravel(), np.ravel(values))
    precision, recall = precision[:-1], recall[:-1]  # the final (P=1, R=0) point has no threshold
    f1 = 2.0 * precision * recall / (precision + recall + _F1_EPS)
    i = int(np.argmax(f1))  # thresholds increase: the first maximum is the lowest threshold
    return float(thresholds[i]), float(f1[i])


def _below(threshold: float) -> float:
    """The largest float32 below ``threshold``: ``value > it`` flags the float32 values ``>= threshold``."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


def _rates(values: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """FPR, TPR and F1 of ``values > threshold`` against ``truth`` (None where a class of it is empty)."""
    flagged = np.asarray(values) > threshold
    truth = np.asarray(truth, bool)
    n_pos = int(np.count_nonzero(truth))
    n_neg = truth.size - n_pos
    tp = int(np.count_nonzero(flagged & truth))
    fp = int(np.count_nonzero(flagged & ~truth))
    return {
        "fpr": fp / n_neg if n_neg else None,
        "tpr": tp / n_pos if n_pos else None,
        "f1": 2 * tp / (2 * tp + fp + (n_pos - tp)) if n_pos else None,
        "n_normal": n_neg,
        "n_anomalous": n_pos,
    }


# ------------------------------------------------------------------------------------------------- runs
def check_maps_belong(result: dict, maps: Any, result_path: Path) -> None:
    """The maps file must be the result's own: same images, anomalous count and grid."""
    m = result["metrics"]
    mine = (len(maps.scores), int(maps.labels.sum()), list(maps.grid))
    theirs = (m["n_images"], m["n_anomalous"], list(m["grid"]))
    if mine != theirs:
        raise ValueError(
            f"maps file {maps.path} does not belong to result {result_path}: it holds {mine[0]} images "
            f"({mine[1]} anomalous) on a {mine[2][0]}x{mine[2][1]} grid, the result {theirs[0]} ({theirs[1]}) on "
            f"{theirs[2][0]}x{theirs[2][1]}; pass the run's own results/maps/.../seed<k>.npz"
        )


def _masks_reason(result: dict, maps: Any) -> str | None:
    """Why the pixel labels are unknown (None: the masks are there)."""
    if result["metrics"]["pixel_auroc"] is None:
        return "the class has no ground-truth masks (its result has no pixel metrics)"
    if maps.masks is None:
        return f"the maps file {maps.path} records no masks (written by an earlier texad): rerun the run to record them"
    return None


def run_thresholds(result: dict, maps: Any, settings: ThresholdSettings, *, result_path: Path) -> dict:
    """The threshold record of one run (``result``: its validated result JSON; ``maps``: its maps file,
    :func:`texad.report.figures.load_maps`). Errors name the run and say what to do."""
    from texad.evaluation.metrics import pixel_f1_max

    if settings.rule not in RULES:
        raise ValueError(f"evaluation.threshold.rule must be one of {RULES}, got {settings.rule!r}")
    check_maps_belong(result, maps, result_path)
    scores, labels = maps.scores, maps.labels.astype(bool)
    normal = ~labels
    n_normal, n_anomalous = int(normal.sum()), int(labels.sum())
    no_masks = _masks_reason(result, maps)

    pixel_thr, pixel_reason, is_max = None, None, None
    if settings.rule == "fpr":
        if n_normal == 0:
            raise ValueError(
                f"run {result_path}: its test set holds no normal images (test/good), so rule fpr has nothing to "
                "choose thresholds on; add held-out good images to the class's test/good, or set "
                "evaluation.threshold.rule: f1_max (optimistic: chosen with the test labels)"
            )
        image_thr = quantile_threshold(scores[normal], settings.fpr)
        pixel_thr = quantile_threshold(maps.maps[normal], settings.fpr)
        is_max = {
            "image": image_thr == float(scores[normal].max()),
            "pixel": pixel_thr == float(maps.maps[normal].max()),
        }
        chosen_on = f"the {n_normal} normal test images (test/good), never trained on"
    else:
        if n_anomalous == 0:
            raise ValueError(
                f"run {result_path}: its test set holds no anomalous image, so rule f1_max has no F1 to maximise; "
                "set evaluation.threshold.rule: fpr"
            )
        image_thr = _below(f1_max_threshold(scores, labels)[0])
        if no_masks is None:
            pixel_thr = _below(pixel_f1_max(maps.maps, maps.masks)[1])
        else:
            pixel_reason = no_masks
        chosen_on = "every test image and pixel, with their labels and masks (optimistic)"

    image_rates = _rates(scores, labels, image_thr)
    pixel_rates = None
    if pixel_thr is not None and no_masks is None:
        pixel_rates = _rates(maps.maps, maps.masks, pixel_thr)
    achieved_reason = None if pixel_rates is not None else (pixel_reason or no_masks)
    run = {k: result[k] for k in ("dataset", "class", "method", "variant", "seed", "run_name")}
    return {
        "format": FORMAT,
        "rule": settings.rule,
        "fpr": settings.fpr if settings.rule == "fpr" else None,
        "optimistic": settings.rule == "f1_max",
        "chosen_on": chosen_on,
        "comparison": "anomalous = value > threshold",
        "image_threshold": image_thr,
        "pixel_threshold": pixel_thr,
        "pixel_threshold_reason": pixel_reason,
        "threshold_is_max": is_max,
        "n_images": len(scores),
        "n_normal": n_normal,
        "n_anomalous": n_anomalous,
        # the bottom of texad predict's colour scale, as a --normal folder's median sets it
        "normal_pixel_median": float(np.median(maps.maps[normal])) if n_normal else None,
        "achieved": {
            "note": "on this run's test set; in-sample for the images the thresholds were chosen on",
            "image": image_rates,
            "pixel": pixel_rates,
            "pixel_reason": achieved_reason,
        },
        "grid": list(maps.grid),
        "run": run,
        "model": {
            "model_hash": result["model_hash"],
            "config_hash": result["config_hash"],
            "backbone": result["backbone"],
            "result_created": result["created"],
        },
        "settings": to_block(settings),
    }


def write_thresholds(result_path: str | Path, maps_path: str | Path, settings: ThresholdSettings,
                     out: str | Path) -> dict:  # fmt: skip
    """Compute one run's thresholds (:func:`run_thresholds`) and write them to ``out`` atomically."""
    import texad
    from texad.atomic import atomic_write_text
    from texad.data.download import file_digest
    from texad.report.figures import load_maps
    from texad.results.record import read_result, utc_now

    result_path, maps_path = Path(result_path), Path(maps_path)
    record = run_thresholds(read_result(result_path), load_maps(maps_path), settings, result_path=result_path)
    record["inputs"] = {
        "result": {"path": str(result_path), "sha256": file_digest(result_path)},
        "maps": {"path": str(maps_path), "sha256": file_digest(maps_path)},
    }
    record["texad"] = texad.__version__
    record["created"] = utc_now()
    atomic_write_text(out, json.dumps(record, indent=2, allow_nan=False) + "\n")
    return record


def read_thresholds(path: str | Path, result: dict) -> dict:
    """The threshold file at ``path``, checked to be of the run ``result`` as it stands (same model and
    settings): a file left from an earlier run of the same name is an error, not a silent wrong threshold."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"threshold file {path} cannot be read ({exc}); rerun `texad threshold`") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(
            f"{path} is not a texad threshold file ({FORMAT}, got {got!r}); rerun `texad threshold`"
        )
    model = record.get("model") or {}
    for key in ("model_hash", "config_hash"):
        if model.get(key) != result[key]:
            raise ValueError(
                f"threshold file {path} was chosen for another run of this name ({key} {model.get(key)}, the "
                f"result has {result[key]}); rerun `texad threshold` on the result, or pass --normal"
            )
    return record
