"""``texad threshold``: a run's image and pixel thresholds from its result JSON and maps file, checked against
the closed-form quantile (rule fpr), scikit-learn's precision-recall curve and a brute-force F1 (rule f1_max), and
the errors of a test set that a rule cannot use. ``texad predict`` reading the file: tests/test_predict.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from texad.cli import main
from texad.config import ConfigError, settings_hash, validate_config
from texad.evaluation.thresholds import (
    ThresholdSettings,
    quantile_threshold,
    read_thresholds,
    threshold_path,
)
from texad.methods.run import save_maps
from texad.results.aggregate import collect
from texad.results.record import build_result, write_result

RUN = ("synthetic", "wood", "simplenet", "default", 0)
GRID = 8


def _arrays(n_normal: int = 7, n_anomalous: int = 5, seed: int = 0):
    """Scores, labels, maps and masks of a small test set: defects are 3x3 squares that the maps raise."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * n_normal + [1] * n_anomalous)
    masks = np.zeros((len(labels), GRID, GRID), bool)
    maps = rng.normal(0.0, 1.0, masks.shape)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, GRID - 3, 2)
        masks[i, r : r + 3, c : c + 3] = True
    maps = (maps + 1.5 * masks).astype(np.float16)  # stored as the runs store them
    scores = (maps.astype(np.float32).max(axis=(1, 2)) + rng.normal(0, 0.3, len(labels))).astype(np.float32)
    return scores, labels, maps, masks


def _write_run(
    root: Path, scores, labels, maps, masks, *, pixel_metrics: bool = True, keep_masks: bool = True
):
    """A result JSON and its maps file in the workflow's layout (``results/runs`` and ``results/maps``)."""
    dataset, cls, method, variant, seed = RUN
    rel = Path(dataset) / cls / method / variant
    result_path = root / "runs" / rel / f"seed{seed}.json"
    maps_path = root / "maps" / rel / f"seed{seed}.npz"
    arrays = {"masks": masks} if keep_masks else {}
    save_maps(maps_path, maps=maps, scores=scores, labels=labels,
              paths=np.array([f"img{i}.png" for i in range(len(labels))]), **arrays)  # fmt: skip
    pixel = 0.9 if pixel_metrics else None
    metrics = {
        "image_auroc": None, "image_ap": None, "pixel_auroc": pixel, "pixel_ap": pixel, "aupro": pixel,
        "pixel_f1_max": pixel, "pixel_f1_threshold": pixel, "n_images": len(labels),
        "n_anomalous": int(np.sum(labels)), "grid": [GRID, GRID],
    }  # fmt: skip
    result = build_result(
        run_name="unit", dataset=dataset, class_name=cls, method=method, variant=variant, seed=seed,
        metrics=metrics, evaluation={"resolution": GRID, "fpr_limit": 0.3, "grid": [GRID, GRID], "switches": {}},
        timings={"train_s": 1.0, "inference_s": 1.0, "images_per_s": 1.0, "nfe_per_image": None},
        device={"type": "cpu", "name": "test cpu", "precision": "fp32"}, config_hash=settings_hash({"c": 1}),
        backbone=None, model_hash=settings_hash({"m": 1}),
    )  # fmt: skip
    write_result(result_path, result)
    return result_path, maps_path


