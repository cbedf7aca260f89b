"""One result JSON per run (dataset, class, method, variant, seed): build, write atomically, read back.

A result is data first: every table is derived from these files, so each one carries what is needed to
interpret and reproduce it (metrics, evaluation protocol, timings, library versions, device, backbone
weights, identity hashes).  The layout is ``workflow/schemas/result.schema.yaml``; every write and every
read validates against it and a violation raises :class:`~texad.config.schema.ConfigError` naming the
key path (``metrics.image_auroc: 1.2 is out of range ...``).

Writes are atomic: the JSON is streamed into a temporary file in the destination folder, flushed and
fsync'ed, then renamed over the destination with ``os.replace``.  Any failure on the way (a NaN that JSON
refuses, a full disk) removes the temporary file and leaves an earlier file at the destination untouched.

torch is imported lazily (only :func:`collect_versions` and :func:`device_info` need it), so that reading
results and building tables stays light.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from texad.atomic import atomic_write, atomic_write_text
from texad.config.schema import ConfigError, key_path, validate

__all__ = [
    "RESULT_SCHEMA_VERSION",
    "collect_versions",
    "device_info",
    "build_result",
    "write_result",
    "read_result",
    "atomic_write",
    "atomic_write_text",
    "utc_now",
    "method_block",
]

RESULT_SCHEMA_VERSION = 1
_SCHEMA = "result"
_PRECISIONS = ("fp32", "bf16", "fp16")


# ----------------------------------------------------------------------------------------------------
# atomic file writing (shared with the table writers)
# ----------------------------------------------------------------------------------------------------
def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z`` suffix, to the second."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------------
def _resolve_device(device: Any):
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def collect_versions(device: Any = None) -> dict:
    """Versions of texad, Python and the numeric stack.

    ``cuda`` / ``cudnn`` are the versions torch was built with and loads; both are null when ``device``
    is a CPU device, when torch has no CUDA build, or when no ``device`` is given and CUDA is unavailable.
    """
    import torch

    import texad

    try:  # read from the installed metadata: importing torchvision costs a job seconds
        tv_version: str | None = importlib.metadata.version("torchvision")
    except Exception:  # pragma: no cover - a broken torchvision install must not lose a result
        tv_version = None

    on_cuda = torch.cuda.is_available() if device is None else _resolve_device(device).type == "cuda"
    cuda = torch.version.cuda if on_cuda else None
    cudnn = None
    if on_cuda:
        try:
            v = torch.backends.cudnn.version()
            cudnn = str(v) if v is not None else None
        except Exception:  # pragma: no cover - cudnn missing from the build
            cudnn = None
    return {
        "texad": str(texad.__version__),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": tv_version,
        "numpy": str(np.__version__),
        "cuda": str(cuda) if cuda else None,
        "cudnn": cudnn,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_info(device: Any, precision: str = "fp32") -> dict:
    """``{"type": "cpu"|"cuda", "name": ..., "precision": ...}`` of ``device`` (a str or torch.device).

    ``"auto"`` resolves as in the config (CUDA when present, else the CPU).  The CPU always runs fp32
    (the config's ``precision`` applies to CUDA only), so a CPU device records ``fp32`` whatever
    ``precision`` says.
    """
    import torch

    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    dev = _resolve_device(device)
    if dev.type == "cpu":
        return {"type": "cpu", "name": _cpu_name(), "precision": "fp32"}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "precision": precision}
    raise ValueError(f"device type must be cpu or cuda, got {dev.type!r} ({device!r})")


# ----------------------------------------------------------------------------------------------------
# building and checking
# ----------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays and torch scalars -> Python, tuples -> lists, Paths -> str."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if (
        type(value).__module__.split(".")[0] == "torch"
        and hasattr(value, "item")
        and getattr(value, "ndim", 1) == 0
    ):
        return value.item()
    return value


def _non_finite(value: Any, path: tuple = ()) -> list[str]:
    """Key paths of NaN / infinite floats inside ``value``."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [key_path(path)]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, (*path, k))]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _non_finite(v, (*path, i))]
    return []


def _non_finite_error(result: Any, what: str) -> ConfigError | None:
    bad = _non_finite(result)
    if not bad:
        return None
    lines = [f"{p}: not a finite number; JSON has no NaN/Infinity (store null for a value that could not be computed)"
             for p in bad]  # fmt: skip
    return ConfigError(f"invalid {what}:\n  " + "\n  ".join(lines))


def build_result(
    *,
    run_name: str,
    dataset: str,
    class_name: str,
    method: str,
    variant: str,
    seed: int,
    metrics: Mapping,
    evaluation: Mapping,
    timings: Mapping,
    device: Mapping,
    config_hash: str,
    backbone: Mapping | None = None,
    model_hash: str | None = None,
    extra: Mapping | None = None,
) -> dict:
    """Assemble a result dict (adds ``schema_version``, ``versions`` and ``created``) and validate it.

    ``device`` is a :func:`device_info` dict.  numpy scalars and tuples are converted to plain JSON
    types.  Raises ConfigError naming every wrong key (and any NaN/infinite number).
    """
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "run_name": run_name,
        "dataset": dataset,
        "class": class_name,
        "method": method,
        "variant": variant,
        "seed": seed,
        "metrics": metrics,
        "evaluation": evaluation,
        "timings": timings,
        "versions": collect_versions(
            "cuda" if isinstance(device, Mapping) and device.get("type") == "cuda" else "cpu"
        ),
        "device": device,
        "backbone": backbone,
        "model_hash": model_hash,
        "config_hash": config_hash,
        "created": utc_now(),
        "extra": {} if extra is None else extra,
    }
    from texad.rehearsal.switches import active

    if active():  # a rehearsal's number (random weights, generated data) must never pass for a real one
        result["extra"] = {**result["extra"], "test_switches": active()}
    result = _plain(result)
    what = f"result {dataset}/{class_name}/{method}/{variant}/seed{seed}"
    validate(result, _SCHEMA, what=what)
    err = _non_finite_error(result, what)
    if err is not None:
        raise err
    return result


def write_result(path: str | Path, result: Mapping) -> None:
    """Validate ``result`` and write it to ``path`` as JSON, atomically.

    The JSON is streamed into a temp file next to ``path`` (``allow_nan=False``: NaN/Infinity are
    refused mid-write); on any failure the temp file is removed and an existing ``path`` stays as it was.
    """
    path = Path(path)
    what = f"result {path}"
    validate(result, _SCHEMA, what=what)

    def dump(fh: IO[str]) -> None:
        json.dump(result, fh, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False)
        fh.write("\n")

    try:
        atomic_write(path, dump)
    except ValueError as exc:  # json refuses NaN / Infinity (or a circular structure)
        raise (_non_finite_error(result, what) or ConfigError(f"invalid {what}: {exc}")) from exc
    except TypeError as exc:  # a value JSON cannot represent (validation normally catches these first)
        raise ConfigError(f"invalid {what}: {exc}") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (store null for a value that could not be computed)")


def read_result(path: str | Path) -> dict:
    """Parse and validate one result JSON; a missing, unreadable, malformed or invalid file raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"result file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"result file {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"result file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid result {path}: the top level must be a JSON object, got {type(data).__name__}"
        )
    validate(data, _SCHEMA, what=f"result {path}")
    return data


def method_block(result: Mapping) -> dict:
    """The config block a run ran with (``extra.config.methods.<method>``: its variant applied, its class's
    per-class values); empty for a result without it."""
    config = (result.get("extra") or {}).get("config") or {}
    return dict((config.get("methods") or {}).get(result["method"]) or {})
