"""The two jobs a workflow runs for a method, as ``texad train`` and ``texad run`` call them: train one model, and
run one variant on one class. Both take a config (or the part of one a job reads, validated: ``texad.config``) and
the run's key; everything else comes from the settings built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from texad.methods import get, model_owner
from texad.methods.base import RunKey, Runtime, run_variants, variant_settings

__all__ = ["method_settings", "train_model", "run_method"]


def method_settings(config: dict, method: str, class_name: str) -> Any:
    """Method ``method``'s settings for ``class_name`` from a validated (partial) config."""
    if method not in config.get("methods", {}):
        raise ValueError(
            f"the settings hold no methods.{method} block; pass the config (or its methods.{method} part), "
            f'e.g. --settings \'{{"methods": {{"{method}": {{}}}}}}\' for the schema defaults'
        )
    return get(method).Settings.from_config(config, class_name)


def train_model(
    kind: str,
    config: dict,
    run: RunKey,
    *,
    class_dir: Path,
    out: Path,
    ckpt_dir: Path,
    expect_hash: str | None = None,
    **inputs: Any,
) -> dict:
    """Train the model of ``kind`` (``ddpm``, ``score``, ``simplenet``, ``draem``, ``features``) for ``run``;
    ``expect_hash``: the identity the workflow planned (a config that changed since is refused). ``inputs``: the
    trainer's extra inputs (``workers``, ``model``, ``anomaly_root``, ``source_classes``)."""
    owner = get(model_owner(kind))
    settings = method_settings(config, owner.NAME, run.class_name)
    identity = owner.identity(kind, settings, run)
    if identity is None:
        raise ValueError(f"the settings train no {kind} model for class {run.class_name} (e.g. 0 epochs)")
    if expect_hash and identity != expect_hash:
        raise ValueError(
            f"the settings hash to {identity}, but the requested model file is for {expect_hash}: "
            "the config changed while the workflow was planned; run snakemake again"
        )
    return owner.train(kind, settings, run, Runtime.from_config(config), class_dir=Path(class_dir), out=Path(out),
                       ckpt_dir=Path(ckpt_dir), **inputs)  # fmt: skip


def run_method(
    method: str, config: dict, run: RunKey, *, class_dir: Path, models: dict[str, Path], out_result: Path,
    out_maps: Path,
) -> dict:  # fmt: skip
    """Run ``method``'s variant ``run.variant`` on one class with its trained ``models`` (by role) and write the
    result JSON and the maps file (:func:`texad.methods.run.run_class`); returns the result."""
    from texad.methods.run import run_class

    module = get(method)
    settings = method_settings(config, method, run.class_name)
    settings = variant_settings(run_variants(module, settings), run.variant, method)
    runtime = Runtime.from_config(config)
    detector = module.Detector(settings, runtime, run, models)
    return run_class(
        detector, Path(class_dir), run, runtime, out_result=Path(out_result), out_maps=Path(out_maps)
    )