def _threshold(result: Path, maps: Path, block: dict, capsys=None) -> dict:
    """``texad threshold`` as the workflow runs it, into the file ``texad predict`` looks for."""
    out = threshold_path(result)
    settings = json.dumps({"evaluation": {"threshold": block}})
    argv = [
        "threshold",
        "--result",
        str(result),
        "--maps",
        str(maps),
        "--settings",
        settings,
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return json.loads(out.read_text())


def _rank(values, fpr: float) -> float:
    """The closed form: the sorted value of 0-based rank ceil((1 - fpr) (n - 1))."""
    v = np.sort(np.asarray(values, np.float64).ravel())
    return float(v[int(np.ceil((1.0 - fpr) * (v.size - 1)))])


def _best_f1(values, truth) -> float:
    """Best F1 of ``values >= c`` over every distinct value c (brute force)."""
    values, truth = np.ravel(values).astype(np.float64), np.ravel(truth).astype(bool)
    best = 0.0
    for c in np.unique(values):
        flagged = values >= c
        tp = np.sum(flagged & truth)
        best = max(best, 2 * tp / (np.sum(flagged) + np.sum(truth)))
    return float(best)


# ------------------------------------------------------------------------------------------- settings
def test_settings_come_from_the_schema():
    config = validate_config({}, partial=True)
    assert ThresholdSettings.from_config(config) == ThresholdSettings(rule="fpr", fpr=0.01)
    zero = validate_config({"evaluation": {"threshold": {"rule": "fpr", "fpr": 0}}}, partial=True)
    assert ThresholdSettings.from_config(zero).fpr == 0.0
    with pytest.raises(ConfigError, match=r"evaluation\.threshold\.fpr: 1 is out of range"):
        validate_config({"evaluation": {"threshold": {"fpr": 1}}}, partial=True)
    with pytest.raises(ConfigError, match=r"evaluation\.threshold\.rule"):
        validate_config({"evaluation": {"threshold": {"rule": "youden"}}}, partial=True)
    assert threshold_path("results/runs/a/b/c/d/seed3.json") == Path(
        "results/runs/a/b/c/d/seed3.threshold.json"
    )


# ---------------------------------------------------------------------------------------------- rules
@pytest.mark.parametrize("fpr", [0.0, 0.2, 0.5])
def test_fpr_rule_is_the_normal_images_quantile(tmp_path, fpr):
    scores, labels, maps, masks = _arrays()
    result, maps_file = _write_run(tmp_path, scores, labels, maps, masks)
    rec = _threshold(result, maps_file, {"rule": "fpr", "fpr": fpr})
    normal = labels == 0
    n_scores, n_pixels = scores[normal].astype(np.float64), maps[normal].astype(np.float64)

    assert rec["image_threshold"] == _rank(n_scores, fpr) == quantile_threshold(n_scores, fpr)
    assert rec["pixel_threshold"] == _rank(n_pixels, fpr)
    if fpr == 0:  # the largest normal value: no normal image (pixel) above it
        assert rec["image_threshold"] == n_scores.max() and rec["pixel_threshold"] == n_pixels.max()
        assert rec["threshold_is_max"] == {"image": True, "pixel": True}
    assert rec["rule"] == "fpr" and rec["fpr"] == fpr and rec["optimistic"] is False
    assert rec["n_normal"] == 7 and rec["n_anomalous"] == 5 and rec["n_images"] == 12

    # what the thresholds achieve, counted by hand (anomalous = value > threshold)
    image, pixel = rec["achieved"]["image"], rec["achieved"]["pixel"]
    above = scores.astype(np.float64) > rec["image_threshold"]
    assert image["fpr"] == np.mean(above[normal]) <= fpr
    assert image["tpr"] == np.mean(above[~normal])
    flagged = maps.astype(np.float64) > rec["pixel_threshold"]
    assert pixel["fpr"] == np.sum(flagged & ~masks) / np.sum(~masks)
    assert pixel["tpr"] == np.sum(flagged & masks) / np.sum(masks)
    assert np.mean(flagged[normal]) <= fpr  # the rule itself, on the normal images' pixels
    assert rec["normal_pixel_median"] == float(np.median(n_pixels))


def test_f1_max_rule_matches_scikit_learn_and_flags_with_greater_than(tmp_path):
    scores, labels, maps, masks = _arrays(seed=1)
    result, maps_file = _write_run(tmp_path, scores, labels, maps, masks)
    rec = _threshold(result, maps_file, {"rule": "f1_max", "fpr": 0.01})
    assert rec["rule"] == "f1_max" and rec["fpr"] is None and rec["optimistic"] is True

    for values, truth, key in ((scores, labels, "image"), (maps, masks, "pixel")):
        values = values.astype(np.float32).ravel()
        truth = np.ravel(truth).astype(bool)
        precision, recall, thresholds = precision_recall_curve(truth, values)
        f1 = 2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1] + 1e-12)
        best = thresholds[int(np.argmax(f1))]
        thr = rec[f"{key}_threshold"]
        # `value > threshold` flags exactly what the curve counts as positive at its best point
        assert np.array_equal(values > thr, values >= best) and thr < best
        achieved = rec["achieved"][key]
        assert achieved["f1"] == pytest.approx(f1.max(), abs=1e-9)
        assert achieved["f1"] == pytest.approx(_best_f1(values, truth), abs=1e-12)
        flagged = values > thr
        assert achieved["tpr"] == np.sum(flagged & truth) / np.sum(truth)
        assert achieved["fpr"] == np.sum(flagged & ~truth) / np.sum(~truth)


