"""Method B: conditioned (DDAD) + blur-guided (SAG, mask = 1) DDPM reconstruction for texture anomaly
detection. See spec ``method_b_conditioned_blur_ddpm.md``.

The registry module of ``methods.method_b`` (see :class:`texad.methods.base.MethodModule`): two model kinds,
``ddpm`` (the class's epsilon-prediction U-Net, which Method A's ``shared_ddpm`` reads too) and ``features``
(DDAD's domain-adapted feature extractor, for classes whose ``feature_adaptation.epochs`` is not 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from texad.backbones.weights import BACKBONES
from texad.methods.base import RunKey, Runtime, lazy_detector

from .ablation import (
    candidates,
    inference_point,
    neighbour_point,
    official,
    parse_point,
    point_name,
    variants,
)
from .settings import MethodBSettings, adaptation_settings, ddpm_train_settings

NAME = "method_b"
MODELS = ("ddpm", "features")
Settings = MethodBSettings

__all__ = [
    "MODELS",
    "NAME",
    "MethodBSettings",
    "Settings",
    "adaptation_settings",
    "backbones",
    "ddpm_train_settings",
    "identity",
    "inference_point",
    "model_file",
    "models",
    "neighbour_point",
    "official",
    "candidates",
    "parse_point",
    "point_name",
    "train",
    "variants",
]


def identity(kind: str, settings: MethodBSettings, run: RunKey) -> str | None:
    """The DDPM's hash, or the adapted extractor's (None: the class is not adapted)."""
    ddpm = ddpm_train_settings(settings, run.dataset, run.class_name, run.seed, run.holdout).model_hash()
    if kind == "ddpm":
        return ddpm
    adaptation = adaptation_settings(settings, run.seed)
    if adaptation is None:
        return None
    backbone = settings.inference.feature_backbone
    return adaptation.identity_hash(ddpm, backbone, BACKBONES[backbone])


def model_file(kind: str, settings: MethodBSettings, run: RunKey) -> str:
    if kind == "ddpm":
        return f"ddpm-{identity(kind, settings, run)}.pt"
    return f"features-{settings.inference.feature_backbone}-{identity(kind, settings, run)}.pt"


def models(settings: MethodBSettings) -> dict[str, str]:
    """The DDPM, and the adapted extractor for a class with feature adaptation."""
    adapted = settings.feature_adaptation.epochs > 0
    return {"model": "ddpm", **({"features": "features"} if adapted else {})}


def backbones(settings: MethodBSettings, kind: str | None) -> tuple[str, ...]:
    return () if kind == "ddpm" else (settings.inference.feature_backbone,)


def train(
    kind: str,
    settings: MethodBSettings,
    run: RunKey,
    runtime: Runtime,
    *,
    class_dir: Path,
    out: Path,
    ckpt_dir: Path,
    workers: int = 0,
    model: Path | None = None,
    **_: Any,
) -> dict:
    """Train the class's DDPM (``ddpm``), or adapt the feature extractor to it (``features``: ``model`` is the
    trained DDPM)."""
    if kind == "ddpm":
        from texad.diffusion.training import train_diffusion

        return train_diffusion(
            class_dir, out, ckpt_dir, ddpm_train_settings(settings, run.dataset, run.class_name, run.seed, run.holdout),
            device=runtime.torch_device(), precision=runtime.precision,
            checkpoint_every=settings.train.checkpoint_every, config=settings.to_config(), num_workers=workers,
        )  # fmt: skip
    if model is None:
        raise ValueError("the feature adaptation needs --model, the class's trained DDPM")
    return _adapt_features(settings, run, runtime, class_dir=Path(class_dir), ddpm=Path(model), out=out,
                           ckpt_dir=ckpt_dir)  # fmt: skip


def _adapt_features(
    settings, run, runtime, *, class_dir: Path, ddpm: Path, out: Path, ckpt_dir: Path
) -> dict:
    from texad.backbones.features import load_backbone
    from texad.diffusion.training import load_diffusion_model, load_train_images, require_trained_level
    from texad.methods.base import require_model

    from .domain_adaptation import ADAPTATION_LAYERS, adapt_features

    adaptation = adaptation_settings(settings, run.seed)
    if adaptation is None:
        raise ValueError(
            f"methods.method_b.feature_adaptation.epochs is 0 for class {run.class_name}: nothing to adapt"
        )
    device = runtime.torch_device()
    net, schedule, meta = load_diffusion_model(ddpm, device=device)
    require_model("DDPM", ddpm, meta["model_hash"], identity("ddpm", settings, run))
    require_trained_level(meta, adaptation.t_start, f"the feature adaptation of {run.class_name}")
    backbone = settings.inference.feature_backbone
    extractor = load_backbone(backbone, weights=BACKBONES[backbone], cache_dir=runtime.weights_cache,
                              layers=ADAPTATION_LAYERS).to(device)  # fmt: skip
    return adapt_features(
        lambda x_t, t: net(x_t, t), schedule.to(device), extractor,
        load_train_images(class_dir, settings.image_size).to(device), adaptation, settings.inference,
        model_hash=meta["model_hash"], out_path=Path(out), ckpt_dir=Path(ckpt_dir), config=settings.to_config(),
        class_tag=f"{run.dataset}/{run.class_name}",
    )  # fmt: skip


__getattr__ = lazy_detector(__name__, "MethodBDetector")
