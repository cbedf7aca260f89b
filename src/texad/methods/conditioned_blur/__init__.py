"""Method B: conditioned (DDAD) + blur-guided (SAG, mask = 1) DDPM reconstruction for texture anomaly
detection. See spec ``method_b_conditioned_blur_ddpm.md``."""

from .anomaly_map import MapSettings, anomaly_maps, feature_distance, fuse, pixel_distance
from .infer import ReconstructionSettings, gaussian_blur, reconstruct

__all__ = [
    "ReconstructionSettings",
    "gaussian_blur",
    "reconstruct",
    "MapSettings",
    "pixel_distance",
    "feature_distance",
    "fuse",
    "anomaly_maps",
]
