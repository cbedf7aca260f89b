"""Method A: score-based defect detection with "T scales" (Teng et al. 2022), re-derived as documented in spec
``method_a_score_tscales.md`` (the score SDE of Song et al. 2021, noise injection + short reverse chains from a few
separated start levels, the score magnitude as the anomaly measure)."""

from .anomaly_map import TrainStats, anomaly_maps, normalise_maps, train_statistics
from .infer import (
    InferenceSettings,
    ScoreModel,
    chain_levels,
    full_chain_levels,
    raw_maps,
    scale_levels,
    score_model_from_ddpm,
    score_model_from_net,
)

__all__ = [
    "InferenceSettings",
    "ScoreModel",
    "score_model_from_net",
    "score_model_from_ddpm",
    "scale_levels",
    "chain_levels",
    "full_chain_levels",
    "raw_maps",
    "TrainStats",
    "train_statistics",
    "normalise_maps",
    "anomaly_maps",
]
