"""SimpleNet settings (the config's ``methods.simplenet`` block) and the identity of a trained model.

Defaults live in the schema only: the official MVTec run script's values (spec ``baselines_simplenet_draem.md``
§1.2), with texad's two fixes switched on: no centre crop (``center_crop: false``) and no test-set model
selection (``selection: last``). ``select`` lists the candidate meta epochs of the ``selected`` variant: the one
training run keeps their weights beside the last ones, so the kept epochs are part of the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from texad.backbones.weights import BACKBONES
from texad.config.identity import settings_hash
from texad.config.settings import build, to_block
from texad.data.holdout import Holdout, holdout_identity

__all__ = ["FORMAT", "Select", "SimpleNetSettings", "shaping_settings", "model_identity", "model_hash"]

#: Version of the training recipe and model-file layout; part of every model identity.
FORMAT = "texad.simplenet/1"
#: The identity's key of the meta epochs whose weights a model file keeps beside the last (absent when none).
KEPT_KEY = "kept_meta_epochs"


@dataclass(frozen=True)
class Select:
    """``select``: candidate meta epochs of the ``selected`` variant (an empty tuple: none)."""

    meta_epoch: tuple[int, ...]


@dataclass(frozen=True)
class SimpleNetSettings:
    """``methods.simplenet``, key for key."""

    backbone: str
    layers: tuple[str, ...]
    pretrain_embed_dim: int
    target_embed_dim: int
    patchsize: int
    meta_epochs: int
    gan_epochs: int
    noise_std: float
    dsc_layers: int
    dsc_hidden: int
    dsc_margin: float
    adaptor_lr: float
    dsc_lr: float
    batch_size: int  # training batch, and the inference batch (as the official test loader)
    resize: int
    image_size: int
    center_crop: bool
    selection: str
    smoothing_sigma: float
    select: Select

    def __post_init__(self) -> None:
        if self.center_crop and self.resize < self.image_size:
            raise ValueError(
                f"methods.simplenet.resize ({self.resize}) is smaller than image_size ({self.image_size}): the "
                "centre crop (center_crop, or the official variant) cuts image_size out of the resized image; "
                "set resize >= image_size"
            )

    @classmethod
    def from_config(cls, config: dict, class_name: str | None = None) -> SimpleNetSettings:
        return build(cls, config["methods"]["simplenet"], class_name=class_name, where="methods.simplenet")

    def to_config(self) -> dict:
        return {"methods": {"simplenet": to_block(self)}}

    @property
    def load_size(self) -> int:
        """Side the image is resized to before the optional centre crop to ``image_size``."""
        return self.resize if self.center_crop else self.image_size

    @property
    def kept_epochs(self) -> tuple[int, ...]:
        """The meta epochs whose weights training keeps beside the last ones (sorted; the last left out)."""
        return tuple(sorted({e for e in self.select.meta_epoch if e != self.meta_epochs}))

    @property
    def snapshot_epoch(self) -> int | None:
        """The kept meta epoch whose weights a run of these settings scores with: the one epoch its ``select`` names
        where that is not the last (a candidate's run); None: the model's main weights (the default run, whose
        ``select`` is empty, and the ``default`` candidate)."""
        if len(self.select.meta_epoch) != 1 or self.select.meta_epoch[0] == self.meta_epochs:
            return None
        return self.select.meta_epoch[0]

    @property
    def backbone_weights(self) -> str:
        """The pretrained weights of :attr:`backbone` (``texad.backbones.BACKBONES``)."""
        return BACKBONES[self.backbone]


def shaping_settings(settings: SimpleNetSettings) -> dict:
    """The settings that shape a trained SimpleNet model. ``smoothing_sigma`` only shapes the maps, so it is left
    out unless ``selection == "official"``, where it can break a tie between epochs (pixel AUROC); ``resize``
    is only read when ``center_crop`` is on and is left out otherwise. ``select`` is replaced by the meta epochs
    whose weights the model file keeps (:attr:`SimpleNetSettings.kept_epochs`), under :data:`KEPT_KEY` and only
    when there are any: a model that keeps none has the identity it had before ``select`` existed."""
    s = to_block(settings)
    s.pop("select")
    if settings.kept_epochs:
        s[KEPT_KEY] = list(settings.kept_epochs)
    if settings.selection == "last":
        s.pop("smoothing_sigma")
    if not settings.center_crop:
        s.pop("resize")
    return s


def model_identity(
    settings: SimpleNetSettings, *, dataset: str, class_name: str, seed: int, backbone_weights: str,
    holdout: Holdout | None = None,
) -> dict:  # fmt: skip
    """What shapes a trained SimpleNet model: :func:`shaping_settings`, the backbone's weights and the run key
    (with ``holdout``, the share of the training images held out for validation; None: trained on all of them)."""
    return {
        "format": FORMAT,
        "dataset": dataset,
        "class_name": class_name,
        "seed": int(seed),
        **holdout_identity(holdout),
        "backbone_weights": backbone_weights,
        "settings": shaping_settings(settings),
    }


def model_hash(
    settings: SimpleNetSettings, *, dataset: str, class_name: str, seed: int, backbone_weights: str,
    holdout: Holdout | None = None,
) -> str:  # fmt: skip
    """The short hash naming a model file (``texad.config.identity.settings_hash`` of :func:`model_identity`)."""
    return settings_hash(
        model_identity(
            settings,
            dataset=dataset,
            class_name=class_name,
            seed=seed,
            backbone_weights=backbone_weights,
            holdout=holdout,
        )
    )
