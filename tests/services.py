"""What a test does when a service it needs cannot be had (a SLURM cluster, headless Chromium, a pinned dev
package): on a developer's machine it skips, with the reason; under CI (``CI=true``, as .ci/run sets it) it fails
with that reason, so that CI never passes without the tests it was meant to run. Only the CUDA tests
(tests/test_accel.py) may skip in CI, which has no GPU; tests/test_services.py holds the suite to that."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require", "require_module"]


def in_ci() -> bool:
    """Whether the suite runs under CI: the ``CI`` variable is ``true`` (or ``1``/``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(reason: str) -> NoReturn:
    """The test cannot run (``reason`` says which service is missing and why): fail under CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a test that needs a service fails without it; it does not skip)",
                    pytrace=False)  # fmt: skip
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    """``pytest.importorskip`` that fails under CI: the module, or :func:`require` with the import error."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(f"cannot import {name} ({type(exc).__name__}: {exc})")
