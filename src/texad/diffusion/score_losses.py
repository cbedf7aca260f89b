"""Continuous-time denoising score matching (spec ``method_a_score_tscales.md`` §2.3, score_sde's ``get_sde_loss_fn``).

For a batch x_0: t ~ U(eps, 1) per item, z ~ N(0, I), x_t = a(t) x_0 + std(t) z and

    L = mean over the batch of  0.5 * sum over C, H, W of (std(t) * s_theta(x_t, t) + z)^2

i.e. the weighting lambda(t) = std(t)^2 (score_sde's default, ``likelihood_weighting=False``) and
``reduce_mean=False`` (sum over dimensions). Its minimiser is the score of p_t.
"""

from __future__ import annotations

from typing import Any

import torch

from .samplers import randn_like
from .sde import SDE, ScoreFn

__all__ = ["sample_times", "dsm_loss"]


def sample_times(
    sde: SDE, batch_size: int, device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """t ~ U(eps, 1), shape (batch_size,), float32 on ``device`` (drawn on the generator's device)."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand((batch_size,), generator=generator, device=gen_device)
    return (u * (1.0 - sde.eps) + sde.eps).to(device)


def dsm_loss(
    score_fn: ScoreFn,
    sde: SDE,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The DSM loss of ``score_fn`` on clean images ``x0`` (B, C, H, W) in the SDE's data range.

    Draws, in this order and from ``generator``: t (see :func:`sample_times`), then z like x0 (either can be passed).
    Returns ``(loss, info)`` with info = {"t", "per_sample"} (per-item 0.5 * summed squared error, detached).
    """
    if x0.ndim < 2:
        raise ValueError("x0 must have a batch dimension and at least one more")
    if t is None:
        t = sample_times(sde, x0.shape[0], x0.device, generator)
    if noise is None:
        noise = randn_like(x0, generator)
    noise = noise.to(dtype=x0.dtype)
    mean, std = sde.marginal_prob(x0, t)
    x_t = mean + std * noise
    score = score_fn(x_t, t)
    if score.shape != x0.shape:
        raise ValueError(f"score shape {tuple(score.shape)} != data shape {tuple(x0.shape)}")
    per_sample = 0.5 * (std * score.to(x0.dtype) + noise).pow(2).flatten(1).sum(dim=1)
    return per_sample.mean(), {"t": t, "per_sample": per_sample.detach()}
