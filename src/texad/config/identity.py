"""Identity hashes: a trained model or a result is named by the settings that shape it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; floats that are whole numbers stay distinct from ints."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def settings_hash(settings: Any, length: int = 12) -> str:
    """A short, stable hex digest of ``settings`` (any JSON-serialisable value)."""
    return hashlib.sha256(canonical_json(settings).encode("ascii")).hexdigest()[:length]


def coerce_numbers(settings: Any) -> None:
    """Give a frozen dataclass's ``int``/``float`` fields their annotated type in place, so that a value read
    from YAML as ``3`` and one parsed from the command line as ``3.0`` hash to the same identity."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, bool):
            continue
        if field.type in ("float", float) and isinstance(value, int):
            object.__setattr__(settings, field.name, float(value))
        elif field.type in ("int", int) and isinstance(value, float) and value.is_integer():
            object.__setattr__(settings, field.name, int(value))
