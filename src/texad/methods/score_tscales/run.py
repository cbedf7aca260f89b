"""Method A on one class: raw maps of the training images (for the normalisation) and the test images, the
anomaly maps, the metrics, and the result JSON + maps npz (the same layout as Method B's run).

The settings dataclasses mirror ``methods.method_a`` of ``workflow/schemas/config.schema.yaml`` key for key;
:meth:`MethodASettings.from_config` reads that block (defaults filled in).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from texad.accel import FP32, Accel
from texad.config.identity import settings_hash
from texad.data.mvtec import MVTecDataset
from texad.diffusion.training import (
    ScoreTrainSettings,
    load_diffusion_model,
    load_score_model,
    require_trained_level,
)
from texad.evaluation.protocol import grid_size
from texad.methods.common import evaluate_and_save_maps, image_seed, run_result, to_uint8_hwc
from texad.methods.score_tscales.anomaly_map import anomaly_maps, train_statistics
from texad.methods.score_tscales.infer import (
    InferenceSettings,
    ScoreModel,
    raw_maps,
    score_model_from_ddpm,
    score_model_from_net,
    time_per_image,
)
from texad.results.record import write_result

__all__ = [
    "MODEL_KINDS",
    "MODES",
    "SDESettings",
    "NetworkSettings",
    "TrainSettings",
    "AblationSettings",
    "MethodASettings",
    "RunSpec",
    "Variant",
    "ablation_variants",
    "resolve_variant",
    "variant_to_json",
    "variant_from_json",
    "variant_name",
    "load_score_model_any",
    "run_method_a",
]

MODEL_KINDS = ("own", "shared_ddpm")
MODES = ("t_scales", "full_chain")


@dataclass(frozen=True)
class SDESettings:
    type: str = "ve"
    sigma_min: float = 0.01
    sigma_max: float | str = "auto"
    n_steps: int = 2000


@dataclass(frozen=True)
class NetworkSettings:
    preset: str = "paper"
    nf: int = 64


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = 16
    iterations: int = 100000
    lr: float = 2e-4
    warmup: int = 5000
    grad_clip: float = 1.0
    ema: float = 0.999
    hflip: bool = True


@dataclass(frozen=True)
class AblationSettings:
    n_scales: tuple[int, ...] = (1, 2, 4, 8)
    steps_per_scale: tuple[int, ...] = (1, 2, 5, 10, 20)
    sigma_hi: tuple[float, ...] = (0.2, 0.4, 0.8)
    full_chain: bool = True
    metric: tuple[str, ...] = ("score", "recon", "score_clean")
    shared_ddpm: bool = True
    speed_batches: tuple[int, ...] = (1, 16)


@dataclass(frozen=True)
class MethodASettings:
    """``methods.method_a`` (without ``enabled``)."""

    model: str = "own"
    sde: SDESettings = field(default_factory=SDESettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    ablation: AblationSettings = field(default_factory=AblationSettings)

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")

    @classmethod
    def from_config(cls, block: dict[str, Any]) -> MethodASettings:
        """From the config block ``methods.method_a`` (missing keys take the schema defaults)."""
        b = {k: v for k, v in block.items() if k != "enabled"}
        abl = dict(b.get("ablation", {}))
        for key in ("n_scales", "steps_per_scale", "sigma_hi", "metric", "speed_batches"):
            if key in abl:
                abl[key] = tuple(abl[key])
        return cls(
            model=b.get("model", "own"),
            sde=SDESettings(**b.get("sde", {})),
            network=NetworkSettings(**b.get("network", {})),
            train=TrainSettings(**b.get("train", {})),
            inference=InferenceSettings(**b.get("inference", {})),
            ablation=AblationSettings(**abl),
        )

    def shaping_block(self) -> dict:
        """The part of the config block that shapes the score model (SDE range, network, training): what a train
        job is given, so that inference and ablation settings never touch the training job."""
        sde = {k: v for k, v in asdict(self.sde).items() if k != "n_steps"}
        return {"sde": sde, "network": asdict(self.network), "train": asdict(self.train)}

    def train_settings(self, dataset: str, class_name: str, image_size: int, seed: int) -> ScoreTrainSettings:
        """The identity of the class's own score model (``model: own``)."""
        return ScoreTrainSettings(
            dataset=dataset,
            class_name=class_name,
            sde=self.sde.type,
            sigma_min=self.sde.sigma_min,
            sigma_max=self.sde.sigma_max,
            preset=self.network.preset,
            nf=self.network.nf,
            image_size=image_size,
            seed=seed,
            **asdict(self.train),
        )


def _fmt(v: float) -> str:
    return f"{v:g}"


def variant_name(inf: InferenceSettings) -> str:
    """A label for a T-scales setting, e.g. ``K4_n5_s0.4``."""
    return f"K{inf.n_scales}_n{inf.steps_per_scale}_s{_fmt(inf.sigma_hi)}"


