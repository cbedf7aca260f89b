"""Config loading, schema validation (the only source of defaults), number normalisation and identity hashes
(imports nothing else of texad)."""

from texad.config.identity import canonical_json, settings_hash
from texad.config.schema import (
    ConfigError,
    load_config,
    load_schema,
    load_settings,
    normalise_numbers,
    validate,
    validate_config,
)

__all__ = [
    "ConfigError",
    "canonical_json",
    "load_config",
    "load_schema",
    "load_settings",
    "normalise_numbers",
    "settings_hash",
    "validate",
    "validate_config",
]
