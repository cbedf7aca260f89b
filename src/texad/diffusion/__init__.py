"""Diffusion core: noise schedules, the forward process, samplers with a step API, and the training loss.

Knows nothing about anomalies; methods build on it.
"""

from importlib import import_module

__all__ = [
    "NoiseSchedule",
    "StepOutput",
    "DDPMSampler",
    "DDIMSampler",
    "partial_noise",
    "randn_like",
    "sample_loop",
    "epsilon_loss",
    "sample_timesteps",
]

_HOME = {"epsilon_loss": "losses", "sample_timesteps": "losses", "NoiseSchedule": "schedules"}
_HOME.update({n: "samplers" for n in ("StepOutput", "DDPMSampler", "DDIMSampler", "partial_noise", "randn_like",
                                       "sample_loop")})  # fmt: skip


def __getattr__(name: str):  # torch is imported on first use: the trainers' settings (planning) need none
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
