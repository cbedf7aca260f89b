"""Settings chosen without the test set: the ``selected`` variant, and the labelled ``oracle`` beside it.

A method names candidate inference settings in its ``select`` block (:func:`texad.methods.base.candidates`). Two
jobs turn them into results:

1. :func:`score_candidates` (``texad select``) scores every candidate on the class's *validation* split (held-out
   normal training images, and the same images with synthetic anomalies; ``texad.data.validation``), with the
   same models as the default and the same run driver (:func:`texad.methods.run.run_class`), and picks one by the
   stated criterion (``selection.criterion``). Its inputs hold no test image, label or test-set statistic.
   A candidate's fit (training-image statistics, e.g. Method A's and B's ``train_stats``) is the one its test-set
   run computed on the same training images, when the workflow passes it (``fit_states``): that file holds what
   the run's :meth:`fit` gave on the training images, before it saw a test image, so the job does not fit again.
2. :func:`choose` (``texad choose``) reads that choice and the candidates' own test-set runs (ordinary runs of the
   workflow: a candidate that is the default or an ablation point is that run) and writes two results:
   ``selected`` (the candidate chosen on validation: its one test-set run) and ``oracle`` (the candidate that
   scores best on the test set by the same criterion: what choosing on the test set would have reported).

Ties go to the candidate listed first, the default first: a choice that the validation split cannot tell apart
keeps the configured settings.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from texad.atomic import atomic_write, atomic_write_text
from texad.methods import get
from texad.methods.base import ORACLE, SELECTED, RunKey, Runtime, candidate_values, candidates, fit_state_path

__all__ = ["FORMAT", "CRITERIA", "criterion_value", "pick", "score_candidates", "choose"]

FORMAT = "texad.selection/1"
CRITERIA = ("mean_auroc", "image_auroc", "pixel_auroc", "aupro", "pixel_ap")


def criterion_value(metrics: dict, criterion: str) -> float:
    """The number a candidate is chosen by: ``mean_auroc`` is the mean of image and pixel AUROC (image AUROC alone
    where the class has no masks); a metric that could not be computed counts as -inf."""
    if criterion not in CRITERIA:
        raise ValueError(f"selection.criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "mean_auroc":
        parts = [metrics.get(k) for k in ("image_auroc", "pixel_auroc")]
        parts = [p for p in parts if p is not None]
        return sum(parts) / len(parts) if parts else -math.inf
    value = metrics.get(criterion)
    return -math.inf if value is None else float(value)


def pick(rows: list[dict], criterion: str, key: str) -> str:
    """The name of the row whose ``row[key]`` metrics are best by ``criterion``; ties go to the first row."""
    if not rows:
        raise ValueError("no candidates to choose from")
    best = max(range(len(rows)), key=lambda i: (criterion_value(rows[i][key], criterion), -i))
    return rows[best]["name"]


def _manifest(validation_dir: Path) -> dict:
    path = validation_dir / "split.json"
    if not path.is_file():
        raise ValueError(
            f"{validation_dir} is not a validation split (no split.json): build it with `texad validation-split`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _same_training_images(validation_dir: Path, class_dir: Path | None) -> bool:
    """Whether two class folders hold the same training images (content), in the same order: then a fit on one
    is the fit on the other (the noise of each image is seeded from its content)."""
    if class_dir is None:
        return False
    from texad.data.layout import list_samples
    from texad.methods.base import image_identity

    def listing(folder: Path) -> list[str]:
        return [image_identity(s.path) for s in list_samples(Path(folder), "train")]

    return listing(validation_dir) == listing(class_dir)


def _read_fit_state(path: Path) -> dict:
    import numpy as np

    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def score_candidates(
    method: str,
    config: dict,
    run: RunKey,
    *,
    validation_dir: Path,
    models: dict[str, Path],
    out: Path,
    fit_states: dict[str, Path] | None = None,
    fit_class_dir: Path | None = None,
) -> dict:
    """Score every candidate of ``method`` on the validation split in ``validation_dir`` and write the choice to
    ``out`` (JSON, :data:`FORMAT`); returns it. ``config``: a validated (partial) config holding the method's
    block with its ``select`` candidates, the run's top-level keys and ``selection``. ``fit_states``: candidate
    name -> the fit state its test-set run wrote after fitting on the training images of ``fit_class_dir``; taken
    instead of fitting where those are the validation split's training images, file for file (else fitted here)."""
    from texad.methods.jobs import method_settings
    from texad.methods.run import run_class

    module = get(method)
    settings = method_settings(config, method, run.class_name)
    found = candidates(module, settings)
    if not found:
        raise ValueError(
            f"methods.{method}.select names no candidates for class {run.class_name}: nothing to choose"
        )
    criterion = config["selection"]["criterion"]
    runtime = Runtime.from_config(config)
    validation_dir = Path(validation_dir)
    manifest = _manifest(validation_dir)
    reusable = dict(fit_states or {}) if _same_training_images(validation_dir, fit_class_dir) else {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="texad-select-") as tmp:
        for v in found:
            applied = v.settings if v.grid is None else replace(v.settings, ablation=v.grid)  # no speed probe
            key = replace(run, variant=v.name)
            detector = module.Detector(applied, runtime, key, models)
            state, fit = None, "fitted on the validation split's training images"
            if v.name in reusable:
                state, fit = _read_fit_state(reusable[v.name]), str(reusable[v.name])
            result = run_class(detector, validation_dir, key, runtime, out_result=Path(tmp) / f"{v.name}.json",
                               out_maps=Path(tmp) / f"{v.name}.npz", fit_state=state)  # fmt: skip
            rows.append({"name": v.name, "values": candidate_values(v), "validation": result["metrics"],
                         "seconds": result["timings"]["inference_s"], "fit": fit})  # fmt: skip
    record = {
        "format": FORMAT,
        "method": method,
        "dataset": run.dataset,
        "class": run.class_name,
        "seed": run.seed,
        "criterion": criterion,
        "chosen": pick(rows, criterion, "validation"),
        "candidates": rows,
        "validation": {
            "dir": str(validation_dir),
            **{
                k: manifest.get(k)
                for k in (
                    "holdout",
                    "n_normal",
                    "n_anomalous",
                    "anomalies",
                    "seed",
                    "validates_on_training_images",
                )
            },  # fmt: skip
        },
    }
    atomic_write_text(Path(out), json.dumps(record, indent=2, allow_nan=False) + "\n")
    return record


