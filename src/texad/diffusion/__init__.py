"""Diffusion core: noise schedules, the forward process, samplers with a step API, and the training loss.

Knows nothing about anomalies; methods build on it.
"""

from .losses import epsilon_loss, sample_timesteps
from .samplers import DDIMSampler, DDPMSampler, StepOutput, partial_noise, randn_like, sample_loop
from .schedules import NoiseSchedule

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
