"""A run's reported metrics, recomputed from what it saved: its maps file and the dataset itself.

:func:`check_saved_run` reads one result JSON and its maps file (``results/maps/.../seed<k>.npz``), lists the class
folder's test images on its own (``test/good`` label 0, every other ``test/<defect>`` label 1, masks from
``ground_truth``), brings the masks onto the run's evaluation grid with texad's evaluation code (the protocol the
result records) and recomputes every metric with :func:`texad.evaluation.metrics.evaluate`, the function the run
itself called (through :func:`texad.evaluation.protocol.evaluate_on_grid`, whose resize is a no-op on maps already
on the grid). The labels, the masks and the image order are checked against the folder, not against what the run
wrote, so a shuffled label, a misaligned mask grid or a flipped map fails here even when the run's own numbers
agree with its own files.

The maps file keeps the maps as float32, the values the run computed its metrics on, and the image scores as
float32: every metric must be the result's to 1e-9 (summation order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from texad.evaluation.grid import resize_masks
from texad.evaluation.metrics import evaluate
from texad.evaluation.protocol import center_crop, ddad_masks, draem_masks, grid_size, mask_geometry

__all__ = ["TOL", "class_listing", "dataset_masks_on_grid", "check_saved_run", "check_saved_runs"]

TOL = 1e-9  # summation order of the metrics; anything larger is a different value
_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_IMAGE_METRICS = ("image_auroc", "image_ap")
_PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max")
_COUNTS = ("n_images", "n_anomalous", "grid")


def class_listing(class_dir: Path) -> list[tuple[Path, int, Path | None]]:
    """(image, label, mask) of every test image of ``class_dir``, read from the folder alone: ``test/good``
    first, then the defect folders alphabetically, images sorted by name (texad's documented order). A defect
    image's mask is ``ground_truth/<defect>/<stem>_mask.<ext>`` or ``<stem>.<ext>`` (None when neither exists)."""
    test = Path(class_dir) / "test"

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)

    rows: list[tuple[Path, int, Path | None]] = [(p, 0, None) for p in images(test / "good")]
    for defect in sorted(d for d in test.iterdir() if d.is_dir() and d.name != "good"):
        truth = Path(class_dir) / "ground_truth" / defect.name
        for p in images(defect):
            found = [truth / f"{stem}{s}" for stem in (f"{p.stem}_mask", p.stem) for s in _SUFFIXES]
            rows.append((p, 1, next((m for m in found if m.is_file()), None)))
    return rows


def _native_masks(listing) -> np.ndarray:
    """The listing's masks at their own size, (N, H, W) bool: a PNG pixel above 0 is anomalous; a good image's
    mask is empty, at its image's size."""
    out = []
    for image, _, mask in listing:
        if mask is None:
            with Image.open(image) as im:
                out.append(np.zeros((im.height, im.width), dtype=bool))
        else:
            with Image.open(mask) as im:
                out.append(np.asarray(im.convert("L")) > 0)
    return np.stack(out)


def dataset_masks_on_grid(listing, evaluation: dict) -> np.ndarray:
    """The listing's masks on the evaluation grid of a result's ``evaluation`` block, by the protocol it records:
    texad's (area interpolation to the grid and ``>= 0.5``; with a centre crop, to the larger grid and then
    cropped), DDAD's or DRAEM's own mask rule."""
    native = _native_masks(listing)
    protocol = evaluation.get("protocol") or {"name": "texad", "crop": None}
    crop = protocol.get("crop")
    if protocol["name"] == "ddad":
        return ddad_masks(native, crop["from"])
    if protocol["name"] == "draem":
        return draem_masks(native, evaluation["grid"][0])
    assert protocol["name"] == "texad", protocol
    if crop is None:
        return resize_masks(native, grid_size(evaluation["resolution"], native.shape[-2:]))
    load, grid = mask_geometry(evaluation["resolution"], native.shape[-2:], crop["to"] / crop["from"])
    return np.ascontiguousarray(center_crop(resize_masks(native, load), grid))