def test_the_file_names_the_run_its_model_and_inputs(tmp_path, capsys):
    result, maps_file = _write_run(tmp_path, *_arrays())
    rec = _threshold(result, maps_file, {"rule": "fpr", "fpr": 0.2})
    assert "image threshold" in capsys.readouterr().out
    on_disk = json.loads(result.read_text())
    assert rec["run"] == {"dataset": "synthetic", "class": "wood", "method": "simplenet", "variant": "default",
                          "seed": 0, "run_name": "unit"}  # fmt: skip
    assert (
        rec["model"]["model_hash"] == on_disk["model_hash"]
        and rec["model"]["config_hash"] == on_disk["config_hash"]
    )
    assert rec["inputs"]["result"]["path"] == str(result) and len(rec["inputs"]["maps"]["sha256"]) == 64
    assert rec["settings"] == {"rule": "fpr", "fpr": 0.2} and rec["grid"] == [GRID, GRID]
    assert not list(threshold_path(result).parent.glob("*.tmp"))
    # it sits beside the result, and a folder of results is still read as results only
    assert len(collect(tmp_path / "runs")) == 1
    assert read_thresholds(threshold_path(result), on_disk)["image_threshold"] == rec["image_threshold"]
    with pytest.raises(ValueError, match="another run of this name"):
        read_thresholds(threshold_path(result), {**on_disk, "config_hash": settings_hash({"c": 2})})


# --------------------------------------------------------------------------------------- no masks
def test_a_class_without_masks_has_no_f1_pixel_threshold(tmp_path):
    scores, labels, maps, masks = _arrays()
    result, maps_file = _write_run(tmp_path, scores, labels, maps, np.zeros_like(masks), pixel_metrics=False)
    rec = _threshold(result, maps_file, {"rule": "f1_max", "fpr": 0.01})
    assert rec["pixel_threshold"] is None and "no ground-truth masks" in rec["pixel_threshold_reason"]
    assert rec["image_threshold"] is not None and rec["achieved"]["pixel"] is None
    # rule fpr needs no mask for its pixel threshold, only for what it achieves
    rec = _threshold(result, maps_file, {"rule": "fpr", "fpr": 0.2})
    assert rec["pixel_threshold"] == _rank(maps[labels == 0], 0.2) and rec["pixel_threshold_reason"] is None
    assert rec["achieved"]["pixel"] is None and "no ground-truth masks" in rec["achieved"]["pixel_reason"]


def test_an_older_maps_file_without_masks_says_to_rerun(tmp_path):
    result, maps_file = _write_run(tmp_path, *_arrays(), keep_masks=False)
    rec = _threshold(result, maps_file, {"rule": "f1_max", "fpr": 0.01})
    assert rec["pixel_threshold"] is None
    assert str(maps_file) in rec["pixel_threshold_reason"] and "rerun" in rec["pixel_threshold_reason"]


# ------------------------------------------------------------------------------------------- errors
def _fails(argv_result: Path, maps_file: Path, block: dict, capsys) -> str:
    out = threshold_path(argv_result)
    settings = json.dumps({"evaluation": {"threshold": block}})
    argv = ["threshold", "--result", str(argv_result), "--maps", str(maps_file), "--settings", settings,
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    assert not out.exists()
    return capsys.readouterr().err


def test_rules_that_the_test_set_cannot_serve_are_errors(tmp_path, capsys):
    scores, labels, maps, masks = _arrays(n_normal=0, n_anomalous=4)
    result, maps_file = _write_run(tmp_path / "a", scores, labels, maps, masks)
    err = _fails(result, maps_file, {"rule": "fpr", "fpr": 0.01}, capsys)
    assert str(result) in err and "no normal images (test/good)" in err and "f1_max" in err
    _threshold(result, maps_file, {"rule": "f1_max", "fpr": 0.01})  # that one still works

    scores, labels, maps, masks = _arrays(n_normal=5, n_anomalous=0)
    result, maps_file = _write_run(tmp_path / "b", scores, labels, maps, masks, pixel_metrics=False)
    err = _fails(result, maps_file, {"rule": "f1_max", "fpr": 0.01}, capsys)
    assert str(result) in err and "no anomalous image" in err and "rule: fpr" in err


def test_a_maps_file_of_another_run_is_refused(tmp_path, capsys):
    result, _ = _write_run(tmp_path / "a", *_arrays())
    _, other = _write_run(tmp_path / "b", *_arrays(n_normal=3))
    err = _fails(result, other, {"rule": "fpr", "fpr": 0.01}, capsys)
    assert str(other) in err and str(result) in err and "does not belong" in err
    err = _fails(result, tmp_path / "missing.npz", {"rule": "fpr", "fpr": 0.01}, capsys)
    assert "missing.npz" in err
