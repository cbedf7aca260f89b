"""The epsilon-prediction training objective (Ho et al. 2020, in DDAD's form)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from .samplers import randn_like
from .schedules import NoiseSchedule

__all__ = ["epsilon_loss", "sample_timesteps"]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_timesteps(
    schedule: NoiseSchedule,
    batch_size: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
    t_max: int | None = None,
) -> torch.Tensor:
    """t ~ U{0, ..., t_max-1} (``t_max`` None: T), shape (batch_size,), long, on ``device`` (drawn on the
    generator's device)."""
    high = schedule.num_timesteps if t_max is None else int(t_max)
    if not 1 <= high <= schedule.num_timesteps:
        raise ValueError(f"t_max must lie in [1, {schedule.num_timesteps}], got {t_max!r}")
    gen_device = generator.device if generator is not None else device
    t = torch.randint(0, high, (batch_size,), generator=generator, device=gen_device, dtype=torch.long)
    return t.to(device)


def epsilon_loss(
    model: Model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    reduction: Literal["sum_mean", "mean"] = "sum_mean",
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    t_max: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Noise-prediction loss for a batch of clean images ``x0`` (B, C, H, W).

    Draws, in this order and from ``generator``: t ~ U{0..T-1} per item (U{0..t_max-1} when ``t_max`` is
    given), then noise ~ N(0, I) like x0 (either can be passed instead). x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise; loss on (noise - model(x_t, t))^2:

    - ``"sum_mean"`` (DDAD): summed over all non-batch dimensions, averaged over the batch;
    - ``"mean"``: averaged over every element (= sum_mean / (C*H*W)).

    Returns ``(loss, info)`` with info = {"t": t, "per_sample": per-item summed squared error (detached)}.
    """
    if reduction not in ("sum_mean", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}")
    if x0.ndim < 2:
        raise ValueError("x0 must have a batch dimension and at least one more")
    if t is None:
        t = sample_timesteps(schedule, x0.shape[0], x0.device, generator, t_max)
    else:
        t = t.to(device=x0.device, dtype=torch.long)
    if noise is None:
        noise = randn_like(x0, generator)
    noise = noise.to(dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    pred = model(x_t, t)
    if pred.shape != noise.shape:
        raise ValueError(f"model output shape {tuple(pred.shape)} != noise shape {tuple(noise.shape)}")
    sq = (noise - pred).pow(2)
    per_sample = sq.flatten(1).sum(dim=1)
    loss = per_sample.mean() if reduction == "sum_mean" else sq.mean()
    return loss, {"t": t, "per_sample": per_sample.detach()}
