"""DRAEM's settings (the config's ``methods.draem`` block) and the identity of a trained model.

Defaults live in the schema only (the official code's values, spec §2.4). The model identity hashes every setting
that shapes the trained networks plus dataset, class, seed and the recipe version; ``score_pool`` only changes how
a trained model is scored, and ``protocol`` how it is evaluated, so both stay out of the identity: a new pool size
or the official variant reuses the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from texad.config.identity import settings_hash
from texad.config.settings import build, to_block
from texad.data.holdout import Holdout, holdout_identity

if TYPE_CHECKING:
    from .anomaly_generator import AnomalyRecipe

__all__ = ["FORMAT", "DraemSettings", "model_identity", "model_hash"]

#: Version of the training recipe and model-file layout; part of the model identity.
FORMAT = "texad.draem/2"  # 2: the model file keeps its config block; identity spells class_name
_INFERENCE_ONLY = ("score_pool", "protocol", "select")


@dataclass(frozen=True)
class Select:
    """``select``: candidate ``score_pool`` sizes of the ``selected`` variant (an empty tuple: none)."""

    score_pool: tuple[int, ...]


@dataclass(frozen=True)
class DraemSettings:
    """``methods.draem``, key for key."""

    recipe: str  # "code" (official repository) or "paper"
    epochs: int
    batch_size: int  # training batch, and the inference batch (scores do not depend on it)
    lr: float
    image_size: int
    recon_base_width: int
    disc_base_width: int
    anomaly_source: str  # "dtd" (official) or "synthetic" (offline demo)
    p_anomaly: float
    score_pool: int
    protocol: str  # "texad", or "draem" (the official test's mask rule: the labelled official variant)
    select: Select

    @classmethod
    def from_config(cls, config: dict, class_name: str | None = None) -> DraemSettings:
        return build(cls, config["methods"]["draem"], class_name=class_name, where="methods.draem")

    def to_config(self) -> dict:
        return {"methods": {"draem": to_block(self)}}

    def anomaly_recipe(self) -> AnomalyRecipe:
        from .anomaly_generator import recipe_for  # torch: not needed to plan or hash

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


def model_identity(
    settings: DraemSettings, dataset: str, class_name: str, seed: int, holdout: Holdout | None = None
) -> dict:
    """What shapes a trained DRAEM model: every setting but ``score_pool``, ``protocol`` and the ``select``
    candidates, the run key and the format."""
    shaping = {k: v for k, v in asdict(settings).items() if k not in _INFERENCE_ONLY}
    key = {"dataset": dataset, "class_name": class_name, "seed": int(seed), **holdout_identity(holdout)}
    return {"format": FORMAT, **key, **shaping}


def model_hash(
    settings: DraemSettings, dataset: str, class_name: str, seed: int, holdout: Holdout | None = None
) -> str:
    """The identity's hash; ``holdout``: the run key's held-out share (None: trained on all of train/good, whose
    identity stays as it was before holdouts existed)."""
    return settings_hash(model_identity(settings, dataset, class_name, seed, holdout))
