"""``texad predict``: score a folder of new images with a trained model and pick a threshold on normal ones.

Everything is computed before anything is written, so a bad input (missing or empty folder, an unreadable
image) leaves ``--out`` as it was. Outputs, each written atomically (temp file in the same folder, then
``os.replace``), ``scores.csv`` last so that its presence means a complete run:

- ``maps/<stem>.npy``: the anomaly map, float16, at the model's input size (S x S; for SimpleNet with
  ``center_crop`` it covers the cropped centre only);
- ``maps/<stem>.png``: that map as a heatmap (jet; colour scale below);
- ``overlays/<stem>.png``: the image at its own size with the map as a colour overlay and the region above the
  pixel threshold outlined in magenta;
- ``threshold.json``: thresholds, how they were chosen, the model (path, sha256, identity hash), the settings,
  device and versions;
- ``scores.csv``: ``image,score,threshold,anomalous`` (anomalous = score > threshold, 0/1).

An output that exists already is refused (the message names it, and the model of an existing
``scores.csv``) unless ``overwrite``; then our files of the same names are replaced and nothing else is
touched, so maps of images no longer in ``--images`` stay behind (``scores.csv`` lists this run's images).
``threshold.json`` also lists every normal image's score, to see which ones sit near the threshold.

Thresholds (``fpr``, default 0.01): the image threshold is the normal score of 0-based rank
``ceil((1 - fpr) (n - 1))`` among the n normal images' sorted scores (numpy's ``quantile(..., 1 - fpr,
method="higher")``, :func:`texad.evaluation.thresholds.quantile_threshold`), so at most a fraction ``fpr`` of them
lies above it; with fewer than 1/fpr normal images that is their maximum. The pixel threshold is the same quantile
over every pixel of the normal images' maps. Without ``--normal``, a result JSON with its run's threshold file
beside it (``<stem>.threshold.json``, ``texad threshold``: chosen on the run's normal test images, or at F1-max on
its test set, optimistic) gives both thresholds instead. Heatmap colours run from the normal maps' median value
(bottom of the scale) through the pixel threshold (middle) to twice that distance (top, clipped).

Training statistics (Method A's ``train_stats``; Method B's fusion scale, ``fusion_norm: train``, and its
``train_stats``): a result JSON brings its run's own, the fit state beside it (``<stem>.fit.npz``), checked against
the SHA-256 the result records (``extra.fit_state``), so no ``--train-images`` is needed and the maps are the
run's. A model file carries no run: it needs ``--train-images`` (the first ``fit_images`` of them in sorted order,
as a run takes its class's). ``--train-images`` given with a result JSON override the run's statistics: they are
fitted on those images instead, and ``threshold.json`` says so in its warnings (on the run's own training images
that reproduces the run's statistics, since noise follows the image, not its place). Either way they are the
threshold images of last resort (no ``--normal``, no run threshold file; optimistic). A run whose settings are
transductive (Method B's ``official`` variant: each batch of 16 fused at its own scale, DDAD's protocol) is
applied as it ran, and a warning says that a score then depends on the other images of the folder.

Noise (the diffusion methods): every image draws its noise from ``image_seed(seed, <class>,
image_identity(file))`` (:mod:`texad.methods.base`), the SHA-256 of its file, with the run's seed (a model
file: its training seed), whatever folder it is in (``--images``, ``--normal``, ``--train-images``) and whatever
its name: a benchmark test image scores here exactly as in its run, beside any other images and in any order.
Runs are bit-identical on the CPU and a score does not depend on the batch size (beyond float rounding).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from texad.atomic import atomic_write, atomic_write_text
from texad.data.layout import IMAGE_SUFFIXES, Sample
from texad.data.mvtec import MVTecDataset
from texad.evaluation.thresholds import quantile_threshold, read_thresholds, threshold_path

__all__ = ["list_images", "load_images", "quantile_threshold", "predict_folder"]

DEFAULT_FPR = 0.01  # false-alarm rate allowed on --normal (or --train-images) when none is given
SCORES = "scores.csv"
THRESHOLD = "threshold.json"
_OUTLINE = (255, 0, 255)
_ALPHA = 0.45


# --------------------------------------------------------------------------------------------- inputs
def list_images(folder: str | Path, what: str) -> list[Path]:
    """The image files directly in ``folder`` (png, jpg, jpeg, bmp, tif, tiff), sorted; an error names the
    folder when it is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(
            f"{what} folder {folder} holds no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
        )
    return paths


