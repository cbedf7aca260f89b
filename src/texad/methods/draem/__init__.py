"""DRAEM (Zavrtanik et al., ICCV 2021) re-implemented from the spec ``baselines_simplenet_draem.md`` §2.

The registry module of ``methods.draem`` (see :class:`texad.methods.base.MethodModule`): one model kind,
``draem`` (both networks, trained from scratch on simulated anomalies), no ablation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from texad.methods.base import RunKey, Runtime, Variant, lazy_detector

from .settings import FORMAT, DraemSettings, Select, model_hash, model_identity

NAME = "draem"
MODELS = ("draem",)
Settings = DraemSettings

__all__ = [
    "FORMAT",
    "MODELS",
    "NAME",
    "DraemSettings",
    "Settings",
    "backbones",
    "identity",
    "model_file",
    "model_hash",
    "model_identity",
    "models",
    "official",
    "candidates",
    "train",
    "variants",
]


def identity(kind: str, settings: DraemSettings, run: RunKey) -> str:
    return model_hash(settings, run.dataset, run.class_name, run.seed, run.holdout)


def model_file(kind: str, settings: DraemSettings, run: RunKey) -> str:
    return f"draem-{identity(kind, settings, run)}.pt"


def models(settings: DraemSettings) -> dict[str, str]:
    return {"model": "draem"}


def backbones(settings: DraemSettings, kind: str | None) -> tuple[str, ...]:
    return ()


def variants(settings: DraemSettings) -> list[Variant]:
    return [Variant("default", settings)]


def candidates(settings: DraemSettings) -> list[Variant]:
    """The candidates of the ``selected`` variant: ``default``, then ``pool<n>`` for each ``select.score_pool`` size
    (the pooling of the image score only: the same model and maps)."""
    if not settings.select.score_pool:
        return []
    out = {}
    for pool in (settings.score_pool, *settings.select.score_pool):
        name = "default" if pool == settings.score_pool else f"pool{pool}"
        out.setdefault(
            name, Variant(name, replace(settings, score_pool=pool), None, Select(score_pool=(pool,)))
        )
    return list(out.values())


def official(settings: DraemSettings) -> Variant:
    """The official test's evaluation (``protocol: draem``: its eroding mask rule) on the default's model. The
    rest of DRAEM's test is texad's already: images and maps at 256 px, score = max of the 21 x 21 mean-filtered
    map."""
    return Variant("official", replace(settings, protocol="draem"))


def train(
    kind: str,
    settings: DraemSettings,
    run: RunKey,
    runtime: Runtime,
    *,
    class_dir: Path,
    out: Path,
    ckpt_dir: Path,
    workers: int = 0,
    anomaly_root: Path | None = None,
    source_classes: list[str] | None = None,
    **_: Any,
) -> dict:
    """Train one class's DRAEM on anomalies simulated from ``anomaly_root`` (DTD's folder holding ``images/``, or
    the synthetic set's root, whose ``source_classes`` other than the trained one serve)."""
    from texad.data.anomaly_sources import source_paths

    from .training import train_draem

    if anomaly_root is None:
        raise ValueError("DRAEM's training needs --anomaly-root (DTD, or the root of the synthetic classes)")
    dtd = settings.anomaly_source == "dtd"
    sources = source_paths(
        settings.anomaly_source,
        class_name=run.class_name,
        dtd_root=anomaly_root if dtd else None,
        dataset_root=None if dtd else anomaly_root,
        classes=source_classes,
    )
    return train_draem(
        class_dir, sources, settings, dataset=run.dataset, class_name=run.class_name, seed=run.seed, out=out,
        ckpt_dir=ckpt_dir, device=runtime.torch_device(), num_workers=workers, holdout=run.holdout,
    )  # fmt: skip


__getattr__ = lazy_detector(__name__, "DraemDetector")
