"""Checks the method test files share: settings types against the schema, variants against their grids."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import replace

from texad.config import load_schema, validate_config
from texad.methods import get
from texad.methods.base import Runtime


def assert_fields_are_the_schema_keys(cls: type, props: dict, where: str) -> None:
    """The fields of the settings dataclass ``cls`` are exactly the keys of its schema block, recursively, and
    none has a default (the schema is the only source of defaults)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    assert all(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields
    ), where
    keys = {f.metadata.get("key", f.name): f for f in fields}
    assert set(keys) == set(props), where
    for key, f in keys.items():
        if dataclasses.is_dataclass(hints[f.name]):
            assert props[key].get("type") == "object", f"{where}.{key}"
            assert_fields_are_the_schema_keys(hints[f.name], props[key]["properties"], f"{where}.{key}")
        else:
            assert "properties" not in props[key], f"{where}.{key} is a block, its field a value"


def assert_settings_mirror_the_schema(method: str) -> None:
    """Method ``method``'s settings type takes exactly its block's keys (``enabled``, whether the workflow runs
    it, is not a setting; the diffusion methods also read the top-level ``image_size``)."""
    schema = load_schema("config")
    props = {k: v for k, v in schema["properties"]["methods"]["properties"][method]["properties"].items()
             if k != "enabled"}  # fmt: skip
    if method in ("method_a", "method_b"):
        props["image_size"] = schema["properties"]["image_size"]
    assert_fields_are_the_schema_keys(get(method).Settings, props, f"methods.{method}")


def assert_each_grid_regenerates_its_variant(method: str, settings, timed: tuple[str, ...] = ()) -> None:
    """A variant's ``grid`` alone, as the settings' ablation, generates that variant (and only it besides
    ``default``), with the same settings: what a job that carries only its own point runs. ``timed``: the
    variants whose grid keeps the speed probe's batch sizes."""
    variants = get(method).variants
    for v in variants(settings):
        again = {u.name: u for u in variants(replace(settings, ablation=v.grid))}
        assert set(again) == {"default", v.name}, v.name
        u = again[v.name]
        assert u.grid == v.grid, v.name
        assert replace(u.settings, ablation=v.settings.ablation) == v.settings, v.name
        if hasattr(v.grid, "speed_batches"):
            expected = v.settings.ablation.speed_batches if v.name in timed else ()
            assert u.settings.ablation.speed_batches == expected, v.name


def cpu_runtime(resolution: int | str) -> Runtime:
    """The runtime of a validated partial config: CPU, fp32, the given evaluation grid."""
    config = validate_config({"run_name": "t", "device": "cpu", "evaluation": {"resolution": resolution}},
                             partial=True)  # fmt: skip
    return Runtime.from_config(config)
