"""SimpleNet on one class: train (or reuse) the identity-named model, score the test set, evaluate, write.

Split in two steps, so a workflow can make the model one rule's output and the result another's:

- :func:`train_model` trains and writes the model file (with ``selection: official`` it loads the test set
  to pick the best epoch, as the official code; the result then says so);
- :func:`evaluate_model` loads the model, scores every test image, evaluates with the one protocol
  (:func:`texad.evaluation.protocol.evaluate_on_grid` at ``spec.resolution``) and writes the result JSON
  and the maps ``.npz``;
- :func:`run_simplenet` does both, reusing an existing model file whose identity matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from texad.accel import FP32, Accel
from texad.config.identity import settings_hash
from texad.evaluation.protocol import evaluate_on_grid
from texad.methods.common import run_result, save_maps
from texad.results.record import write_result

from .data import TestSet, load_test_set
from .infer import predict
from .model import SimpleNet
from .settings import SimpleNetSettings, model_hash
from .train import Selector, load_simplenet, train_simplenet

__all__ = [
    "RunSpec",
    "evaluate_model",
    "make_selector",
    "model_matches",
    "run_model_hash",
    "run_simplenet",
    "train_model",
]

METHOD = "simplenet"


@dataclass(frozen=True)
class RunSpec:
    """Where and how one SimpleNet run happens (everything that is not a SimpleNet setting)."""

    run_name: str
    dataset: str
    class_name: str
    seed: int
    backbone_weights: str  # "torchvision" (wide_resnet50_2), "efficientnet_lite0" or "none"
    weights_cache: Path | None = None
    variant: str = "default"
    resolution: int | str = 256
    fpr_limit: float = 0.3
    batch_size: int = 16  # inference batch
    device: str = "cpu"


def run_model_hash(spec: RunSpec, settings: SimpleNetSettings) -> str:
    """The identity hash naming this run's model file (e.g. ``simplenet_<hash>.pt``)."""
    return model_hash(
        settings,
        dataset=spec.dataset,
        class_name=spec.class_name,
        seed=spec.seed,
        backbone_weights=spec.backbone_weights,
    )


def _score(
    model: SimpleNet, test: TestSet, spec: RunSpec, sigma: float, accel: Accel = FP32
) -> tuple[dict, np.ndarray, np.ndarray, float]:
    maps, scores, seconds = predict(
        model, test.images, sigma=sigma, batch_size=spec.batch_size, device=spec.device, accel=accel
    )
    metrics, on_grid = evaluate_on_grid(maps, scores, test.masks, test.labels, fpr_limit=spec.fpr_limit)
    return metrics, on_grid, scores, seconds


def make_selector(test: TestSet, spec: RunSpec, settings: SimpleNetSettings) -> Selector:
    """The official epoch selector: (image AUROC, pixel AUROC) of the model on the test set."""

    def select(model: SimpleNet) -> tuple[float | None, float | None]:
        metrics, *_ = _score(model, test, spec, settings.smoothing_sigma)
        return metrics["image_auroc"], metrics["pixel_auroc"]

    return select


def train_model(
    class_dir: Path,
    spec: RunSpec,
    settings: SimpleNetSettings,
    *,
    model_path: Path,
    ckpt_dir: Path,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Train this class's model into ``model_path`` (resumable through ``ckpt_dir``); returns the summary."""
    selector = None
    if settings.selection == "official":
        selector = make_selector(load_test_set(Path(class_dir), settings, spec.resolution), spec, settings)
    return train_simplenet(
        class_dir,
        model_path,
        ckpt_dir,
        settings,
        dataset=spec.dataset,
        class_name=spec.class_name,
        seed=spec.seed,
        backbone_weights=spec.backbone_weights,
        weights_cache=spec.weights_cache,
        device=spec.device,
        selector=selector,
        progress=progress,
        log=log,
    )


def evaluate_model(
    class_dir: Path,
    spec: RunSpec,
    settings: SimpleNetSettings,
    *,
    model_path: Path,
    out_result: Path,
    out_maps: Path,
    accel: Accel = FP32,
) -> dict:
    """Score the test set with the model in ``model_path`` (it must match ``spec`` + ``settings``), evaluate
    on the grid, write the result JSON and the maps npz; returns the result dict. ``accel``: the GPU fast
    path of the network evaluations (fp32 on a CPU)."""
    accel = accel.on(spec.device)
    model, _, meta = load_simplenet(model_path, weights_cache=spec.weights_cache, device=spec.device)
    expected = run_model_hash(spec, settings)
    if meta["model_hash"] != expected:
        raise ValueError(
            f"{model_path} holds SimpleNet model {meta['model_hash']}, but this run's settings give {expected}"
        )
    test = load_test_set(Path(class_dir), settings, spec.resolution)
    metrics, on_grid, scores, inference_s = _score(model, test, spec, settings.smoothing_sigma, accel)
    save_maps(
        out_maps,
        maps=on_grid.astype(np.float16),
        scores=scores.astype(np.float32),
        labels=test.labels,
        paths=np.array(test.paths),
    )
    train = meta["train"]
    n_images = len(test.paths)
    result = run_result(
        spec,
        METHOD,
        metrics=metrics,
        grid=test.grid,
        switches={"center_crop": settings.center_crop, "selection": settings.selection},
        timings={
            "train_s": train["seconds"],
            "inference_s": inference_s,
            "images_per_s": n_images / inference_s if inference_s > 0 else None,
            "nfe_per_image": None,
        },
        precision=accel.precision,
        config_hash=settings_hash(
            {"method": METHOD, "settings": settings.as_dict(), "backbone_weights": spec.backbone_weights}
        ),
        backbone=meta["backbone"],
        model_hash=meta["model_hash"],
        extra={
            "settings": settings.as_dict(),
            "selection": {
                "mode": train["selection"],
                "used_test_set": train["used_test_set"],
                "selected_meta_epoch": train["selected_meta_epoch"],
                "selected_test_record": train["selected_test_record"],
            },
            "input_size": settings.image_size,
            "feature_grid": train["feature_grid"],
            "n_params": train["n_params"],
            "train": {
                k: train[k]
                for k in (
                    "steps",
                    "selection_s",
                    "final_loss",
                    "features_cached",
                    "resumed_from_meta_epoch",
                    "device",
                )
            },  # fmt: skip
            "history": train["history"],
        },
    )
    write_result(out_result, result)
    return result


def model_matches(model_path: Path, spec: RunSpec, settings: SimpleNetSettings) -> bool:
    """Whether ``model_path`` holds this run's model (same identity hash); an unreadable file does not."""
    try:
        data = torch.load(Path(model_path), map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated or foreign: train it (again)
        return False
    return isinstance(data, dict) and data.get("model_hash") == run_model_hash(spec, settings)


def run_simplenet(
    class_dir: Path,
    spec: RunSpec,
    settings: SimpleNetSettings,
    *,
    model_path: Path,
    ckpt_dir: Path,
    out_result: Path,
    out_maps: Path,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Train (unless ``model_path`` already holds this run's model) and evaluate; returns the result dict."""
    model_path = Path(model_path)
    reuse = model_matches(model_path, spec, settings)
    if not reuse:
        train_model(
            class_dir, spec, settings, model_path=model_path, ckpt_dir=ckpt_dir, progress=progress, log=log
        )
    return evaluate_model(
        class_dir, spec, settings, model_path=model_path, out_result=out_result, out_maps=out_maps
    )
