"""Method A: score-based defect detection with "T scales" (Teng et al. 2022), re-derived as documented in spec
``method_a_score_tscales.md`` (the score SDE of Song et al. 2021, noise injection + short reverse chains from a few
separated start levels, the score magnitude as the anomaly measure).

The registry module of ``methods.method_a`` (see :class:`texad.methods.base.MethodModule`): one model kind,
``score`` (a VE/VP score model per class, NCSN++); with ``model: shared_ddpm`` a run reads Method B's DDPM instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from texad.methods.base import RunKey, Runtime, lazy_detector

from .ablation import candidates, point_name, variants
from .settings import MethodASettings, score_train_settings

NAME = "method_a"
MODELS = ("score",)
Settings = MethodASettings

__all__ = [
    "MODELS",
    "NAME",
    "MethodASettings",
    "Settings",
    "backbones",
    "identity",
    "model_file",
    "models",
    "point_name",
    "score_train_settings",
    "train",
    "variants",
    "candidates",
]


def identity(kind: str, settings: MethodASettings, run: RunKey) -> str:
    return score_train_settings(settings, run.dataset, run.class_name, run.seed, run.holdout).model_hash()


def model_file(kind: str, settings: MethodASettings, run: RunKey) -> str:
    return f"score-{identity(kind, settings, run)}.pt"


def models(settings: MethodASettings) -> dict[str, str]:
    """The class's own score model, or Method B's DDPM (``shared_ddpm``)."""
    return {"model": "score" if settings.model == "own" else "ddpm"}


def backbones(settings: MethodASettings, kind: str | None) -> tuple[str, ...]:
    return ()


def train(
    kind: str,
    settings: MethodASettings,
    run: RunKey,
    runtime: Runtime,
    *,
    class_dir: Path,
    out: Path,
    ckpt_dir: Path,
    workers: int = 0,
    **_: Any,
) -> dict:
    """Train the class's own score model (the diffusion core's trainer, DSM objective)."""
    from texad.diffusion.training import train_diffusion

    return train_diffusion(
        class_dir, out, ckpt_dir, score_train_settings(settings, run.dataset, run.class_name, run.seed, run.holdout),
        device=runtime.torch_device(), precision=runtime.precision,
        checkpoint_every=settings.train.checkpoint_every, config=settings.to_config(), num_workers=workers,
    )  # fmt: skip


__getattr__ = lazy_detector(__name__, "MethodADetector")