def _unique_stems(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ValueError(
                f"images {seen[p.stem]} and {p} share the name {p.stem!r}: their outputs would collide"
            )
        seen[p.stem] = p


def _run_threshold_file(model: str | Path) -> Path | None:
    """The run's threshold file beside a result JSON (``texad threshold``), when there is one."""
    model = Path(model)
    if model.suffix != ".json":
        return None
    path = threshold_path(model)
    return path if path.is_file() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _targets(out: Path, paths: Sequence[Path]) -> list[Path]:
    files = [out / THRESHOLD, out / SCORES]
    for p in paths:
        files += [
            out / "maps" / f"{p.stem}.npy",
            out / "maps" / f"{p.stem}.png",
            out / "overlays" / f"{p.stem}.png",
        ]
    return files


def _refuse_existing(out: Path, paths: Sequence[Path]) -> None:
    """Never overwrite a file we did not mean to: refuse while any output exists (unless --overwrite)."""
    if (out / SCORES).exists():
        owner = ""
        try:
            owner = json.loads((out / THRESHOLD).read_text(encoding="utf-8"))["model"]["path"]
            owner = f" (model {owner})"
        except Exception:  # no or foreign threshold.json: the scores' origin is unknown
            pass
        raise FileExistsError(
            f"{out / SCORES} already exists{owner}; choose another --out or pass --overwrite to replace it"
        )
    taken = [p for p in _targets(out, paths) if p.exists()]
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise FileExistsError(f"{taken[0]}{more} already exist(s); choose another --out or pass --overwrite")


class _FolderImages(MVTecDataset):
    """Image files outside the MVTec layout, read by ``MVTecDataset.__getitem__`` itself (same decoding,
    RGB conversion, antialiased bilinear resize and clamp as every method's evaluation)."""

    def __init__(self, paths: Sequence[Path], image_size: int):
        self.class_dir = None
        self.split = "predict"
        self.samples = [Sample(Path(p), 0, "good", None) for p in paths]
        self.image_size = (int(image_size), int(image_size))
        self.mask_size = "native"  # no mask to resample: an all-zero one at the image's own size


def load_images(paths: Sequence[Path], size: int):
    """(N, 3, size, size) float32 in [0, 1]; an unreadable file raises DatasetError naming it."""
    import torch

    data = _FolderImages(paths, size)
    return torch.stack([data[i]["image"] for i in range(len(data))])


def _view(load_size: int, crop: int | None) -> tuple[float, float, float, float]:
    """The part of the original image the maps cover, (top, left, height, width) as fractions (a centre crop)."""
    if crop is None:
        return (0.0, 0.0, 1.0, 1.0)
    top = int(round((load_size - crop) / 2.0))
    return (top / load_size, top / load_size, crop / load_size, crop / load_size)


# -------------------------------------------------------------------------------------------- outputs
def _colour(maps: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """uint8 RGB (..., 3) of ``maps`` on the jet colour map over [lo, hi]."""
    from matplotlib import colormaps

    t = np.clip((maps.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return (colormaps["jet"](t)[..., :3] * 255.0).round().astype(np.uint8)


def _overlay(path: Path, amap: np.ndarray, view, pixel_thr: float | None, lo: float, hi: float) -> np.ndarray:
    """The original image with the map (resized onto the part it covers) blended in, above-threshold region
    outlined (nothing outlined without a pixel threshold)."""
    from scipy import ndimage as ndi

    from texad.data.mvtec import read_image
    from texad.evaluation.grid import resize_maps

    image = np.asarray(read_image(path).convert("RGB"), dtype=np.float64)
    h, w = image.shape[:2]
    top, left = int(round(view[0] * h)), int(round(view[1] * w))
    vh, vw = max(1, int(round(view[2] * h))), max(1, int(round(view[3] * w)))
    m = resize_maps(amap[None].astype(np.float32), (vh, vw))[0]
    region = image[top : top + vh, left : left + vw]
    region[:] = (1 - _ALPHA) * region + _ALPHA * _colour(m, lo, hi)
    out = image.round().clip(0, 255).astype(np.uint8)
    above = m > pixel_thr if pixel_thr is not None else np.zeros(m.shape, bool)
    width = max(1, round(min(h, w) / 256))
    edge = above & ~ndi.binary_erosion(above, iterations=width, border_value=1)
    out[top : top + vh, left : left + vw][edge] = _OUTLINE
    return out


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data), binary=True)


def _scores_csv(paths: Sequence[Path], scores: np.ndarray, threshold: float, flags: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "score", "threshold", "anomalous"])
    for p, s, a in zip(paths, scores, flags, strict=True):
        writer.writerow([p.name, repr(float(s)), repr(threshold), int(a)])
    return buffer.getvalue()


def _warn(message: str) -> None:
    print(f"texad: warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ run
def predict_folder(
    model: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    normal: str | Path | None = None,
    train_images: str | Path | None = None,
    fpr: float | None = None,
    settings: dict | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    weights_cache: str | Path | None = None,
    overwrite: bool = False,
    warn: Callable[[str], None] = _warn,
) -> dict:
    """Score every image of ``images`` with ``model`` (a result JSON or a model file), threshold at ``fpr``
    (None: 0.01) on ``normal`` (else with the run's threshold file beside a result JSON, else on
    ``train_images`` with a warning) and write the outputs into ``out``.

    ``train_images``: the model's training images (e.g. ``<class>/train/good``): the training statistics of a
    model file (Method A; Method B's fusion scale and normalisation), in place of a result's own (its fit state),
    and the threshold images of last resort. ``settings``: inference-setting overrides (``--settings``, a part of
    the method's config block). Returns the ``threshold.json`` content.
    """
    import torch

    import texad
    from texad.methods import get
    from texad.methods.base import Runtime, resolve_device, variant_settings
    from texad.methods.jobs import method_settings
    from texad.methods.run import image_seeds, read_fit_state, score_images
    from texad.results.record import collect_versions, device_info, utc_now

    from .models import resolve_model, with_overrides

    if fpr is not None and not (isinstance(fpr, int | float) and 0.0 < fpr < 1.0):
        raise ValueError(f"--fpr must lie strictly between 0 and 1, got {fpr!r}")
    out = Path(out)
    query = list_images(images, "--images")
    _unique_stems(query)
    normal_paths = list_images(normal, "--normal") if normal is not None else None
    train_paths = list_images(train_images, "--train-images") if train_images is not None else None
    if not overwrite:
        _refuse_existing(out, query)

    run_file = _run_threshold_file(model) if normal_paths is None else None  # --normal wins
    if normal_paths is None and train_paths is None and run_file is None:
        raise ValueError(
            "the threshold needs known-good images the model did not train on: pass --normal DIR (texad results "
            "and model files do not record their class folder; --train-images <class>/train/good gives an "
            "optimistic threshold), or run `texad threshold` on the result JSON: its <stem>.threshold.json beside "
            "it gives the run's thresholds"
        )

    dev = resolve_device(device)
    ref = resolve_model(model)
    run_thr = None if run_file is None else read_thresholds(run_file, ref.result)
    if run_thr is not None and fpr is not None and (run_thr["rule"] != "fpr" or run_thr["fpr"] != fpr):
        chosen = f"fpr {run_thr['fpr']:g}" if run_thr["rule"] == "fpr" else run_thr["rule"]
        raise ValueError(
            f"--fpr {fpr:g} needs normal images to threshold on; without --normal the run's threshold file "
            f"{run_file} ({chosen}) is used: pass --normal DIR to threshold at --fpr {fpr:g}, or leave --fpr out"
        )
    config = {**with_overrides(ref, settings), "device": dev}
    method = get(ref.method)
    run_settings = variant_settings(method.variants(method_settings(config, ref.method, ref.run.class_name)),
                                    "default", ref.method)  # fmt: skip
    # the weight cache of the machine predicting (None: $TORCH_HOME), not the one the benchmark ran with
    runtime = replace(
        Runtime.from_config(config), weights_cache=Path(weights_cache) if weights_cache else None
    )
    det = method.Detector(run_settings, runtime, ref.run, ref.models)
    if batch_size is not None:  # noise is drawn per image: the batch changes scores by float rounding only
        det.batch_size = int(batch_size)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        warn(message)

    # the training statistics: the run's own (its fit state), or fitted here on --train-images
    recorded = None if ref.result is None else ref.result["extra"].get("fit_state")
    run_fit = None if recorded is None else (ref.result_path.with_name(recorded["file"]), recorded["sha256"])
    refit = det.needs_fit and train_paths is not None
    if det.needs_fit and train_paths is None and run_fit is None:
        held = (f"result {ref.result_path} records no fit state (extra.fit_state): it predates them, rerun it, or"
                if ref.result is not None else f"the {ref.settings_source} carries no run:")  # fmt: skip
        raise ValueError(
            f"{ref.method} fits statistics of the training images before scoring, and {held} pass --train-images "
            f"(e.g. <{ref.run.dataset} root>/{ref.run.class_name}/train/good)"
        )
    fit_record: dict[str, Any] = {"source": None}
    if run_fit is not None and not refit:
        state = read_fit_state(*run_fit)  # checked against the result even when the method fits nothing
        if det.needs_fit:
            try:
                det.load_fit_state(state)
            except ValueError as exc:
                raise ValueError(
                    f"{run_fit[0]}: {exc}; pass --train-images to fit them under these settings"
                ) from exc
            fit_record = {"source": "run", "file": str(run_fit[0].resolve()), "sha256": run_fit[1]}
            if settings:
                note(f"the run's training statistics ({run_fit[0].name}) were fitted under the run's settings; where "
                     "--settings changes the maps before smoothing, pass --train-images to fit them under the overrides")  # fmt: skip
    elif refit:
        fit_record = {"source": "train_images", "folder": str(Path(train_images).resolve())}
        if run_fit is not None:
            note(f"the training statistics were fitted on --train-images, not taken from the run's own "
                 f"({run_fit[0].name})")  # fmt: skip
    if train_paths is not None and not refit and (normal_paths is not None or run_thr is not None):
        note(f"--train-images were not used: {ref.method} fits no training statistics with these settings, and the "
             "threshold comes from " + ("--normal" if normal_paths is not None else "the run's threshold file"))  # fmt: skip
    if det.transductive:
        note(f"these {ref.method} settings are transductive (e.g. Method B's official fusion per batch of 16, "
             "DDAD's protocol): a score depends on the other images scored with it")  # fmt: skip
    if run_thr is not None:
        source = {"kind": "run", "file": str(run_file.resolve()), "rule": run_thr["rule"], "fpr": run_thr["fpr"],
                  "optimistic": run_thr["optimistic"]}  # fmt: skip
        if settings:
            note(f"the run's thresholds ({run_file.name}) were chosen with the run's own settings, not with the "
                 "--settings overrides; pass --normal to threshold under the overrides")  # fmt: skip
        if run_thr["optimistic"]:
            note(f"the run's thresholds are {run_thr['rule']}: chosen with its test labels, so optimistic")
    elif normal_paths is not None:
        source = {"kind": "normal", "folder": str(Path(normal).resolve())}
    else:
        source = {"kind": "train", "folder": str(Path(train_images).resolve())}
        note("no --normal: the threshold is chosen on the model's training images, which it fits better than new "
             "normal images; expect more false alarms than fpr says. Pass --normal with held-out good images")  # fmt: skip
    if run_thr is None:
        overlap = {p.resolve() for p in query} & {p.resolve() for p in (normal_paths or train_paths)}
        if overlap:
            note(f"{len(overlap)} image(s) of --images are also threshold images (e.g. {sorted(overlap)[0]})")

    def read(paths: Sequence[Path]) -> torch.Tensor:
        return load_images(paths, det.load_size)

    x_query = read(query)  # every file decoded before any model runs: a corrupt one stops us early
    x_normal = read(normal_paths) if normal_paths is not None else None
    x_train = read(train_paths) if train_paths is not None else None
    cls = ref.run.class_name

    with torch.no_grad():
        if refit:
            limit = det.fit_images or len(train_paths)  # the first ones, as the benchmark run took them
            det.fit(det.prepare(x_train[:limit]), image_seeds(ref.run, train_paths[:limit]))
        threshold_set = None
        if x_normal is not None:
            threshold_set = score_images(det, x_normal, image_seeds(ref.run, normal_paths))
        elif run_thr is None:
            threshold_set = score_images(det, x_train, image_seeds(ref.run, train_paths))
        scored = score_images(det, x_query, image_seeds(ref.run, query))
    q_maps, q_scores = scored.maps, scored.scores
    checked = [("--images", q_scores, query)]
    if run_thr is None:
        n_maps, n_scores = threshold_set.maps, threshold_set.scores
        checked.insert(0, ("normal", n_scores, normal_paths or train_paths))
    for name, values, paths in checked:
        bad = [p.name for p, v in zip(paths, values, strict=True) if not math.isfinite(float(v))]
        if bad:
            raise ValueError(
                f"{ref.method} gave non-finite scores for {len(bad)} {name} image(s), e.g. {bad[0]}"
            )

    if run_thr is None:
        fpr = DEFAULT_FPR if fpr is None else fpr
        n_normal = len(n_scores)
        image_thr = quantile_threshold(n_scores, fpr)
        pixel_thr = quantile_threshold(n_maps, fpr)
        is_max = image_thr == float(np.max(n_scores))
        median = float(np.median(n_maps))
        normal_scores = {p.name: float(v) for p, v in zip(normal_paths or train_paths, n_scores, strict=True)}
        rule = "numpy.quantile(normal values, 1 - fpr, method='higher'); anomalous = score > threshold"
        optimistic = normal_paths is None
        if n_normal < 1.0 / fpr:
            note(f"only {n_normal} normal images (fewer than 1/fpr = {1.0 / fpr:g}): the image threshold is their "
                 "maximum score, so the false-alarm rate is not controlled at fpr")  # fmt: skip
    else:
        fpr, n_normal = run_thr["fpr"], run_thr["n_normal"]
        image_thr, pixel_thr = run_thr["image_threshold"], run_thr["pixel_threshold"]
        is_max = bool((run_thr["threshold_is_max"] or {}).get("image"))
        median = run_thr["normal_pixel_median"]
        normal_scores = {}  # the run's normal test images were scored by the benchmark, not here
        rule = f"the run's threshold file ({run_thr['chosen_on']}); anomalous = score > threshold"
        optimistic = bool(run_thr["optimistic"])
        if is_max and fpr:  # fpr 0 asks for the largest score
            note(f"the run's image threshold is the largest score of its {n_normal} normal test images (fewer than "
                 f"1/fpr = {1.0 / fpr:g} of them), so the false-alarm rate is not controlled at fpr")  # fmt: skip
    if median is None:  # no normal image anywhere: the bottom of the colour scale from these maps
        median = float(np.median(q_maps))
    if pixel_thr is None:  # the run has no pixel threshold (no masks): colours over these maps, no outline
        note(f"no pixel threshold: {run_thr['pixel_threshold_reason']}; the overlays outline nothing")
        lo, top = median, float(np.max(q_maps))
        hi = max(top, lo + 1e-6 * max(abs(lo), 1.0))
    else:
        lo = min(median, pixel_thr)
        hi = pixel_thr + max(pixel_thr - lo, 1e-6 * max(abs(pixel_thr), 1.0))
    q_scores = np.asarray(q_scores, dtype=np.float64)
    flags = q_scores > image_thr
    view = _view(det.load_size, det.crop)

    detector = det.record()
    record: dict[str, Any] = {
        "method": ref.method,
        "model": {
            "path": str(ref.model_path.resolve()),
            "sha256": _sha256(ref.model_path),
            "model_hash": ref.model_hash,
            "files": {role: str(p.resolve()) for role, p in ref.models.items()},
            "result": None if ref.result_path is None else str(ref.result_path.resolve()),
            "dataset": ref.run.dataset,
            "class": cls,
            "seed": ref.run.seed,
        },
        "settings": config["methods"][ref.method],
        "settings_source": ref.settings_source,
        "settings_overrides": dict(settings or {}),
        "fit_state": fit_record,  # where the training statistics came from (source None: the method fits none)
        "fusion_scale_value": detector["extra"].get("fusion_scale"),  # Method B: the fixed max D_f / max D_p
        "backbone": detector["backbone"],
        "fpr": fpr,
        "image_threshold": image_thr,
        "pixel_threshold": pixel_thr,
        "threshold_rule": rule,
        "image_threshold_is_max": bool(is_max),
        "optimistic": optimistic,
        "n_normal": n_normal,
        "normal_source": source,
        "normal_scores": normal_scores,
        "images": str(Path(images).resolve()),
        "n_images": len(query),
        "n_anomalous": int(flags.sum()),
        "map_size": list(q_maps.shape[-2:]),
        "map_view": list(view),
        "maps": "maps/<stem>.npy (float16, model input size) and maps/<stem>.png; overlays/<stem>.png",
        "colour_scale": [lo, hi],
        "warnings": warnings,
        "device": device_info(dev),
        "versions": collect_versions(dev),
        "texad": texad.__version__,
        "created": utc_now(),
    }
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"

    f16_max = float(np.finfo(np.float16).max)
    for i, p in enumerate(query):
        amap = np.asarray(q_maps[i], dtype=np.float32)
        _write_bytes(
            out / "maps" / f"{p.stem}.npy", _npy(np.clip(amap, -f16_max, f16_max).astype(np.float16))
        )
        _write_bytes(out / "maps" / f"{p.stem}.png", _png(_colour(amap, lo, hi)))
        _write_bytes(out / "overlays" / f"{p.stem}.png", _png(_overlay(p, amap, view, pixel_thr, lo, hi)))
    atomic_write_text(out / THRESHOLD, text)
    atomic_write_text(out / SCORES, _scores_csv(query, q_scores, image_thr, flags))
    return record
