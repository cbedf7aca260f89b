"""Method B on one class: reconstruct every test image, build the maps, evaluate, write the result JSON.

The trained DDPM is loaded from its identity-named file (shared by every variant); each test image draws
its noise from its own seed (global seed, class, image index), so results do not depend on batching.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from texad.accel import FP32, Accel
from texad.backbones.features import load_backbone
from texad.config.identity import settings_hash
from texad.data.mvtec import MVTecDataset
from texad.diffusion.training import load_diffusion_model, require_trained_level
from texad.evaluation.protocol import grid_size
from texad.methods.common import evaluate_and_save_maps, image_seed, run_result, to_uint8_hwc
from texad.methods.conditioned_blur.ablation import point_name
from texad.methods.conditioned_blur.anomaly_map import (
    MapSettings,
    anomaly_maps,
    feature_distance,
    pixel_distance,
)
from texad.methods.conditioned_blur.domain_adaptation import load_adapted_state
from texad.methods.conditioned_blur.infer import ReconstructionSettings, reconstruct
from texad.results.record import write_result


@dataclass(frozen=True)
class RunSpec:
    run_name: str
    dataset: str
    class_name: str
    variant: str
    seed: int
    backbone: str
    backbone_weights: str
    weights_cache: Path | None
    resolution: int | str = 256
    fpr_limit: float = 0.3
    batch_size: int = 16
    device: str = "cpu"
    adapted_features: Path | None = None  # DDAD domain adaptation output, None = pretrained weights


def run_method_b(
    model_path: Path,
    class_dir: Path,
    spec: RunSpec,
    recon: ReconstructionSettings,
    maps_cfg: MapSettings,
    *,
    out_result: Path,
    out_maps: Path,
    accel: Accel = FP32,
) -> dict:
    """``accel``: the GPU fast path of the U-Net evaluations (fp32 eager on a CPU)."""
    device = torch.device(spec.device)
    accel = accel.on(device)
    model, schedule, meta = load_diffusion_model(model_path, device=spec.device)
    require_trained_level(meta, recon.t_start, f"Method B on {spec.class_name}")
    model = accel.prepare(model, device)
    schedule = schedule.to(device)
    size = int(meta["settings"]["image_size"])
    probe = MVTecDataset(class_dir, "test", image_size=size, mask_size="native")
    native_hw = tuple(probe[0]["mask"].shape[-2:])
    grid = grid_size(spec.resolution, native_hw)
    data = MVTecDataset(class_dir, "test", image_size=size, mask_size=grid)
    extractor = load_backbone(
        spec.backbone, weights=spec.backbone_weights, cache_dir=spec.weights_cache, layers=maps_cfg.layers
    )
    if spec.adapted_features is not None:
        extractor.load_adapted(*load_adapted_state(spec.adapted_features))
    extractor = extractor.to(device)

    def eps_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x_t, t)

    def distances(dataset, seed_key: str) -> dict:
        """D_p, D_f, the NFE per image, and the masks, labels and reconstructions of every image of ``dataset``
        (its noise seeded per image from ``seed_key``)."""
        loader = torch.utils.data.DataLoader(dataset, batch_size=spec.batch_size, shuffle=False)
        out: dict = {"d_pixel": [], "d_feature": [], "masks": [], "labels": [], "recons": [], "nfe": 0}
        with torch.no_grad():
            for batch in loader:
                x = batch["image"].to(device) * 2.0 - 1.0
                seeds = [image_seed(spec.seed, seed_key, int(i)) for i in batch["index"]]
                x_rec, info = reconstruct(eps_model, schedule, x, recon, seeds=seeds)
                out["nfe"] = info["nfe_per_image"]
                out["d_pixel"].append(pixel_distance(x, x_rec).float().cpu())
                d_f = feature_distance(
                    extractor, x, x_rec, maps_cfg.layers, (size, size), maps_cfg.feature_size
                )
                out["d_feature"].append(d_f.float().cpu())
                out["masks"].append(batch["mask"][:, 0].bool().numpy())
                out["labels"].append(batch["label"].numpy())
                out["recons"].append(to_uint8_hwc((x_rec + 1) / 2))
        out["d_pixel"], out["d_feature"] = torch.cat(out["d_pixel"]), torch.cat(out["d_feature"])
        return out

    start = time.perf_counter()
    test = distances(data, spec.class_name)
    test_s = time.perf_counter() - start
    train_distances = None
    if maps_cfg.normalise == "train_stats":
        train_data = MVTecDataset(class_dir, "train", image_size=size)
        n_train = min(len(train_data), maps_cfg.normalise_images or len(train_data))
        if n_train < 2:
            raise ValueError(
                f"normalise: train_stats needs 2 or more training images; {class_dir}/train has {len(train_data)}"
            )
        train = distances(torch.utils.data.Subset(train_data, range(n_train)), f"{spec.class_name}/train")
        train_distances = (train["d_pixel"], train["d_feature"])
    inference_s = time.perf_counter() - start
    maps, scores = anomaly_maps(test["d_pixel"], test["d_feature"], maps_cfg, train=train_distances)
    metrics = evaluate_and_save_maps(
        out_maps, maps, scores, test["masks"], test["labels"], data.samples, fpr_limit=spec.fpr_limit,
        reconstructions=np.concatenate(test["recons"]),
    )  # fmt: skip
    n_images = len(data)
    settings = {
        "reconstruction": recon.as_dict(),
        "map": maps_cfg.as_dict(),
        "model_hash": meta["model_hash"],
    }
    result = run_result(
        spec,
        "method_b",
        metrics=metrics,
        grid=grid,
        switches={
            "fusion_norm": maps_cfg.fusion_norm,
            "clip_x0": recon.clip_x0,
            "normalise": maps_cfg.normalise,
            "draws": recon.draws,
        },
        timings={
            "train_s": meta["train"].get("seconds"),
            "inference_s": inference_s,
            "images_per_s": n_images / test_s if test_s > 0 else None,
            "nfe_per_image": test["nfe"],
        },
        precision=accel.precision,
        config_hash=settings_hash(settings),
        backbone=extractor.describe(),
        model_hash=meta["model_hash"],
        extra={
            "settings": settings,
            "image_size": size,
            "n_params": meta.get("n_params"),
            "accel": accel.as_dict(),
            "train_precision": meta["train"].get("precision", "fp32"),
            # the run's guidance point, so the ablation table counts a default run under its point too
            "ablation_point": point_name(recon.w, recon.s, recon.blur_sigma, recon.t_start),
            "timing": {"test_s": test_s, "train_stats_s": inference_s - test_s},
            "train_stats_images": len(train_distances[0]) if train_distances is not None else 0,
        },
    )
    write_result(out_result, result)
    return result
