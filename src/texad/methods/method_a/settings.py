"""Method A's settings: the config's ``methods.method_a`` block (and the top-level ``image_size``), key for key.

Defaults live in the schema only (spec ``method_a_score_tscales.md`` §3, CHOSEN where the paper is silent). The
identity of the class's own score model is the diffusion core's :class:`~texad.diffusion.training.ScoreTrainSettings`
built from these settings by :func:`score_train_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from texad.config.settings import build, to_block
from texad.data.holdout import Holdout
from texad.diffusion.presets import NCSNPP_PRESETS, check_image_size
from texad.diffusion.settings import ScoreTrainSettings

__all__ = [
    "SDE",
    "Network",
    "Train",
    "Inference",
    "Ablation",
    "MethodASettings",
    "score_train_settings",
]


@dataclass(frozen=True)
class SDE:
    type: str  # ve or vp
    sigma_min: float
    sigma_max: float | str  # a number, or "auto" (the largest pairwise distance of the training images)
    n_steps: int  # the SDE's grid, which the full-chain reference visits


@dataclass(frozen=True)
class Network:
    preset: str
    nf: int


@dataclass(frozen=True)
class Train:
    batch_size: int
    iterations: int
    lr: float
    warmup: int
    grad_clip: float
    ema: float
    hflip: bool
    checkpoint_every: int


@dataclass(frozen=True)
class Inference:
    """T-scales inference (spec §3.3-3.4); ``metric`` and ``predictor`` differ from the spec's (see
    :mod:`texad.methods.method_a.infer`)."""

    metric: str
    mode: str  # t_scales, or full_chain (the reference)
    n_scales: int
    sigma_lo: float
    sigma_hi: float
    steps_per_scale: int
    draws: int
    normalise: str
    smoothing_sigma: float
    batch_size: int
    predictor: str


@dataclass(frozen=True)
class Ablation:
    n_scales: tuple[int, ...]
    steps_per_scale: tuple[int, ...]
    sigma_hi: tuple[float, ...]
    full_chain: bool
    metric: tuple[str, ...]
    shared_ddpm: bool
    speed_batches: tuple[int, ...]


@dataclass(frozen=True)
class Select:
    """``select``: the candidates of the ``selected`` variant (inference only; an empty tuple keeps the default's)."""

    sigma_hi: tuple[float, ...]
    n_scales: tuple[int, ...]
    metric: tuple[str, ...]


@dataclass(frozen=True)
class MethodASettings:
    image_size: int  # the config's top-level image_size (both diffusion methods' input size)
    model: str  # own (a score model per class) or shared_ddpm (Method B's DDPM read as a score model)
    sde: SDE
    network: Network
    train: Train
    inference: Inference
    ablation: Ablation
    select: Select

    def __post_init__(self) -> None:
        if self.model == "own":  # (Method B's settings check the shared DDPM's network)
            check_image_size(
                self.image_size, NCSNPP_PRESETS, self.network.preset, "methods.method_a.network.preset"
            )

    @classmethod
    def from_config(cls, config: dict, class_name: str | None = None) -> MethodASettings:
        block = {**config["methods"]["method_a"], "image_size": config["image_size"]}
        return build(cls, block, class_name=class_name, where="methods.method_a")

    def to_config(self) -> dict:
        block = to_block(self)
        return {"image_size": block.pop("image_size"), "methods": {"method_a": block}}


def score_train_settings(
    settings: MethodASettings, dataset: str, class_name: str, seed: int, holdout: Holdout | None = None
) -> ScoreTrainSettings:
    """The trainer's settings, and so the identity, of the class's own score model (``model: own``); ``holdout``:
    the run key's held-out share (:attr:`texad.methods.base.RunKey.holdout`; None: trained on all of train/good)."""
    s = settings
    return ScoreTrainSettings(
        dataset=dataset,
        class_name=class_name,
        seed=int(seed),
        holdout=holdout,
        sde=s.sde.type,
        sigma_min=s.sde.sigma_min,
        sigma_max=s.sde.sigma_max,
        preset=s.network.preset,
        nf=s.network.nf,
        image_size=s.image_size,
        batch_size=s.train.batch_size,
        iterations=s.train.iterations,
        lr=s.train.lr,
        warmup=s.train.warmup,
        grad_clip=s.train.grad_clip,
        ema=s.train.ema,
        hflip=s.train.hflip,
    )
