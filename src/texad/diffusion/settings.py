"""What shapes a trained diffusion model: the trainers' settings and their identity hashes (no torch here, so a
workflow can name model files without loading it).

The methods build these from their config blocks (Method B's DDPM: ``methods.method_b``; Method A's own score
model: ``methods.method_a``) with the run's dataset, class, seed and held-out share (``validation.holdout``: the
training images the model did not see; None when it saw all); every field is given, none has a default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from texad.config.identity import settings_hash
from texad.data.holdout import Holdout, holdout_identity

__all__ = ["FORMAT", "SCORE_FORMAT", "SCORE_KIND", "DiffusionTrainSettings", "ScoreTrainSettings"]

#: Version of the training recipe and file layout; part of the model identity.
FORMAT = "texad.diffusion.train/2"  # 2: EMA decay warm-up
#: Version of the score-model recipe (Method A); part of its identity. Fixed recipe constants live in
#: :mod:`texad.diffusion.training`: Adam betas (0.9, 0.999), eps 1e-8, no weight decay; DSM with t ~ U(eps, 1)
#: (eps 1e-5 VE, 1e-3 VP); Fourier scale 16; VP beta_min 0.1, beta_max 20 (score_sde defaults).
SCORE_FORMAT = "texad.score.train/1"
SCORE_KIND = "score_sde"
_OPTIMIZERS = ("adam", "adamw")
_SDE_TYPES = ("ve", "vp")


@dataclass(frozen=True)
class DiffusionTrainSettings:
    """Everything that shapes a trained DDPM (device, precision and checkpointing do not)."""

    dataset: str
    class_name: str
    preset: str
    image_size: int
    timesteps: int
    beta_start: float
    beta_end: float
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str  # "adam" (DDAD: coupled L2) or "adamw"
    ema: float
    grad_clip: float
    seed: int
    t_max: int | None  # train on t < t_max only (None: every level, DDAD)
    #: the training images held out for validation (None: trained on all of train/good)
    holdout: Holdout | None

    def __post_init__(self) -> None:
        if self.t_max is not None and not 1 <= int(self.t_max) <= int(self.timesteps):
            raise ValueError(
                f"t_max must lie in [1, timesteps={self.timesteps}] or be None, got {self.t_max!r}"
            )
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("image_size", "timesteps", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema!r}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0:
            raise ValueError(
                f"need lr > 0 and weight_decay >= 0, got lr={self.lr!r}, wd={self.weight_decay!r}"
            )

    @classmethod
    def from_record(cls, record: dict) -> DiffusionTrainSettings:
        """From what a model file records (``asdict``; a file written before holdouts existed has none)."""
        return cls(**{**record, "holdout": Holdout.from_identity(record.get("holdout"))})

    def identity(self) -> dict:
        """The settings hashed into :meth:`model_hash`: every field plus the format version (``t_max`` and
        ``holdout`` only when set, so the hashes of full-range models on all of train/good did not change when
        they were added)."""
        fields = asdict(self)
        if fields["t_max"] is None:
            del fields["t_max"]
        del fields["holdout"]
        return {"format": FORMAT, **fields, **holdout_identity(self.holdout)}

    def model_hash(self) -> str:
        return settings_hash(self.identity())


@dataclass(frozen=True)
class ScoreTrainSettings:
    """Everything that shapes a trained score model (Method A; config ``methods.method_a``).

    ``sigma_min`` / ``sigma_max`` (a number or "auto") define a VE SDE; a VP SDE uses score_sde's beta range and
    ignores them (they are then left out of the identity).
    """

    dataset: str
    class_name: str
    sde: str
    sigma_min: float
    sigma_max: float | str
    preset: str
    nf: int
    image_size: int
    batch_size: int
    iterations: int
    lr: float
    warmup: int
    grad_clip: float
    ema: float
    hflip: bool
    seed: int
    #: the training images held out for validation (None: trained on all of train/good)
    holdout: Holdout | None

    def __post_init__(self) -> None:
        if self.sde not in _SDE_TYPES:
            raise ValueError(f"sde must be one of {_SDE_TYPES}, got {self.sde!r}")
        for name in ("image_size", "batch_size", "iterations", "nf"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema!r}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"need lr > 0, got lr={self.lr!r}")
        if not self.sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got {self.sigma_min!r}")
        if self.sigma_max != "auto":
            try:
                value = float(self.sigma_max)
            except (TypeError, ValueError):
                value = float("nan")
            if not value > float(self.sigma_min):
                raise ValueError(f"sigma_max must be 'auto' or a number > sigma_min, got {self.sigma_max!r}")
            object.__setattr__(self, "sigma_max", value)

    @classmethod
    def from_record(cls, record: dict) -> ScoreTrainSettings:
        """From what a model file records (``asdict``; a file written before holdouts existed has none)."""
        return cls(**{**record, "holdout": Holdout.from_identity(record.get("holdout"))})

    def identity(self) -> dict:
        """The settings hashed into :meth:`model_hash`: the fields (VE only: the sigma range; the held-out share
        only when there is one), kind and format."""
        ident = {"format": SCORE_FORMAT, "kind": SCORE_KIND, **asdict(self)}
        if self.sde == "vp":
            del ident["sigma_min"], ident["sigma_max"]
        del ident["holdout"]
        return {**ident, **holdout_identity(self.holdout)}

    def model_hash(self) -> str:
        return settings_hash(self.identity())