@dataclass(frozen=True)
class Variant:
    """One Method A run on a class: its name (the workflow's ``{variant}``), inference settings, mode and model."""

    name: str
    inference: InferenceSettings
    mode: str = "t_scales"
    model: str = "own"


def ablation_variants(settings: MethodASettings) -> list[Variant]:
    """The ablation, one factor at a time around the default inference settings. The default point itself is
    left out (it is the ``default`` run). Points: T scales (``K{n_scales}_n{steps}_s{sigma_hi}``), the full-length
    reference chain from ``sigma_hi`` (``full_chain``), the other anomaly measures (``metric_<name>``) and, for an
    own score model, the same inference on Method B's DDPM (``shared_ddpm``: no extra training)."""
    base, abl, kind = settings.inference, settings.ablation, settings.model
    out: dict[str, Variant] = {}
    points = [replace(base, n_scales=int(k)) for k in abl.n_scales]
    points += [replace(base, steps_per_scale=int(n)) for n in abl.steps_per_scale]
    points += [replace(base, sigma_hi=float(s), sigma_lo=min(base.sigma_lo, float(s))) for s in abl.sigma_hi]
    for inf in points:
        if inf != base:
            out.setdefault(variant_name(inf), Variant(variant_name(inf), inf, "t_scales", kind))
    if abl.full_chain:
        out["full_chain"] = Variant("full_chain", base, "full_chain", kind)
    for metric in abl.metric:
        if metric != base.metric:
            name = f"metric_{metric}"
            out[name] = Variant(name, replace(base, metric=metric), "t_scales", kind)
    if abl.shared_ddpm and kind == "own":
        out["shared_ddpm"] = Variant("shared_ddpm", base, "t_scales", "shared_ddpm")
    return list(out.values())


def variant_to_json(variant: Variant) -> dict:
    """A variant as plain data (what a workflow job is given: only its own settings, not the whole grid)."""
    return {"inference": variant.inference.as_dict(), "mode": variant.mode, "model": variant.model}


def variant_from_json(name: str, data: dict) -> Variant:
    return Variant(name, InferenceSettings(**data["inference"]), data["mode"], data["model"])


def resolve_variant(settings: MethodASettings, name: str) -> Variant:
    """``default`` (the configured inference) or one of :func:`ablation_variants`, by name."""
    if name == "default":
        return Variant("default", settings.inference, "t_scales", settings.model)
    variants = {v.name: v for v in ablation_variants(settings)}
    if name not in variants:
        raise ValueError(
            f"unknown Method A variant {name!r}; this config defines: default, {', '.join(variants) or '(no ablation)'}"
        )
    return variants[name]


@dataclass(frozen=True)
class RunSpec:
    run_name: str
    dataset: str
    class_name: str
    variant: str
    seed: int
    resolution: int | str = 256
    fpr_limit: float = 0.3
    device: str = "cpu"


def load_score_model_any(
    model_path: Path, kind: str, device: str, n_steps: int, prepare: Callable | None = None
) -> tuple[ScoreModel, dict, int]:
    """(score model, model meta, image size) for ``kind`` "own" (a score-model file) or "shared_ddpm" (a DDPM).

    ``prepare``: applied to the network before it is wrapped into a score function (the GPU fast path)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model must be one of {MODEL_KINDS}, got {kind!r}")
    prepare = prepare or (lambda net: net)
    if kind == "own":
        net, sde, meta = load_score_model(model_path, device=device, n_steps=n_steps)
        model = score_model_from_net(prepare(net), sde)
    else:
        net, schedule, meta = load_diffusion_model(model_path, device=device)
        model = score_model_from_ddpm(prepare(net), schedule)
    return model, meta, int(meta["settings"]["image_size"])


def _maps_of(
    model: ScoreModel,
    dataset: MVTecDataset,
    inf: InferenceSettings,
    *,
    device: torch.device,
    seed_key: str,
    seed: int,
    sigma_end: float,
    full_chain: bool,
    collect: bool = False,
) -> tuple[torch.Tensor, dict, list[np.ndarray], list[np.ndarray]]:
    """Raw maps of every image, the last batch's info, and (``collect``) per-batch masks, labels and the
    reconstructions (uint8, N x H x W x 3) of the Figure-1 grids."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=inf.batch_size, shuffle=False)
    maps, masks, labels, recons, info = [], [], [], [], {}
    for batch in loader:
        x = batch["image"].to(device)
        seeds = [image_seed(seed, seed_key, int(i)) for i in batch["index"]]
        m, info = raw_maps(model, x, inf, seeds=seeds, sigma_end=sigma_end, full_chain=full_chain)
        maps.append(m.float().cpu())
        if collect:
            masks.append(batch["mask"][:, 0].bool().numpy())
            labels.append(batch["label"].numpy())
            recons.append(to_uint8_hwc(info["reconstruction"]))
    info["reconstructions"] = np.concatenate(recons) if recons else None
    return torch.cat(maps), info, masks, labels


