"""The method registry: each method's config name (``methods.<name>``) -> its module ``texad.methods.<name>``.

- ``method_a``: score-based SDE model with "T scales" inference (Teng et al., 2022);
- ``method_b``: conditioned, blur-guided DDPM reconstruction (Amirian et al., 2024; close to DDAD);
- ``simplenet``: SimpleNet (Liu et al., CVPR 2023);
- ``draem``: DRAEM (Zavrtanik et al., ICCV 2021).

Each module follows :class:`texad.methods.base.MethodModule`: its settings type, the identity of the models it
trains, its trainers, its variants and its detector. Importing a module is light (no torch): planning a workflow
needs only settings, identities and variants.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from texad.methods.base import MethodModule

__all__ = ["METHODS", "get", "model_owner", "make_settings"]

METHODS = ("method_a", "method_b", "simplenet", "draem")


def get(name: str) -> MethodModule:
    """The module of method ``name`` (a config key under ``methods``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; texad has: {', '.join(METHODS)}")
    return import_module(f"texad.methods.{name}")  # type: ignore[return-value]


def model_owner(kind: str) -> str:
    """The method whose settings shape models of ``kind`` (``ddpm`` -> ``method_b``, also when Method A reads it)."""
    for name in METHODS:
        if kind in get(name).MODELS:
            return name
    raise ValueError(f"unknown model kind {kind!r}")


def make_settings(
    name: str, block: Mapping | None = None, *, class_name: str | None = None, **top: Any
) -> Any:
    """Method ``name``'s settings from its config block ``block`` and top-level keys ``top`` (e.g. ``image_size``),
    every other key at its schema default (scripts, benchmarks, tests)."""
    from texad.config import validate_config

    config = validate_config({**top, "methods": {name: dict(block or {})}}, partial=True)
    return get(name).Settings.from_config(config, class_name)
