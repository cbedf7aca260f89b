"""The network wrapper of the GPU fast path (see :mod:`texad.accel` for the switches)."""

from __future__ import annotations

import torch
from torch import nn

from texad.accel import Accel

__all__ = ["AcceleratedModule"]


def _to_float32(value):
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple | list):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


class AcceleratedModule(nn.Module):
    """``inner`` evaluated with the fast path; inputs and outputs keep the caller's float32 contract."""

    def __init__(self, inner: nn.Module, accel: Accel, device: torch.device | str) -> None:
        super().__init__()
        self.accel = accel
        self.device = torch.device(device)
        if accel.channels_last:
            inner = inner.to(memory_format=torch.channels_last)
        self.inner = inner
        self._call = torch.compile(inner) if accel.compile else inner

    def forward(self, *args, **kwargs):
        if self.accel.channels_last:
            args = tuple(
                a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.ndim == 4 else a
                for a in args
            )
        with self.accel.autocast(self.device):
            out = self._call(*args, **kwargs)
        return _to_float32(out)
