"""Config loading, schema validation and identity hashes (imports nothing else of texad)."""

from texad.config.identity import canonical_json, settings_hash
from texad.config.schema import ConfigError, load_config, load_schema, validate, validate_config

__all__ = [
    "ConfigError",
    "canonical_json",
    "load_config",
    "load_schema",
    "settings_hash",
    "validate",
    "validate_config",
]
