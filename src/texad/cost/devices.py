"""Accelerators as peak dense TFLOP/s x utilisation.

Peaks (dense, no sparsity) from NVIDIA's data sheets: A100 SXM 80 GB (A100 Tensor Core GPU data sheet, 2021):
FP32 19.5, TF32 156, BF16 312; H100 SXM (H100 Tensor Core GPU data sheet, 2023): FP32 67, TF32 494.7, BF16 989.4
(the sheet's 989 / 1,979 are dense / sparse).

Utilisation (achieved / peak) defaults to :data:`DEFAULT_UTILISATION`: 0.3 for the tensor-core precisions, a
typical figure for convolutional U-Nets at 256 px under autocast with batch 8-32 (memory-bound GroupNorm, SiLU
and attention softmax hold the matmul share well below the peak); 0.6 for plain FP32, which runs on the CUDA
cores where convolutions get closer to their (much lower) peak. ``make gpu-check`` measures it per network on a
lent GPU and writes ``benchmarks/gpu.json``; :func:`utilisation` prefers that measurement (not a ``tiny`` run,
and only for the same device and precision).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEVICES",
    "DEFAULT_UTILISATION",
    "PRECISIONS",
    "Device",
    "measured_utilisation",
    "resolve",
]

PRECISIONS = ("fp32", "tf32", "bf16")

#: device -> precision -> peak dense TFLOP/s
DEVICES: dict[str, dict[str, float]] = {
    "a100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "h100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
}
#: the name torch.cuda.get_device_name reports contains this
NAME_MATCH = {"a100": "A100", "h100": "H100"}
DEFAULT_UTILISATION: dict[str, float] = {"fp32": 0.6, "tf32": 0.3, "bf16": 0.3}
#: gpu.json's mode that measures each precision
_MODE_OF = {"fp32": "fp32", "bf16": "bf16"}


@dataclass(frozen=True)
class Device:
    name: str
    precision: str
    peak_tflops: float
    utilisation: float
    source: str  # where the utilisation comes from

    @property
    def tflops(self) -> float:
        """Sustained TFLOP/s: peak x utilisation."""
        return self.peak_tflops * self.utilisation

    def hours(self, flops: float) -> float:
        """GPU-hours of ``flops`` at the sustained rate."""
        return flops / (self.tflops * 1e12) / 3600.0

    def describe(self) -> str:
        return (
            f"{self.name.upper()} {self.precision}: {self.peak_tflops:g} TFLOP/s peak x {self.utilisation:.2f} "
            f"utilisation ({self.source}) = {self.tflops:.1f} TFLOP/s"
        )


def measured_utilisation(gpu_json: Path, device: str, precision: str) -> float | None:
    """The mean utilisation ``make gpu-check`` measured for ``device`` at ``precision`` over the networks' training
    and inference steps, or None (no file, a ``tiny`` CPU run, another device, or no such mode)."""
    try:
        data = json.loads(Path(gpu_json).read_text())
    except (OSError, ValueError):
        return None
    if data.get("tiny") or data.get("kind") != "cuda":
        return None
    if NAME_MATCH[device] not in str(data.get("device", "")):
        return None
    mode = _MODE_OF.get(precision)
    values = [
        float(m["utilisation"])
        for net in data.get("networks", {}).values()
        for name, m in net.get("modes", {}).items()
        if name == mode and m.get("ok") and m.get("utilisation")
    ]
    return sum(values) / len(values) if values else None


def resolve(
    device: str, precision: str, utilisation: float | None = None, gpu_json: Path | None = None
) -> Device:
    """The :class:`Device`: ``utilisation`` when given, else the measured one in ``gpu_json``, else the default."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from {sorted(DEVICES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    peak = DEVICES[device][precision]
    if utilisation is not None:
        if not 0 < utilisation <= 1:
            raise ValueError(f"--utilisation must be in (0, 1], got {utilisation}")
        return Device(device, precision, peak, utilisation, "given")
    if gpu_json is not None:
        measured = measured_utilisation(gpu_json, device, precision)
        if measured is not None:
            return Device(device, precision, peak, measured, f"measured, {gpu_json}")
    return Device(device, precision, peak, DEFAULT_UTILISATION[precision], "default")
