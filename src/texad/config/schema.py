"""Load and validate texad configs against the JSON schemas in workflow/schemas/.

Every error names the key path (``methods.method_b.inference.s``) and what is allowed there, so a wrong
config stops the run before any job starts with a message a user can act on.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from texad.config.checks import cross_key_problems


class ConfigError(ValueError):
    """A config (or result) that does not match its schema; the message lists every problem."""


@cache
def load_schema(name: str) -> dict:
    """Read ``<name>.schema.yaml`` shipped with the package (a link to workflow/schemas/)."""
    text = resources.files("texad").joinpath("schemas", f"{name}.schema.yaml").read_text(encoding="utf-8")
    schema = yaml.safe_load(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def key_path(path) -> str:
    """``['datasets', 'mvtec_ad', 'classes', 2]`` -> ``datasets.mvtec_ad.classes[2]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _resolve(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _describe(schema: dict, root: dict) -> str:
    """A short human description of what a (sub)schema allows."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(_describe(s, root) for s in schema[key])
    kind = schema.get("type", "any value")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    bounds = []
    for word, sym in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if word in schema:
            bounds.append(f"{sym} {schema[word]}")
    if "multipleOf" in schema:
        bounds.append(f"a multiple of {schema['multipleOf']}")
    if kind == "array" and "items" in schema:
        kind = f"a list of ({_describe(schema['items'], root)})"
    return kind + (" " + ", ".join(bounds) if bounds else "")


def _format_error(err: jsonschema.ValidationError, root: dict) -> str:
    where = key_path(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    got = repr(err.instance)
    if err.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        parts = []
        for key in extra:
            sub = f"{where}.{key}" if err.absolute_path else key
            parts.append(f"{sub}: unknown key; allowed keys here: {', '.join(allowed)}")
        return "\n".join(parts)
    if err.validator == "required":
        missing = [k for k in schema.get("required", []) if k not in err.instance]
        return "\n".join(f"{where}: missing required key '{k}'" for k in missing)
    if err.validator in ("enum", "const"):
        return f"{where}: {got} is not allowed; allowed values: {_describe(schema, root)}"
    if err.validator in ("oneOf", "anyOf"):
        return f"{where}: {got} is not allowed; expected {_describe(schema, root)}"
    if err.validator == "type":
        return f"{where}: {got} has the wrong type; expected {_describe(schema, root)}"
    if err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        return f"{where}: {got} is out of range; allowed: {_describe(schema, root)}"
    if err.validator == "uniqueItems":
        return f"{where}: {got} has repeated entries; list each value once"
    if err.validator in ("minItems", "maxItems", "minLength"):
        return f"{where}: {got} is too short; {err.message}"
    if err.validator == "pattern":
        return f"{where}: {got} does not match the pattern {schema.get('pattern')!r}"
    return f"{where}: {err.message}"


def _validate_against(instance: Any, schema: dict, what: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (key_path(e.absolute_path), e.validator))
    if errors:
        lines = []
        for err in errors:
            text = _format_error(err, schema)
            if text and text not in lines:
                lines.append(text)
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(lines))


def validate(instance: Any, schema_name: str, *, what: str = "config") -> None:
    """Raise ConfigError listing every schema violation of ``instance`` (all of them, sorted by key path)."""
    _validate_against(instance, load_schema(schema_name), what)


def fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """Return a copy of ``instance`` with the schema's ``default:`` values filled in, recursively."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if (
        isinstance(instance, dict)
        and schema.get("type") == "object"
        or (isinstance(instance, dict) and "properties" in schema)
    ):
        out = dict(instance)
        for key, sub in schema.get("properties", {}).items():
            sub_r = _resolve(sub, root)
            if key not in out and "default" in sub_r:
                out[key] = copy.deepcopy(sub_r["default"])
            if key in out:
                out[key] = fill_defaults(out[key], sub_r, root)
        return out
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):  # e.g. datasets.folder entries
        return [fill_defaults(item, schema["items"], root) for item in instance]
    return instance


def _branch(instance: Any, options: list, root: dict) -> dict | None:
    """The first ``oneOf``/``anyOf`` option that ``instance`` satisfies (None when none does)."""
    for option in options:
        if jsonschema.Draft202012Validator({**option, "$defs": root.get("$defs", {})}).is_valid(instance):
            return option
    return None


