"""GPU fast path for inference: mixed precision, channels_last and torch.compile, behind one switch.

The diffusion methods spend nearly all their time in network evaluations (NFE per image x one U-Net pass),
so the fast path wraps the network: its forward runs under ``torch.autocast`` (bf16, or fp16) with inputs
in ``channels_last`` layout, optionally compiled, and returns float32 so that samplers, distances and
metrics stay in full precision. On a CPU the switch resolves to plain fp32 (autocast is a CUDA feature
here, as in training), and the result records what actually ran.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: commands without a network start without it
    import torch
    from torch import nn

__all__ = ["PRECISIONS", "FP32", "Accel"]

PRECISIONS = ("fp32", "bf16", "fp16")


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
        import torch

        if torch.device(device).type == "cuda":
            return self
        return FP32

    @property
    def active(self) -> bool:
        return self != FP32

    def autocast(self, device: torch.device | str):
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dtype is None or torch.device(device).type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def prepare(self, module: nn.Module, device: torch.device | str) -> nn.Module:
        """``module`` itself when nothing is switched on for ``device``, else an :class:`AcceleratedModule`."""
        accel = self.on(device)
        if not accel.active:
            return module
        from texad.accel_module import AcceleratedModule

        return AcceleratedModule(module, accel, device)

    def as_dict(self) -> dict:
        return asdict(self)


FP32 = Accel()  # plain eager fp32: the CPU path, and the default
