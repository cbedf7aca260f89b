"""One run of any method on one class: fit, score the test split, evaluate on the grid, write the result.

:func:`run_class` is the only evaluation driver: every method's :class:`~texad.methods.base.Detector` goes
through it, so the evaluation grid, the per-image noise seeds, the timings, the metrics, the maps file and the
result JSON are the same code for all of them.

A run writes one result JSON (``texad.results.record``); a maps ``.npz`` with the maps on the evaluation grid
(float32, the very values the metrics were computed on, so that thresholds, intervals and checks read what was
scored), the image scores, labels, the masks on the grid (bool), image paths and, for reconstruction methods, the
reconstructions (uint8, N x H x W x 3) used by the Figure-1 grids; and beside the result its fit state,
``<stem>.fit.npz`` (:meth:`~texad.methods.base.Detector.fit_state`: what the detector computed from the training
images, no arrays for a method that fits nothing), whose file name and SHA-256 the result records
(``extra.fit_state``) so that ``texad predict`` scores with the run's own statistics.

Noise: every image draws its noise from ``image_seed(seed, <class>, image_identity(path))``
(:mod:`texad.methods.base`), the SHA-256 of its file, whether it is a test image or a training image of the fit.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from texad.atomic import atomic_write
from texad.config.identity import settings_hash
from texad.data.layout import image_metrics_only, list_samples
from texad.data.mvtec import MVTecDataset
from texad.evaluation.protocol import evaluate_on_grid, geometry
from texad.methods.base import Detector, RunKey, Runtime, Scored, fit_state_path, image_identity, image_seed
from texad.results.record import build_result, device_info, write_result

__all__ = [
    "run_class",
    "score_images",
    "save_maps",
    "to_uint8_hwc",
    "time_per_image",
    "load_images",
    "image_seeds",
    "fit_state_path",
    "write_fit_state",
    "read_fit_state",
]

_WARMUP_IMAGES = 5
_MIN_TIMED_IMAGES = 8


def to_uint8_hwc(images01: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> uint8 (N, H, W, C), as the maps files store reconstructions."""
    return (images01.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def save_maps(path: Path, **arrays: np.ndarray) -> None:
    """Maps (float32), scores, labels and reconstructions, compressed, written atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()), binary=True)


def load_images(class_dir: Path, split: str, size: int, limit: int | None = None) -> torch.Tensor:
    """The first ``limit`` (None: all) images of a split, (N, 3, size, size) float32 in [0, 1]."""
    data = MVTecDataset(class_dir, split, image_size=size)
    n = len(data) if limit is None else min(len(data), limit)
    return torch.stack([data[i]["image"] for i in range(n)])


def image_seeds(run: RunKey, paths) -> list[int]:
    """The noise seeds of these image files for ``run``: from each file's content, so that the same image draws
    the same noise in the benchmark and in ``texad predict``, wherever it lies and whatever the other images."""
    return [image_seed(run.seed, run.class_name, image_identity(p)) for p in paths]


def write_fit_state(path: Path, state: dict[str, np.ndarray]) -> str:
    """Write a detector's fit state (uncompressed ``.npz``) atomically; returns the file's SHA-256."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in state.items()})
    data = buffer.getvalue()
    atomic_write(path, lambda fh: fh.write(data), binary=True)
    return hashlib.sha256(data).hexdigest()


def read_fit_state(path: Path, sha256: str) -> dict[str, np.ndarray]:
    """A run's fit state, checked against the SHA-256 its result records (another file of that name would give
    other statistics than the run's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"the run's fit state {path} is missing (texad run writes it beside the result)"
        )
    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise ValueError(
            f"fit state {path} has SHA-256 {found}, but its result records {sha256}: it is not the file this run "
            "wrote; rerun the run (or restore its file)"
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def time_per_image(detector: Detector, images: torch.Tensor, batch_size: int) -> float:
    """Wall seconds per image of :meth:`Detector.score` at ``batch_size`` (spec §3.4): after 5 warm-up images
    scored one by one, at least 8 timed images in whole batches; ``images`` are repeated when too few."""
    n_batches = max(1, math.ceil(_MIN_TIMED_IMAGES / batch_size))
    need = _WARMUP_IMAGES + n_batches * batch_size
    xs = images.repeat(math.ceil(need / images.shape[0]), 1, 1, 1)[:need]
    for i in range(_WARMUP_IMAGES):
        detector.score(xs[i : i + 1], [i])
    total = 0.0
    for b in range(n_batches):
        batch = xs[_WARMUP_IMAGES + b * batch_size : _WARMUP_IMAGES + (b + 1) * batch_size]
        start = time.perf_counter()
        detector.score(batch, list(range(batch.shape[0])))
        if detector.device.type == "cuda":
            torch.cuda.synchronize(detector.device)
        total += time.perf_counter() - start
    return total / (n_batches * batch_size)


def _score_test_split(detector: Detector, class_dir: Path, run: RunKey, runtime: Runtime):
    """(dataset, evaluation geometry, the detector's finalised output, masks on the grid, labels) of the test
    split. The geometry follows the detector's protocol (``texad``, or an official code's: ``ddad``, ``draem``); a
    centre crop of the detector's input (SimpleNet's official protocol) crops the masks alike."""
    probe = MVTecDataset(class_dir, "test", image_size=detector.load_size, mask_size="native")
    if len(probe) == 0:
        raise ValueError(f"{class_dir}: the test split holds no images")
    geo = geometry(detector.protocol, runtime.resolution, tuple(probe[0]["mask"].shape[-2:]),
                   map_size=detector.load_size, crop=detector.crop, load=detector.load_size)  # fmt: skip
    data = MVTecDataset(class_dir, "test", image_size=detector.load_size, mask_size=geo.mask_load)
    parts, masks, labels = [], [], []
    for batch in torch.utils.data.DataLoader(data, batch_size=detector.batch_size, shuffle=False):
        seeds = image_seeds(run, [data.samples[int(i)].path for i in batch["index"]])
        parts.append(detector.score(detector.prepare(batch["image"]), seeds))
        masks.append(geo.masks(batch["mask"][:, 0]))
        labels.append(batch["label"].numpy())
    out = detector.finalize(parts)
    if detector.device.type == "cuda":
        torch.cuda.synchronize(detector.device)
    return data, geo, out, np.concatenate(masks), np.concatenate(labels)


def _recorded_config(detector: Detector) -> dict:
    """The settings a run records (``extra.config``): its config part, its variant applied; the ablation grid is
    not what the run ran and is recorded with every axis left out, so the part validates on its own."""
    config = detector.settings.to_config()
    block = config["methods"][detector.method]
    if "ablation" in block:
        block["ablation"] = {k: [] if isinstance(v, list) else False for k, v in block["ablation"].items()}
    return config


def run_class(
    detector: Detector,
    class_dir: Path,
    run: RunKey,
    runtime: Runtime,
    *,
    out_result: Path,
    out_maps: Path,
    fit_state: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Run ``detector`` on the test split of ``class_dir`` and write the result JSON and the maps file.

    Every image, test or training, draws its noise from its own content (:func:`image_seeds`), so a score depends
    neither on the batch size nor on the other images, their names or their order. The fit state goes beside the
    result (:func:`fit_state_path`), written before it. ``fit_state``: what :meth:`Detector.fit` gives on the
    training images of ``class_dir`` (another run's, computed on the same images), taken instead of fitting.
    Returns the result.
    """
    class_dir = Path(class_dir)
    start = time.perf_counter()
    if fit_state is not None:
        detector.load_fit_state(fit_state)
    elif detector.needs_fit:
        train = load_images(class_dir, "train", detector.load_size, detector.fit_images)
        paths = [s.path for s in list_samples(class_dir, "train")[: train.shape[0]]]  # the images loaded
        if train.shape[0] < 2:  # per-pixel statistics need two maps at least
            raise ValueError(
                f"{detector.method} fits statistics of 2 or more training images; "
                f"{class_dir}/train has {train.shape[0]}"
            )
        detector.fit(detector.prepare(train), image_seeds(run, paths))
    fit_s = time.perf_counter() - start

    t_test = time.perf_counter()
    data, geo, out, masks, labels = _score_test_split(detector, class_dir, run, runtime)
    test_s = time.perf_counter() - t_test
    inference_s = time.perf_counter() - start

    speed = {}
    if detector.speed_batches:
        images = torch.stack([data[i]["image"] for i in range(min(len(data), 16))])
        speed = {
            str(bs): time_per_image(detector, detector.prepare(images), bs) for bs in detector.speed_batches
        }

    maps, scores = geo.maps_and_scores(out.maps, out.scores)
    metrics, on_grid = evaluate_on_grid(
        maps,
        scores,
        masks,
        labels,
        fpr_limit=runtime.fpr_limit,
        pixel_metrics=not image_metrics_only(class_dir),
    )
    arrays = {} if out.reconstructions is None else {"reconstructions": out.reconstructions}
    save_maps(
        out_maps,
        # float32 as scored: float16 would tie a weak model's close probabilities (the tiny demo's DRAEM: 6 distinct
        # values, its bootstrap off by 0.16 pixel AUROC) and overflow normalised maps past 65504
        maps=np.asarray(on_grid, dtype=np.float32),
        scores=np.asarray(scores).astype(np.float32),
        labels=labels,
        masks=np.asarray(masks, dtype=bool),  # as the metrics saw them: thresholds are chosen on them later
        paths=np.array([str(s.path) for s in data.samples]),
        **arrays,
    )

    fit_file = fit_state_path(out_result)
    fit_sha = write_fit_state(fit_file, detector.fit_state())
    rec, config = detector.record(), _recorded_config(detector)
    n_images = len(data)
    evaluation = {"resolution": runtime.resolution, "fpr_limit": runtime.fpr_limit, "grid": list(geo.grid),
                  "protocol": geo.record()}  # fmt: skip
    result = build_result(
        run_name=runtime.run_name,
        dataset=run.dataset,
        class_name=run.class_name,
        method=detector.method,
        variant=run.variant,
        seed=run.seed,
        metrics=metrics,
        evaluation={**evaluation, "switches": rec["switches"]},
        timings={
            "train_s": rec["train_s"],
            "inference_s": inference_s,
            "images_per_s": n_images / test_s if test_s > 0 else None,
            "nfe_per_image": out.nfe_per_image,
        },
        device=device_info(str(detector.device), rec["precision"]),
        config_hash=settings_hash({"config": config, "model_hash": rec["model_hash"], **evaluation}),
        backbone=rec["backbone"],
        model_hash=rec["model_hash"],
        extra={
            "config": config,
            # the share of the class's training images its models did not train on (validation.holdout; None: all)
            "holdout": None if run.holdout is None else run.holdout.identity(),
            **rec["extra"],
            "fit_state": {"file": fit_file.name, "sha256": fit_sha},
            "timing": {
                "train_stats_s": fit_s,
                "test_s": test_s,
                "s_per_test_image": test_s / n_images if n_images else None,
                "batch_size": detector.batch_size,
                "s_per_image_at_batch": speed,
            },
        },
    )
    write_result(out_result, result)
    return result


def score_images(detector: Detector, images: torch.Tensor, seeds: list[int]) -> Scored:
    """Score a set of images (N, 3, S, S) at :attr:`Detector.load_size` in the detector's batches."""
    images = detector.prepare(images)
    bs = detector.batch_size
    parts = [detector.score(images[i : i + bs], seeds[i : i + bs]) for i in range(0, images.shape[0], bs)]
    return detector.finalize(parts)
