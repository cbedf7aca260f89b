"""DRAEM's settings: exactly the keys of ``methods.draem`` in ``workflow/schemas/config.schema.yaml``.

Defaults are the official code's (spec §2.4). The model identity hashes every setting that shapes the
trained networks plus dataset, class, seed and the recipe version; ``score_pool`` only changes how a
trained model is scored, so it stays out of the identity and a new pool size reuses the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from texad.config.identity import settings_hash

from .anomaly_generator import AnomalyRecipe, recipe_for

__all__ = ["FORMAT", "DraemSettings"]

#: Version of the training recipe and model-file layout; part of the model identity.
FORMAT = "texad.draem/1"
_NOT_IN_IDENTITY = ("score_pool",)


@dataclass(frozen=True)
class DraemSettings:
    recipe: str = "code"  # "code" (official repository) or "paper"
    epochs: int = 700
    batch_size: int = 8
    lr: float = 1e-4
    image_size: int = 256
    recon_base_width: int = 128
    disc_base_width: int = 64
    anomaly_source: str = "dtd"  # "dtd" (official) or "synthetic" (offline demo)
    p_anomaly: float = 0.5
    score_pool: int = 21

    def __post_init__(self) -> None:
        if self.recipe not in ("code", "paper"):
            raise ValueError(f"recipe must be 'code' or 'paper', got {self.recipe!r}")
        if self.anomaly_source not in ("dtd", "synthetic"):
            raise ValueError(f"anomaly_source must be 'dtd' or 'synthetic', got {self.anomaly_source!r}")
        for name in ("epochs", "batch_size", "recon_base_width", "disc_base_width", "score_pool"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(
                f"image_size must be a multiple of 32 (the discriminative network pools 5 times), got {self.image_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.p_anomaly <= 1.0:
            raise ValueError(f"p_anomaly must lie in [0, 1], got {self.p_anomaly!r}")

    @classmethod
    def from_config(cls, block: Mapping) -> DraemSettings:
        """From the validated ``methods.draem`` block (``enabled`` is ignored; unknown keys are refused)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - names - {"enabled"})
        if unknown:
            raise ValueError(f"methods.draem: unknown keys {unknown}")
        return cls(**{k: v for k, v in block.items() if k in names})

    def anomaly_recipe(self) -> AnomalyRecipe:
        return recipe_for(self.recipe, self.p_anomaly)

    def lr_schedule(self) -> tuple[list[int], float]:
        """MultiStepLR milestones (epochs) and factor.

        ``code``: [0.8 E, 0.9 E], x0.2 (official; with E = 700: 560, 630). ``paper``: x0.1 after 400 and
        600 of 700 epochs, scaled to E as [4/7 E, 6/7 E]. Rounded to whole epochs: the official float
        milestones only fire when 0.8 E is whole, which rounding keeps for E = 700.
        """
        e = self.epochs
        if self.recipe == "code":
            return [round(0.8 * e), round(0.9 * e)], 0.2
        return [round(e * 4 / 7), round(e * 6 / 7)], 0.1

    def shaping_settings(self) -> dict:
        """The settings that shape the trained networks (all but ``score_pool``): what a train job is given."""
        return {k: v for k, v in asdict(self).items() if k not in _NOT_IN_IDENTITY}

    def identity(self, dataset: str, class_name: str, seed: int) -> dict:
        shaping = self.shaping_settings()
        return {"format": FORMAT, "dataset": dataset, "class": class_name, "seed": int(seed), **shaping}

    def model_hash(self, dataset: str, class_name: str, seed: int) -> str:
        return settings_hash(self.identity(dataset, class_name, seed))