def _read_selection(path: Path) -> dict:
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a selection file ({FORMAT}), found format {record.get('format')!r}")
    return record


def _copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    with open(src, "rb") as fh:
        atomic_write(dst, lambda out: shutil.copyfileobj(fh, out), binary=True)


def choose(
    selection: Path,
    results: list[Path],
    maps: list[Path],
    *,
    out: dict[str, tuple[Path, Path]],
) -> dict[str, dict]:
    """Write the ``selected`` and ``oracle`` results (``out``: variant -> (result JSON, maps file)) from the
    choice in ``selection`` and the candidates' test-set runs (``results`` with their ``maps`` in the same order).
    Each is its candidate's run, relabelled, with ``extra.selection`` recording every candidate's validation and
    test metrics, the criterion and the choice (beside what the run itself recorded there: SimpleNet's scored meta
    epoch); returns them by variant."""
    from texad.results.record import read_result, write_result

    record = _read_selection(selection)
    if len(results) != len(maps):
        raise ValueError(f"{len(results)} results but {len(maps)} maps files: pass one maps file per result")
    runs = {}
    for path, maps_path in zip(results, maps, strict=True):
        result = read_result(path)
        key = (result["method"], result["dataset"], result["class"], result["seed"])
        if key != (record["method"], record["dataset"], record["class"], record["seed"]):
            raise ValueError(f"{path} is a run of {key}, but {selection} chose for "
                             f"{(record['method'], record['dataset'], record['class'], record['seed'])}")  # fmt: skip
        runs[result["variant"]] = (Path(path), Path(maps_path), result)
    names = [row["name"] for row in record["candidates"]]
    missing = [n for n in names if n not in runs]
    if missing:
        raise ValueError(f"no test-set run given for candidate(s) {missing} of {selection}")
    rows = [{**row, "test": runs[row["name"]][2]["metrics"]} for row in record["candidates"]]
    criterion = record["criterion"]
    chosen = {SELECTED: (record["chosen"], "validation"), ORACLE: (pick(rows, criterion, "test"), "test")}
    unknown = sorted(set(out) - set(chosen))
    if unknown:
        raise ValueError(f"choose writes {sorted(chosen)}, not {unknown}")
    written: dict[str, dict] = {}
    for variant, (out_result, out_maps) in out.items():
        name, on = chosen[variant]
        path, maps_path, result = runs[name]
        relabelled: dict[str, Any] = {**result, "variant": variant}
        relabelled["extra"] = {
            **result["extra"],
            "selection": {
                **result["extra"].get("selection", {}),  # the run's own (SimpleNet: the epoch it scored)
                "chosen": name,
                "chosen_on": on,
                "criterion": criterion,
                "values": next(r["values"] for r in rows if r["name"] == name),
                "candidates": rows,
                "validation": record["validation"],
                "candidate_run": str(path),
            },
        }
        _copy(maps_path, Path(out_maps))
        _copy(
            fit_state_path(path), fit_state_path(Path(out_result))
        )  # the run's training statistics (predict)
        write_result(out_result, relabelled)
        written[variant] = relabelled
    return written
