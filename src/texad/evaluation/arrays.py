"""Array input handling shared by the metrics and the evaluation grid (numpy or torch in, numpy out)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device, detached) or array-like."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".")[0] == "torch":
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.dtype in (torch.bfloat16, torch.float16):
                x = x.float()
            return x.cpu().numpy()
    return np.asarray(x)


def as_binary(a: np.ndarray, what: str) -> np.ndarray:
    """Boolean view of a bool or 0/1 array; anything else is an error (e.g. a 0/255 PNG mask)."""
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be boolean or 0/1, got dtype {a.dtype}")
    pos = a == 1
    if not np.all(pos | (a == 0)):
        bad = np.unique(a[~(pos | (a == 0))])[:5]
        raise ValueError(f"{what} must be boolean or 0/1; found other values, e.g. {bad.tolist()}")
    return pos
