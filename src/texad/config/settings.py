"""Settings objects built from a validated config block: the one path from a config value to the code.

A settings type is a frozen dataclass whose fields mirror the keys of its config block and carry no defaults:
the JSON schema is the only source of defaults, so :func:`build` refuses a block that the schema has not
filled in. Field metadata says where a key differs from its field:

- ``key``: the config key's spelling when it is not a Python name (``lambda``);
- ``per_class``: the block holds ``{default: x, <class>: y}`` and the field holds the value of the run's class.

:func:`to_block` turns a settings object back into a valid config block (a per-class field as ``{default: x}``),
which is what result files and model files record.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

__all__ = ["PER_CLASS", "config_key", "per_class", "build", "to_block"]

#: Field metadata of a per-class value (``{default: x, carpet: y}`` in the config).
PER_CLASS = {"per_class": True}


def config_key(name: str) -> dict:
    """Field metadata of a field whose config key is ``name``."""
    return {"key": name}


def per_class(value: Any, class_name: str | None, where: str = "value") -> Any:
    """The value of ``class_name`` in a per-class mapping (``default`` for classes it does not list)."""
    if not isinstance(value, Mapping):
        return value
    if class_name is not None and class_name in value:
        return value[class_name]
    if "default" not in value:
        raise ValueError(f"{where}: {dict(value)!r} has no entry for class {class_name!r} and no 'default'")
    return value["default"]


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple or annotation is tuple


def _nested(annotation: Any) -> type | None:
    """The settings dataclass of a field typed as one (or as ``X | None``), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def build(cls: type, block: Mapping, *, class_name: str | None, where: str) -> Any:
    """An instance of the settings dataclass ``cls`` from ``block`` (validated, defaults filled in).

    ``class_name`` resolves the per-class fields; ``where`` (e.g. ``methods.method_b``) names the block in errors.
    ``enabled`` (whether the workflow runs a method) is not a setting and is skipped.
    """
    if not isinstance(block, Mapping):
        raise ValueError(f"{where}: expected a mapping of settings, got {block!r}")
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    known = {f.metadata.get("key", f.name) for f in fields}
    unknown = sorted(set(block) - known - {"enabled"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    values = {}
    for f in fields:
        key = f.metadata.get("key", f.name)
        if key not in block:
            raise ValueError(
                f"{where}.{key} is missing: settings are built from a config block that the schema has validated "
                "and filled in (texad.config.validate_config)"
            )
        value = block[key]
        if f.metadata.get("per_class"):
            value = per_class(value, class_name, f"{where}.{key}")
        nested = _nested(hints[f.name])
        if nested is not None and value is not None:
            value = build(nested, value, class_name=class_name, where=f"{where}.{key}")
        elif _is_tuple(hints[f.name]) and isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def to_block(settings: Any) -> dict:
    """The config block of a settings object (inverse of :func:`build` for one class)."""
    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            value = to_block(value)
        elif isinstance(value, tuple):
            value = list(value)
        if f.metadata.get("per_class"):
            value = {"default": value}
        out[f.metadata.get("key", f.name)] = value
    return out
