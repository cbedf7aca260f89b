"""Identity hashes: a trained model or a result is named by the settings that shape it."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace. An int and a float stay distinct here (``1`` vs ``1.0``), which is
    why a config's numbers are normalised by the schema before anything is hashed (``normalise_numbers``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def settings_hash(settings: Any, length: int = 12) -> str:
    """A short, stable hex digest of ``settings`` (any JSON-serialisable value)."""
    return hashlib.sha256(canonical_json(settings).encode("ascii")).hexdigest()[:length]