def check_saved_run(result: dict, maps_file: Path, class_dir: Path, root: Path | None = None) -> dict:
    """Assert that the maps file of the run ``result`` (its JSON, loaded) holds the class's test images in the
    folder's order with the folder's labels and masks, and that every metric of the result follows from it.

    ``class_dir``: the class folder as staged (not the view a run read); ``root``: the folder that relative image
    paths in the maps file are relative to (the workflow's working directory). Returns the recomputed metrics."""
    listing = class_listing(class_dir)
    where = f"{result['method']}/{result['variant']} of {result['class']}"
    with np.load(maps_file, allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}

    # the images, in the folder's order: the same files (content), the folder's labels
    paths = [Path(str(p)) for p in saved["paths"]]
    names = [(i.parent.parent.name, i.parent.name, i.name) for i, _, _ in listing]
    assert [p.parts[-3:] for p in paths] == names, where
    for p, (image, _, _) in zip(paths, listing, strict=True):
        found = p if p.is_absolute() or root is None else root / p
        assert found.read_bytes() == image.read_bytes(), (where, p)
    labels = np.array([label for _, label, _ in listing])
    assert np.array_equal(saved["labels"], labels), (where, saved["labels"].tolist(), labels.tolist())

    # the folder's masks on the grid the result records, which must be the maps' grid
    evaluation, metrics = result["evaluation"], result["metrics"]
    masks = dataset_masks_on_grid(listing, evaluation)
    maps, scores = saved["maps"], saved["scores"]
    assert maps.dtype == np.float32 and np.isfinite(maps).all(), (where, maps.dtype)
    assert maps.shape == masks.shape and list(masks.shape[-2:]) == evaluation["grid"] == metrics["grid"], (
        where, maps.shape, masks.shape, evaluation["grid"])  # fmt: skip
    assert np.array_equal(saved["masks"], masks), f"{where}: the saved masks are not the folder's on the grid"

    unknown = set(metrics) - {*_IMAGE_METRICS, *_PIXEL_METRICS, *_COUNTS, "pixel_f1_threshold"}
    assert not unknown, f"{where}: metrics this check does not recompute: {sorted(unknown)}"
    pixels = metrics["pixel_auroc"] is not None
    again = evaluate(scores, maps, masks, labels=labels, fpr_limit=evaluation["fpr_limit"],
                     pixel_metrics=pixels)  # fmt: skip
    for key in _COUNTS:
        assert again[key] == metrics[key], (where, key, again[key], metrics[key])
    pixels_keys = _PIXEL_METRICS if pixels else ()
    for key in (*_IMAGE_METRICS, *pixels_keys):
        assert abs(again[key] - metrics[key]) <= TOL, (where, key, again[key], metrics[key])
    if not pixels:
        assert all(metrics[k] is None for k in (*_PIXEL_METRICS, "pixel_f1_threshold")), where
        return again
    # the F1-max threshold is one of the map values the file keeps
    threshold = metrics["pixel_f1_threshold"]
    assert np.float32(threshold) in np.unique(maps), (where, threshold)
    return again


def check_saved_runs(workdir: Path, dataset: str, dataset_root: Path | None = None) -> list[tuple]:
    """:func:`check_saved_run` on every result JSON under ``<workdir>/results/runs/<dataset>`` (the threshold files
    aside) with its maps file under ``results/maps``; the class folders are ``dataset_root`` (default: the
    workflow's staging folder, ``resources/datasets/<dataset>``). Returns (class, method, variant, what
    :func:`check_saved_run` returned) of each run."""
    runs = Path(workdir) / "results" / "runs" / dataset
    root = Path(dataset_root) if dataset_root else Path(workdir) / "resources" / "datasets" / dataset
    checked = []
    for path in sorted(runs.rglob("*.json")):
        if path.name.endswith(".threshold.json"):
            continue
        result = json.loads(path.read_text())
        maps = Path(workdir) / "results" / "maps" / dataset / path.relative_to(runs).with_suffix(".npz")
        out = check_saved_run(result, maps, root / result["class"], root=Path(workdir))
        checked.append((result["class"], result["method"], result["variant"], out))
    assert checked, f"no result under {runs}"
    return checked
