"""What every trainer shares: atomic torch files, CPU copies of weights, and checked checkpoint reads.

A training job writes its resumable state to a checkpoint folder outside the rule's outputs (Snakemake
deletes a failed job's outputs) and its final model atomically, so a killed job leaves no half file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from texad.atomic import atomic_write

__all__ = ["TrainingStopped", "cpu_state", "save_torch", "read_checkpoint"]


class TrainingStopped(RuntimeError):
    """Raised by the trainers' test hooks (``_stop_after_*``) once that epoch's checkpoint is written, as if
    the job were killed there."""


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()`` (safe to save while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` into ``path`` atomically."""
    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)


def read_checkpoint(path: Path, *, what: str, keys: Sequence[str], model_hash: str) -> dict:
    """Load a resumable checkpoint and check it holds ``keys`` and belongs to ``model_hash``.

    Every failure is a ValueError naming the file and saying what to do (``what``: e.g. "DRAEM").
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a torch file, ...
        raise ValueError(
            f"{what} checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); delete it to start over"
        ) from exc
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(
            f"{path} is not a texad {what} checkpoint (missing {missing}); delete it to start over"
        )
    if ckpt["model_hash"] != model_hash:
        raise ValueError(
            f"{what} checkpoint {path} belongs to model {ckpt['model_hash']}, but these settings give model "
            f"{model_hash}; delete {path} to train the new model from scratch"
        )
    return ckpt
