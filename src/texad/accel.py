"""GPU fast path for inference: mixed precision, channels_last and torch.compile, behind one switch.

The diffusion methods spend nearly all their time in network evaluations (NFE per image x one U-Net pass),
so the fast path wraps the network: its forward runs under ``torch.autocast`` (bf16, or fp16) with inputs
in ``channels_last`` layout, optionally compiled, and returns float32 so that samplers, distances and
metrics stay in full precision. On a CPU the switch resolves to plain fp32 (autocast is a CUDA feature
here, as in training), and the result records what actually ran.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["PRECISIONS", "FP32", "Accel", "AcceleratedModule", "add_accel_args", "accel_from_args"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Accel:
    """``precision``: autocast dtype of network evaluations; ``channels_last``: NHWC weights and inputs;
    ``compile``: ``torch.compile`` the network (pays off on long runs: compilation takes a minute)."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def on(self, device: torch.device | str) -> Accel:
        """What runs on ``device``: everything on CUDA; plain fp32 eager on a CPU."""
        if torch.device(device).type == "cuda":
            return self
        return FP32

    @property
    def active(self) -> bool:
        return self != FP32

    def autocast(self, device: torch.device | str):
        dtype = _DTYPES.get(self.precision)
        if dtype is None or torch.device(device).type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def prepare(self, module: nn.Module, device: torch.device | str) -> nn.Module:
        """``module`` itself when nothing is switched on for ``device``, else an :class:`AcceleratedModule`."""
        accel = self.on(device)
        if not accel.active:
            return module
        return AcceleratedModule(module, accel, device)

    def as_dict(self) -> dict:
        return asdict(self)


FP32 = Accel()  # plain eager fp32: the CPU path, and the default


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


def add_accel_args(parser: argparse.ArgumentParser) -> None:
    """The fast-path switches of an evaluation command."""
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="autocast dtype of network evaluations on CUDA (fp32 on a CPU)")  # fmt: skip
    parser.add_argument("--channels-last", action="store_true", help="NHWC layout on CUDA")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network on CUDA")


def accel_from_args(args: argparse.Namespace) -> Accel:
    return Accel(precision=args.precision, channels_last=args.channels_last, compile=args.compile)
