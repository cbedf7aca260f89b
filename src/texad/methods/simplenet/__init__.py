"""SimpleNet (Liu et al., CVPR 2023) re-implemented from the official code's behaviour; see spec
``baselines_simplenet_draem.md`` §1. Fair by default: whole image (no centre crop), last-epoch model."""

from .infer import anomaly_maps, image_scores, predict
from .loss import separation, truncated_l1_loss
from .model import (
    Discriminator,
    FeatureAggregator,
    SimpleNet,
    aggregate_features,
    build_adaptor,
    local_patches,
)
from .run import RunSpec, evaluate_model, run_model_hash, run_simplenet, train_model
from .settings import SimpleNetSettings, model_hash, model_identity, shaping_settings
from .train import TrainingStopped, load_simplenet, train_simplenet

__all__ = [
    "Discriminator",
    "FeatureAggregator",
    "RunSpec",
    "SimpleNet",
    "SimpleNetSettings",
    "TrainingStopped",
    "aggregate_features",
    "anomaly_maps",
    "build_adaptor",
    "evaluate_model",
    "image_scores",
    "load_simplenet",
    "local_patches",
    "model_hash",
    "model_identity",
    "shaping_settings",
    "predict",
    "run_model_hash",
    "run_simplenet",
    "separation",
    "train_model",
    "train_simplenet",
    "truncated_l1_loss",
]
