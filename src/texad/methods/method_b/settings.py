"""Method B's settings: the config's ``methods.method_b`` block (and the top-level ``image_size``), key for key.

Defaults live in the schema only (spec ``method_b_conditioned_blur_ddpm.md`` §3.4: DDAD's and SAG's values, CHOSEN
where no source gives one). Per-class keys (``train.epochs``, ``inference.w``, ``feature_adaptation.epochs``) hold
the value of the run's class. The trainers' settings, and so the identities of the DDPM and of the adapted feature
extractor, are built from these by :func:`ddpm_train_settings` and :func:`adaptation_settings`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from texad.config.identity import settings_hash
from texad.config.settings import PER_CLASS, build, config_key, to_block
from texad.data.holdout import Holdout
from texad.diffusion.presets import UNET_PRESETS, check_image_size
from texad.diffusion.settings import DiffusionTrainSettings

__all__ = [
    "MAP_LAYERS",
    "Diffusion",
    "Train",
    "Inference",
    "FeatureAdaptation",
    "Ablation",
    "MethodBSettings",
    "AdaptationSettings",
    "ADAPTATION_FORMAT",
    "ddpm_train_settings",
    "adaptation_settings",
    "needs_fit",
]

#: The extractor layers of the feature distance D_f (DDAD's).
MAP_LAYERS = ("layer2", "layer3")
#: Version of the feature adaptation's recipe and file layout; part of its identity.
ADAPTATION_FORMAT = "texad-fe-adapt/1"


@dataclass(frozen=True)
class Diffusion:
    preset: str
    timesteps: int
    beta_start: float
    beta_end: float


@dataclass(frozen=True)
class Train:
    epochs: int = field(metadata=PER_CLASS)
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    ema: float
    grad_clip: float
    t_max: int | None
    checkpoint_every: int


@dataclass(frozen=True)
class Inference:
    """The reconstruction loop (:mod:`.infer`) and the anomaly maps (:mod:`.anomaly_map`) of one run."""

    t_start: int
    skip: int
    eta: float
    w: float = field(metadata=PER_CLASS)
    s: float
    blur_sigma: float
    blur_kernel: int
    v: float
    map_terms: str  # "both" (the fusion), "pixel" (D_p alone) or "feature" (D_f alone, the fusion at v = 0)
    smoothing_sigma: float
    fusion_norm: str  # "train" (the training images' scale); "test_set", "batch16": official variant only
    protocol: str  # "texad", or "ddad" (DDAD's 224 crop and mask rule: the labelled official variant)
    normalise: str
    normalise_images: int | None
    clip_x0: bool
    first_call_at_ts: bool
    draws: int
    feature_backbone: str
    feature_size: int | None
    batch_size: int


@dataclass(frozen=True)
class FeatureAdaptation:
    epochs: int = field(metadata=PER_CLASS)
    w: float
    lam: float = field(metadata=config_key("lambda"))
    lr: float
    batch_size: int
    t_start: int  # the adaptation's own loop (DDAD's *_DA keys), apart from the inference being ablated
    skip: int


@dataclass(frozen=True)
class Ablation:
    w: tuple[float, ...]
    s: tuple[float, ...]
    joint_w: tuple[float, ...]
    joint_s: tuple[float, ...]
    blur_sigma: tuple[float, ...]
    t_start: tuple[int, ...]
    map_terms: tuple[str, ...]


@dataclass(frozen=True)
class Select:
    """``select``: the candidates of the ``selected`` variant (inference only; an empty tuple keeps the default's)."""

    w: tuple[float, ...]
    s: tuple[float, ...]
    t_start: tuple[int, ...]


@dataclass(frozen=True)
class MethodBSettings:
    image_size: int  # the config's top-level image_size (both diffusion methods' input size)
    diffusion: Diffusion
    train: Train
    inference: Inference
    feature_adaptation: FeatureAdaptation
    ablation: Ablation
    select: Select

    def __post_init__(self) -> None:
        check_image_size(
            self.image_size, UNET_PRESETS, self.diffusion.preset, "methods.method_b.diffusion.preset"
        )
        fa, side = self.feature_adaptation, self.inference.feature_size or self.image_size
        cells = math.ceil(side / 16) ** 2 * (fa.batch_size // 2)  # values per channel at the adapted layer3
        if fa.epochs > 0 and cells < 2:
            raise ValueError(
                f"methods.method_b.feature_adaptation.batch_size: {fa.batch_size} splits into halves of "
                f"{fa.batch_size // 2} image, and at {side} px the extractor's layer3 (stride 16) is "
                f"{math.ceil(side / 16)}x{math.ceil(side / 16)}: BatchNorm in training needs more than one value; "
                "raise the batch size or inference.feature_size"
            )

    @classmethod
    def from_config(cls, config: dict, class_name: str | None = None) -> MethodBSettings:
        block = {**config["methods"]["method_b"], "image_size": config["image_size"]}
        return build(cls, block, class_name=class_name, where="methods.method_b")

    def to_config(self) -> dict:
        block = to_block(self)
        return {"image_size": block.pop("image_size"), "methods": {"method_b": block}}


@dataclass(frozen=True)
class AdaptationSettings:
    """The feature-adaptation trainer's settings (:mod:`.domain_adaptation`): ``epochs`` passes over the training
    images; ``w`` the conditioning weight of its reconstructions (DDAD ``w_DA``); ``lam`` the weight of the two
    stay-close-to-ImageNet terms (DDAD ``DLlambda``); ``t_start``/``skip``/``eta`` the reconstruction loop (the
    run's); ``feature_size`` the side the extractor sees (the maps'; None: the model's image size)."""

    epochs: int
    w: float
    lam: float
    lr: float
    batch_size: int
    t_start: int
    skip: int
    eta: float
    seed: int
    feature_size: int | None

    def identity(self, model_hash: str, backbone: str, weights: str) -> dict:
        """What shapes the adapted weights: these settings, the diffusion model and the starting backbone
        (its name and pretrained weights; the weight files themselves are checksum-verified when loaded)."""
        start = {"name": backbone, "weights": weights}
        fields = asdict(self)
        if fields["feature_size"] is None:  # the identity of files adapted before the setting existed
            del fields["feature_size"]
        return {"format": ADAPTATION_FORMAT, "settings": fields, "model_hash": model_hash, "backbone": start}

    def identity_hash(self, model_hash: str, backbone: str, weights: str) -> str:
        return settings_hash(self.identity(model_hash, backbone, weights))


def ddpm_train_settings(
    settings: MethodBSettings, dataset: str, class_name: str, seed: int, holdout: Holdout | None = None
) -> DiffusionTrainSettings:
    """The trainer's settings, and so the identity, of the class's DDPM (shared by Method A's ``shared_ddpm``);
    ``holdout``: the run key's held-out share (:attr:`texad.methods.base.RunKey.holdout`; None: trained on all of
    train/good)."""
    d, t = settings.diffusion, settings.train
    return DiffusionTrainSettings(
        dataset=dataset,
        class_name=class_name,
        seed=int(seed),
        holdout=holdout,
        preset=d.preset,
        image_size=settings.image_size,
        timesteps=d.timesteps,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        optimizer=t.optimizer,
        ema=t.ema,
        grad_clip=t.grad_clip,
        t_max=t.t_max,
    )


def needs_fit(inf: Inference) -> bool:
    """Whether a run reconstructs training images before the test set: for the fusion scale (``fusion_norm:
    train``) or the ``train_stats`` statistics (the first ``normalise_images`` of them, for both)."""
    return inf.fusion_norm == "train" or inf.normalise == "train_stats"


def adaptation_settings(settings: MethodBSettings, seed: int) -> AdaptationSettings | None:
    """DDAD's feature adaptation for the run's class: None when its epochs are 0 (the pretrained weights serve)."""
    fa, inf = settings.feature_adaptation, settings.inference
    if fa.epochs == 0:
        return None
    return AdaptationSettings(
        epochs=fa.epochs,
        w=fa.w,
        lam=fa.lam,
        lr=fa.lr,
        batch_size=fa.batch_size,
        t_start=fa.t_start,
        skip=fa.skip,
        eta=inf.eta,
        seed=int(seed),
        feature_size=inf.feature_size,
    )
