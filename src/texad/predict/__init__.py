"""Apply a trained texad model to new images (``texad predict``): scores, maps, overlays and a threshold.

Nothing heavy is imported here, so that ``texad.predict.cli`` (imported by the ``texad`` command for its
parser) stays light; the public names load their module (and torch) on first use.
"""

from __future__ import annotations

from importlib import import_module

__all__ = [
    "ModelRef",
    "list_images",
    "load_images",
    "predict_folder",
    "quantile_threshold",
    "resolve_model",
    "with_overrides",
]

_HOME = {
    "ModelRef": "models",
    "resolve_model": "models",
    "with_overrides": "models",
    "list_images": "run",
    "load_images": "run",
    "predict_folder": "run",
    "quantile_threshold": "run",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
