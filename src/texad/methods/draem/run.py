"""DRAEM on one class: score every test image with a trained model, evaluate, write the result JSON.

The test images are read whole at the model's ``image_size`` (no crop); the maps are resized to the
evaluation grid by :func:`~texad.evaluation.protocol.evaluate_on_grid` like every other method's.
DRAEM has no pretrained backbone (both networks are trained from scratch): the result's ``backbone`` is
null and ``extra.weights`` says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from texad.accel import FP32, Accel
from texad.config.identity import settings_hash
from texad.data.mvtec import MVTecDataset
from texad.evaluation.protocol import grid_size
from texad.methods.common import evaluate_and_save_maps, run_result, to_uint8_hwc
from texad.results.record import write_result

from .infer import image_scores, predict
from .train import load_draem_model

__all__ = ["RunSpec", "run_draem"]

WEIGHTS_NOTE = "none: DRAEM has no pretrained backbone; both sub-networks are trained from scratch"


@dataclass(frozen=True)
class RunSpec:
    run_name: str
    dataset: str
    class_name: str
    seed: int
    variant: str = "default"
    resolution: int | str = 256
    fpr_limit: float = 0.3
    batch_size: int = 16
    device: str = "cpu"
    score_pool: int | None = None  # None: the model's settings (methods.draem.score_pool at training)


def run_draem(
    model_path: str | Path,
    class_dir: str | Path,
    spec: RunSpec,
    *,
    out_result: str | Path,
    out_maps: str | Path,
    accel: Accel = FP32,
) -> dict:
    """Evaluate the model at ``model_path`` on ``class_dir``'s test split; writes the result JSON and the
    maps ``.npz`` (maps on the grid, scores, labels, paths, reconstructions) and returns the result.
    ``accel``: the GPU fast path of both networks (fp32 on a CPU)."""
    device = torch.device(spec.device)
    accel = accel.on(device)
    recon, disc, meta = load_draem_model(model_path, device)
    recon, disc = accel.prepare(recon, device), accel.prepare(disc, device)
    settings = meta["settings"]
    if (meta["dataset"], meta["class"]) != (spec.dataset, spec.class_name):
        raise ValueError(
            f"model {model_path} was trained on {meta['dataset']}/{meta['class']}, "
            f"not {spec.dataset}/{spec.class_name}"
        )
    pool = settings.score_pool if spec.score_pool is None else int(spec.score_pool)
    size = settings.image_size
    probe = MVTecDataset(class_dir, "test", image_size=size, mask_size="native")
    grid = grid_size(spec.resolution, tuple(probe[0]["mask"].shape[-2:]))
    data = MVTecDataset(class_dir, "test", image_size=size, mask_size=grid)
    loader = torch.utils.data.DataLoader(data, batch_size=spec.batch_size, shuffle=False)

    maps, scores, masks, labels, recons = [], [], [], [], []
    start = time.perf_counter()
    for batch in loader:
        x = batch["image"].to(device)
        m, rec = predict(recon, disc, x)
        maps.append(m.float().cpu())
        scores.append(image_scores(m, pool).float().cpu())
        masks.append(batch["mask"][:, 0].bool().numpy())
        labels.append(batch["label"].numpy())
        recons.append(to_uint8_hwc(rec))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    inference_s = time.perf_counter() - start

    score_arr = torch.cat(scores).numpy().astype(np.float64)
    metrics = evaluate_and_save_maps(
        out_maps, torch.cat(maps).numpy(), score_arr, masks, labels, data.samples, fpr_limit=spec.fpr_limit,
        reconstructions=np.concatenate(recons),
    )  # fmt: skip

    used = {**asdict(settings), "score_pool": pool}
    train = meta["train"]
    result = run_result(
        spec,
        "draem",
        metrics=metrics,
        grid=grid,
        switches={
            "recipe": settings.recipe,
            "anomaly_source": meta["anomaly_source"]["kind"],
            "score_pool": pool,
            "color_order": "rgb",
        },
        timings={
            "train_s": train.get("seconds"),
            "inference_s": inference_s,
            "images_per_s": len(data) / inference_s if inference_s > 0 else None,
            "nfe_per_image": None,
        },
        precision=accel.precision,
        config_hash=settings_hash({"settings": used, "model_hash": meta["model_hash"]}),
        backbone=None,
        model_hash=meta["model_hash"],
        extra={
            "weights": WEIGHTS_NOTE,
            "settings": used,
            "anomaly_source": meta["anomaly_source"],
            "recipe": meta["recipe"],
            "image_size": size,
            "n_params": meta["n_params"],
            "train": {
                k: train.get(k) for k in ("epochs", "steps", "seconds", "device", "lr_milestones", "lr_gamma")
            },
        },
    )
    write_result(out_result, result)
    return result