def normalise_numbers(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """A copy of ``instance`` in which every value the schema types as ``number`` is a float and every value it
    types as ``integer`` is an int. YAML reads ``0`` as an int and ``0.0`` as a float; both are valid numbers,
    and after this they are the same value everywhere, model identity hashes included."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            branch = _branch(instance, schema[key], root)
            return instance if branch is None else normalise_numbers(instance, branch, root)
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in instance.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            out[k] = normalise_numbers(v, sub, root) if sub is not None else v
        return out
    if isinstance(instance, list):
        items = schema.get("items")
        return [normalise_numbers(v, items, root) for v in instance] if isinstance(items, dict) else instance
    if isinstance(instance, bool) or not isinstance(instance, int | float):
        return instance
    types = schema.get("type", [])
    types = {types} if isinstance(types, str) else set(types)
    if "integer" in types and isinstance(instance, float) and instance.is_integer():
        return int(instance)
    if "number" in types and "integer" not in types and isinstance(instance, int):
        return float(instance)
    return instance


@cache
def _partial_schema() -> dict:
    """The config schema for a *part* of a config (what one job reads, ``--settings`` of a ``texad`` command):
    no top-level key is required, a method block needs no ``enabled`` (it is there to be used), and ``validation``
    is filled in only where the part gives it: a train or run job that names no held-out share trains and runs on
    the class folder it is given, whole (``texad.data.holdout.Holdout.from_config``)."""
    schema = copy.deepcopy(load_schema("config"))
    schema.pop("required", None)
    schema["properties"]["validation"].pop("default")
    for block in schema["properties"]["methods"]["properties"].values():
        block["required"] = [k for k in block.get("required", []) if k != "enabled"]
    return schema


def validate_config(config: dict, *, source: str | Path | None = None, partial: bool = False) -> dict:
    """Validate a config dict (as loaded from YAML) and return it with defaults filled in and numbers normalised
    (:func:`normalise_numbers`). ``partial``: a part of a config, as one job reads it (no key is required)."""
    if not isinstance(config, dict):
        raise ConfigError(
            f"invalid config{f' {source}' if source else ''}: the top level must be a mapping of keys"
        )
    what = f"config {source}" if source else "config"
    schema = _partial_schema() if partial else load_schema("config")
    _validate_against(config, schema, what)
    full = fill_defaults(config, schema)
    _validate_against(full, schema, what)  # defaults themselves must be valid
    full = normalise_numbers(full, schema)
    problems = cross_key_problems(full)
    if problems:
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(problems))
    return full


def read_yaml(
    path: Path, what: str = "config file", hint: str = "; pass an existing YAML or JSON file"
) -> Any:
    """The parsed YAML of ``path``; a missing, unreadable or malformed file raises ConfigError naming it as ``what``."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist{hint}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc


def read_document(path: Path, what: str, schema_name: str) -> dict:
    """A YAML data file (published numbers, claims) parsed and validated against its schema: ConfigError naming
    the file as ``what`` when it is missing, malformed, not a mapping or invalid."""
    data = read_yaml(path, f"{what} file", hint="")
    if not isinstance(data, dict):
        raise ConfigError(f"invalid {what} {path}: the top level must be a mapping of keys")
    validate(data, schema_name, what=f"{what} {path}")
    return data


def load_config(path: str | Path) -> dict:
    """Read a YAML config file, validate it, and return it with defaults filled in."""
    path = Path(path)
    data = read_yaml(path)
    return validate_config(data if data is not None else {}, source=path)


def load_settings(value: str) -> dict:
    """The ``--settings`` of a ``texad`` command: a config, or the part of one that the command reads, given as
    JSON text (``{...}``) or as a YAML/JSON file. Validated as a partial config (defaults filled, numbers
    normalised), so that a command run by hand gets the same values as the workflow."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"--settings is not valid JSON ({exc}); pass a JSON object or a config file"
            ) from exc
        source = "--settings"
    else:
        data = read_yaml(Path(value))
        source = value
    return validate_config(data if data is not None else {}, source=source, partial=True)