def run_method_a(
    model_path: Path,
    class_dir: Path,
    spec: RunSpec,
    settings: MethodASettings,
    *,
    variant: Variant | None = None,
    speed_batches: tuple[int, ...] = (),
    out_result: Path,
    out_maps: Path,
    accel: Accel = FP32,
) -> dict:
    """Run one Method A variant on one class and write its result.

    ``accel``: the GPU fast path of the network evaluations (fp32 eager on a CPU).

    ``variant``: what to run (default: :func:`resolve_variant` of ``spec.variant``): its inference settings, its
    mode ("t_scales", or the "full_chain" reference) and its model kind: the class's own score model ("own") or
    Method B's DDPM ("shared_ddpm"), which ``model_path`` must then be. ``speed_batches``: batch sizes of the
    speed probe (spec §3.4: wall seconds per image after 5 warm-up images, e.g. ``(1, 16)``), recorded under
    ``extra.timing.s_per_image_at_batch``; empty = no probe.
    """
    v = resolve_variant(settings, spec.variant) if variant is None else variant
    if v.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {v.mode!r}")
    inf, mode = v.inference, v.mode
    device = torch.device(spec.device)
    accel = accel.on(device)
    model, meta, size = load_score_model_any(
        model_path, v.model, spec.device, settings.sde.n_steps, prepare=lambda net: accel.prepare(net, device)
    )
    if v.model == "shared_ddpm":  # the highest level visited, as a DDPM index
        top = model.level_time(inf.sigma_hi) * (model.sde.N - 1)
        require_trained_level(meta, top, f"Method A on the shared DDPM (sigma_hi {inf.sigma_hi:g})")
    full = mode == "full_chain"
    sigma_end = settings.sde.sigma_min

    probe = MVTecDataset(class_dir, "test", image_size=size, mask_size="native")
    native_hw = tuple(probe[0]["mask"].shape[-2:])
    grid = grid_size(spec.resolution, native_hw)
    test_data = MVTecDataset(class_dir, "test", image_size=size, mask_size=grid)

    start = time.perf_counter()
    stats, stats_s = None, 0.0
    if inf.normalise == "train_stats":
        train_data = MVTecDataset(class_dir, "train", image_size=size)
        train_raw, _, _, _ = _maps_of(
            model, train_data, inf, device=device, seed_key=f"{spec.class_name}/train", seed=spec.seed,
            sigma_end=sigma_end, full_chain=full,
        )  # fmt: skip
        stats = train_statistics(train_raw)
        stats_s = time.perf_counter() - start
    t_test = time.perf_counter()
    test_raw, info, masks, labels = _maps_of(
        model, test_data, inf, device=device, seed_key=spec.class_name, seed=spec.seed,
        sigma_end=sigma_end, full_chain=full, collect=True,
    )  # fmt: skip
    test_s = time.perf_counter() - t_test
    inference_s = time.perf_counter() - start

    speed = {}
    if speed_batches:
        x_probe = torch.stack([test_data[i]["image"] for i in range(min(len(test_data), 16))]).to(device)
        for bs in speed_batches:
            speed[str(int(bs))] = time_per_image(
                model,
                x_probe,
                inf,
                batch_size=int(bs),
                sigma_end=sigma_end,
                full_chain=full,
            )

    maps, scores = anomaly_maps(test_raw, stats, inf.smoothing_sigma)
    metrics = evaluate_and_save_maps(
        out_maps, maps, scores, masks, labels, test_data.samples, fpr_limit=spec.fpr_limit,
        reconstructions=info["reconstructions"],
    )  # fmt: skip

    n_images = len(test_data)
    run_settings = {
        "model": v.model,
        "mode": mode,
        "sde": asdict(settings.sde),
        "inference": inf.as_dict(),
        "model_hash": meta["model_hash"],
    }
    shared = v.model == "shared_ddpm"
    model_train_s = meta.get("train", {}).get("seconds")
    result = run_result(
        spec,
        "method_a",
        metrics=metrics,
        grid=grid,
        switches={
            "metric": inf.metric,
            "normalise": inf.normalise,
            "mode": mode,
            "model": v.model,
            "predictor": inf.predictor,
        },
        timings={
            "train_s": None if shared else model_train_s,  # the shared DDPM's training belongs to Method B
            "inference_s": inference_s,
            "images_per_s": n_images / test_s if test_s > 0 else None,
            "nfe_per_image": info["nfe_per_image"],
        },
        precision=accel.precision,
        config_hash=settings_hash(run_settings),
        backbone=None,
        model_hash=meta["model_hash"],
        extra={
            "settings": run_settings,
            "image_size": size,
            "n_params": meta.get("n_params"),
            "accel": accel.as_dict(),
            "sde_model": model.sde.describe(),
            "levels_pixel": info["levels"],
            "timing": {
                "train_stats_s": stats_s,
                "test_s": test_s,
                "s_per_test_image": test_s / n_images if n_images else None,
                "batch_size": inf.batch_size,
                "model_train_s": model_train_s,
                "s_per_image_at_batch": speed,
            },
        },
    )
    write_result(out_result, result)
    return result
