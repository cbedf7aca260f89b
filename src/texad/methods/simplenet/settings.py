"""SimpleNet settings (the config's ``methods.simplenet`` block) and the identity of a trained model.

Defaults are the official MVTec run script's values (spec ``baselines_simplenet_draem.md`` §1.2), with
texad's two fixes switched on by default: no centre crop (``center_crop: false``) and no test-set model
selection (``selection: last``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from texad.config.identity import coerce_numbers, settings_hash

__all__ = ["FORMAT", "SELECTIONS", "SimpleNetSettings", "shaping_settings", "model_identity", "model_hash"]

#: Version of the training recipe and model-file layout; part of every model identity.
FORMAT = "texad.simplenet/1"
SELECTIONS = ("last", "official")


@dataclass(frozen=True)
class SimpleNetSettings:
    """Exactly the keys of ``methods.simplenet`` in ``workflow/schemas/config.schema.yaml`` (less ``enabled``)."""

    backbone: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    pretrain_embed_dim: int = 1536
    target_embed_dim: int = 1536
    patchsize: int = 3
    meta_epochs: int = 40
    gan_epochs: int = 4
    noise_std: float = 0.015
    dsc_layers: int = 2
    dsc_hidden: int = 1024
    dsc_margin: float = 0.5
    adaptor_lr: float = 1e-4
    dsc_lr: float = 2e-4
    batch_size: int = 8
    resize: int = 329
    image_size: int = 288
    center_crop: bool = False
    selection: str = "last"
    smoothing_sigma: float = 4.0

    def __post_init__(self) -> None:
        coerce_numbers(self)
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("layers must name at least one backbone layer")
        for name in ("pretrain_embed_dim", "target_embed_dim", "patchsize", "meta_epochs", "gan_epochs",
                     "dsc_layers", "dsc_hidden", "batch_size", "resize", "image_size"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"simplenet.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.noise_std > 0 or not self.adaptor_lr > 0 or not self.dsc_lr > 0:
            raise ValueError("simplenet noise_std, adaptor_lr and dsc_lr must be > 0")
        if self.dsc_margin < 0 or self.smoothing_sigma < 0:
            raise ValueError("simplenet dsc_margin and smoothing_sigma must be >= 0")
        if self.selection not in SELECTIONS:
            raise ValueError(f"simplenet.selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.center_crop and self.resize < self.image_size:
            raise ValueError(
                f"simplenet.center_crop needs resize >= image_size, got {self.resize} < {self.image_size}"
            )

    @classmethod
    def from_config(cls, block: dict) -> SimpleNetSettings:
        """From the config's ``methods.simplenet`` mapping (``enabled`` is ignored, unknown keys refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known - {"enabled"})
        if unknown:
            raise ValueError(f"unknown methods.simplenet keys: {unknown}")
        return cls(**{k: v for k, v in block.items() if k in known})

    def as_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @property
    def input_size(self) -> int:
        """Side of the square image the network sees (after the optional centre crop)."""
        return self.image_size

    @property
    def load_size(self) -> int:
        """Side the image is resized to before the optional centre crop."""
        return self.resize if self.center_crop else self.image_size


def shaping_settings(settings: SimpleNetSettings) -> dict:
    """The settings that shape a trained SimpleNet model. ``smoothing_sigma`` only shapes the maps, so it is left
    out unless ``selection == "official"``, where it can break a tie between epochs (pixel AUROC); ``resize``
    is only read when ``center_crop`` is on and is left out otherwise."""
    s = settings.as_dict()
    if settings.selection == "last":
        s.pop("smoothing_sigma")
    if not settings.center_crop:
        s.pop("resize")
    return s


def model_identity(
    settings: SimpleNetSettings, *, dataset: str, class_name: str, seed: int, backbone_weights: str
) -> dict:
    """What shapes a trained SimpleNet model: :func:`shaping_settings` and the run key."""
    s = shaping_settings(settings)
    return {
        "format": FORMAT,
        "dataset": dataset,
        "class_name": class_name,
        "seed": int(seed),
        "backbone_weights": backbone_weights,
        "settings": s,
    }


def model_hash(
    settings: SimpleNetSettings, *, dataset: str, class_name: str, seed: int, backbone_weights: str
) -> str:
    """The short hash naming a model file (``texad.config.identity.settings_hash`` of :func:`model_identity`)."""
    return settings_hash(
        model_identity(
            settings, dataset=dataset, class_name=class_name, seed=seed, backbone_weights=backbone_weights
        )
    )
