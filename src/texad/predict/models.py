"""What ``texad predict --model`` points at: a benchmark result JSON or a trained model file, resolved to the
method, its settings, the run's key and the model files a detector loads.

A result names its models only by hash, so their files are looked up in the workflow's layout
(``<root>/runs/<dataset>/<class>/<method>/<variant>/seed<k>.json`` ->
``<root>/models/<dataset>/<class>/seed<k>/<kind>-<model_hash>.pt``); the settings are the ones the result records
(``extra.config``: a candidate's run of the ``selected`` variant carries its own candidate, e.g. SimpleNet's meta
epoch). A model file carries its method's config block (the settings it was trained with); its inference keys are
used as they are, its ``select`` candidates left out (it runs as the default run). Either way, overrides may change inference keys only: the detector refuses
settings that name another model than the file holds.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from texad.data.holdout import Holdout
from texad.methods import METHODS, get
from texad.methods.base import RunKey

__all__ = ["ModelRef", "resolve_model", "with_overrides"]


@dataclass(frozen=True)
class ModelRef:
    """The method, the settings to run it with (a validated partial config), the run's key, the model files by
    role, and for a result JSON the result itself."""

    method: str
    config: dict
    run: RunKey
    models: dict[str, Path]
    model_hash: str
    result: dict | None = None
    result_path: Path | None = None

    @property
    def model_path(self) -> Path:
        return self.models["model"]

    @property
    def settings_source(self) -> str:
        return "result" if self.result is not None else "model file"


def _validated(config: dict, source: Path) -> dict:
    from texad.config import validate_config

    return validate_config(config, source=source, partial=True)


def _from_result(path: Path) -> ModelRef:
    from texad.results.record import read_result

    result = read_result(path)
    method = result["method"]
    if method not in METHODS:
        raise ValueError(f"result {path} is of method {method!r}; texad predict knows {', '.join(METHODS)}")
    if "config" not in result["extra"]:
        raise ValueError(
            f"result {path} records no settings (extra.config): it predates this texad; rerun it"
        )
    seed_dir = f"seed{result['seed']}"
    parts = path.resolve().parts
    expected = (result["dataset"], result["class"], method, result["variant"], f"{seed_dir}.json")
    if len(parts) < 7 or parts[-6] != "runs" or tuple(parts[-5:]) != expected:
        raise ValueError(
            f"result {path} records its model only by hash ({result['model_hash']}), not by path, so it must "
            f"stay in its results tree: <results>/runs/{'/'.join(expected)} beside "
            f"<results>/models/{result['dataset']}/{result['class']}/{seed_dir}/"
        )
    folder = Path(*parts[:-6]) / "models" / result["dataset"] / result["class"] / seed_dir
    config = _validated(result["extra"]["config"], path)
    holdout = Holdout.from_identity(result["extra"].get("holdout"))  # the training images its models lacked
    run = RunKey(result["dataset"], result["class"], result["seed"], "default", holdout)
    kind = get(method).models(get(method).Settings.from_config(config, run.class_name))["model"]
    models = {"model": folder / f"{kind}-{result['model_hash']}.pt"}
    adapted = (result.get("backbone") or {}).get("adapted")
    if adapted is not None:
        models["features"] = folder / adapted["file"]
    for role, file in models.items():
        if not file.is_file():
            raise FileNotFoundError(
                f"result {path} was made with the {role} file {file.name}, expected at {file}"
            )
    return ModelRef(method, config, run, models, result["model_hash"], result, path)


def _from_model_file(path: Path) -> ModelRef:
    import torch

    from texad.diffusion.settings import FORMAT as DDPM_FORMAT
    from texad.diffusion.settings import SCORE_KIND
    from texad.methods.draem.settings import FORMAT as DRAEM_FORMAT
    from texad.methods.simplenet.settings import FORMAT as SIMPLENET_FORMAT

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model file {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a texad model file")
    fmt = data.get("format")
    if data.get("kind") == SCORE_KIND:
        method, key = "method_a", data["settings"]
    elif fmt == DDPM_FORMAT:
        method, key = "method_b", data["settings"]
    elif fmt == SIMPLENET_FORMAT:
        method, key = "simplenet", data["identity"]
    elif fmt == DRAEM_FORMAT:
        method, key = "draem", data
    else:
        raise ValueError(
            f"{path} is not a trained texad model (format {fmt!r}); pass a ddpm-, score-, simplenet- or draem-*.pt "
            "file or a result JSON"
        )
    if data.get("config") is None:
        raise ValueError(f"{path} keeps no settings block (a model file of an earlier texad): retrain it")
    config = _validated(data["config"], path)
    block = config["methods"][method]
    if "select" in block:  # the file keeps every candidate it was trained beside; it runs as the default run,
        block["select"] = {k: [] for k in block["select"]}  # with none (SimpleNet: its last weights)
    holdout = Holdout.from_identity(key.get("holdout"))  # the training images the model lacked
    run = RunKey(key["dataset"], key["class_name"], int(key["seed"]), "default", holdout)
    models = {"model": path}
    module = get(method)
    settings = module.Settings.from_config(config, run.class_name)
    if "features" in module.models(settings):  # Method B with feature adaptation: the file beside the DDPM
        features = path.parent / module.model_file("features", settings, run)
        if not features.is_file():
            raise FileNotFoundError(
                f"{path} was trained with feature adaptation; its extractor {features} is missing"
            )
        models["features"] = features
    return ModelRef(method, config, run, models, data["model_hash"])


def resolve_model(path: str | Path) -> ModelRef:
    """A result JSON (by suffix ``.json``) or a model file, checked to exist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist (pass a result JSON or a *.pt model file)")
    return _from_result(path) if path.suffix.lower() == ".json" else _from_model_file(path)


def _merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _leaves(override: Mapping, path: tuple = ()):
    """(key path, the override holding only that key) of every value in ``override``."""
    for key, value in override.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, (*path, key))
        else:
            single: Any = value
            for part in reversed((*path, key)):
                single = {part: single}
            yield (*path, key), single


def with_overrides(ref: ModelRef, overrides: Mapping[str, Any] | None) -> dict:
    """The config to run with: the model's settings with ``overrides`` (a part of ``methods.<method>``, e.g.
    ``{"inference": {"smoothing_sigma": 2}}``) merged in and validated. A key the schema does not know, or one
    that shapes a model the method loads (it would name another model than the file holds), is named."""
    from texad.config import validate_config

    if not overrides:
        return ref.config
    module, cls = get(ref.method), ref.run.class_name

    def merged(override: Mapping) -> dict:
        block = _merge(ref.config["methods"][ref.method], override)
        return validate_config(
            {**ref.config, "methods": {ref.method: block}}, source="--settings", partial=True
        )

    def identities(config: dict) -> list:
        settings = module.Settings.from_config(config, cls)
        own = [kind for kind in module.models(settings).values() if kind in module.MODELS]
        return [module.identity(kind, settings, ref.run) for kind in own]

    config, before = merged(overrides), identities(ref.config)
    shaping = [".".join(path) for path, single in _leaves(overrides) if identities(merged(single)) != before]
    if shaping:
        raise ValueError(
            f"--settings: {', '.join(f'methods.{ref.method}.{k}' for k in shaping)} shapes the trained model, "
            "which predict cannot change; it changes inference settings only (train a model for other ones)"
        )
    return config
