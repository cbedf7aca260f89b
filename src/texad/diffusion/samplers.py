"""Reverse-process samplers with a step API kept apart from the network.

A sampler owns the time grid (:meth:`timesteps`) and one update (:meth:`step`), given the noise estimate
``eps`` for the current sample. The network is called outside, so conditioning and guidance can rewrite
``eps`` before it reaches the sampler (see :func:`sample_loop`).

- :class:`DDPMSampler`: ancestral sampling, x_{t-1} ~ q(x_{t-1} | x_t, x0_hat) (posterior variance, or
  beta_t with ``variance="beta"``).
- :class:`DDIMSampler`: the DDIM update with ``eta`` on a strided grid, following DDAD's convention
  (``range(0, start, skip)`` walked backwards, last t_prev = -1 with alpha_bar(-1) = 1).

No clipping of x0_hat unless ``clip_x0=True``. Coefficients are computed in float64 and cast to the
sample's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .schedules import NoiseSchedule, TimeLike, _broadcast

__all__ = [
    "StepOutput",
    "DDPMSampler",
    "DDIMSampler",
    "partial_noise",
    "sample_loop",
    "randn_like",
]

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepOutput:
    """Result of one sampler step: the next (less noisy) sample and the x0 estimate used for it."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (its dtype and device), drawn from ``generator``.

    A generator on another device (e.g. a CPU generator for CUDA tensors) is honoured: the draw is made on
    the generator's device and moved, so results do not depend on where ``x`` lives.
    """
    if generator is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    return z.to(x.device)


def _clip(x0: torch.Tensor, clip_x0: bool | tuple[float, float]) -> torch.Tensor:
    if clip_x0 is False or clip_x0 is None:
        return x0
    lo, hi = (-1.0, 1.0) if clip_x0 is True else clip_x0
    return x0.clamp(lo, hi)


class DDPMSampler:
    """Ancestral DDPM sampler (Ho et al. 2020) on the full grid t = start, start-1, ..., 0.

    ``step`` maps x_t to x_{t-1} = mu(x0_hat, x_t) + sigma_t z, with mu the posterior mean of
    q(x_{t-1} | x_t, x0_hat), sigma_t^2 the posterior variance (``variance="posterior"``) or beta_t
    (``variance="beta"``), and no noise at t = 0.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        clip_x0: bool | tuple[float, float] = False,
        variance: Literal["posterior", "beta"] = "posterior",
    ) -> None:
        if variance not in ("posterior", "beta"):
            raise ValueError(f"unknown variance {variance!r}")
        self.schedule = schedule
        self.clip_x0 = clip_x0
        self.variance = variance

    def timesteps(self, start: int | None = None) -> list[int]:
        """[start, start-1, ..., 0]; ``start`` is the step of the first network call (default T-1).

        After :func:`partial_noise` to step ``t_start``, use ``timesteps(t_start)``.
        """
        T = self.schedule.num_timesteps
        start = T - 1 if start is None else int(start)
        if not 0 <= start < T:
            raise ValueError(f"start must lie in [0, {T - 1}], got {start}")
        return list(range(start, -1, -1))

    def step(
        self,
        eps: torch.Tensor,
        t: TimeLike,
        x_t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> StepOutput:
        sch = self.schedule
        x0 = _clip(sch.predict_x0(x_t, t, eps), self.clip_x0)
        mean, var, _ = sch.posterior_mean_variance(x0, x_t, t)
        if self.variance == "beta":
            var = sch._gather(sch.betas, t, x_t)
        idx = torch.as_tensor(t)
        if bool((idx == 0).all()):  # the last step adds no noise; draw none either
            return StepOutput(prev_sample=mean, pred_x0=x0)
        if noise is None:
            noise = randn_like(x_t, generator)
        nonzero = _broadcast((idx != 0).to(torch.float64), x_t)
        return StepOutput(prev_sample=mean + nonzero * torch.sqrt(var) * noise.to(x_t.dtype), pred_x0=x0)


class DDIMSampler:
    """DDIM sampler (Song et al. 2021) with stochasticity ``eta`` on a strided grid.

    For a pair (t, t_prev), with ab = alpha_bar and ab(-1) = 1:
        x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
        c1 = eta * sqrt((1 - ab_t / ab_prev) (1 - ab_prev) / (1 - ab_t))
        c2 = sqrt(1 - ab_prev - c1^2)
        x_prev = sqrt(ab_prev) x0_hat + c1 z + c2 eps,   z ~ N(0, I).
    With ``clip_x0`` the x0 estimate is clamped and ``eps`` is recomputed from it so the pair stays
    consistent (as guided-diffusion's DDIM does); the default is no clipping (DDAD).
    """

    def __init__(
        self, schedule: NoiseSchedule, eta: float = 0.0, clip_x0: bool | tuple[float, float] = False
    ) -> None:
        if eta < 0:
            raise ValueError("eta must be >= 0")
        self.schedule = schedule
        self.eta = float(eta)
        self.clip_x0 = clip_x0

    def timesteps(self, start: int, skip: int) -> list[tuple[int, int]]:
        """DDAD's grid: seq = range(0, start, skip) walked backwards, paired with the previous entry
        (-1 after 0). E.g. start=250, skip=25 -> (225, 200), (200, 175), ..., (25, 0), (0, -1).

        Note the quirk kept from DDAD: an input noised to ``start`` is first denoised at ``seq[-1]`` (< start).
        """
        T = self.schedule.num_timesteps
        start, skip = int(start), int(skip)
        if skip < 1:
            raise ValueError("skip must be >= 1")
        if not 1 <= start <= T:
            raise ValueError(f"start must lie in [1, {T}], got {start}")
        seq = list(range(0, start, skip))
        prev = [-1, *seq[:-1]]
        return list(zip(reversed(seq), reversed(prev), strict=True))

    def coefficients(self, t: TimeLike, t_prev: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        """(c1, c2) in float64 with the shape of ``t``."""
        ab_t = self.schedule.alpha_bar_at(t)
        ab_prev = self.schedule.alpha_bar_at(t_prev)
        c1 = self.eta * torch.sqrt((1.0 - ab_t / ab_prev) * (1.0 - ab_prev) / (1.0 - ab_t))
        c2 = torch.sqrt(torch.clamp(1.0 - ab_prev - c1**2, min=0.0))
        return c1, c2

    def step(
        self,
        eps: torch.Tensor,
        t: TimeLike,
        t_prev: TimeLike,
        x_t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> StepOutput:
        sch = self.schedule
        x0 = sch.predict_x0(x_t, t, eps)
        eps = eps.to(x_t.dtype)
        if self.clip_x0 is not False and self.clip_x0 is not None:
            x0 = _clip(x0, self.clip_x0)
            eps = sch.predict_eps(x_t, t, x0)
        c1, c2 = self.coefficients(t, t_prev)
        a_prev = _broadcast(torch.sqrt(sch.alpha_bar_at(t_prev)), x_t)
        x_prev = a_prev * x0 + _broadcast(c2, x_t) * eps
        if self.eta > 0:
            if noise is None:
                noise = randn_like(x_t, generator)
            x_prev = x_prev + _broadcast(c1, x_t) * noise.to(x_t.dtype)
        return StepOutput(prev_sample=x_prev, pred_x0=x0)


def partial_noise(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t_start: int,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise a clean input to step ``t_start``: sqrt(ab) x0 + sqrt(1 - ab) z, z ~ N(0, I) from ``generator``."""
    if noise is None:
        noise = randn_like(x0, generator)
    return schedule.q_sample(x0, int(t_start), noise)


def sample_loop(
    eps_fn: EpsFn,
    sampler: DDPMSampler | DDIMSampler,
    x_t: torch.Tensor,
    steps: Sequence[int] | Sequence[tuple[int, int]],
    generator: torch.Generator | None = None,
    callback: Callable[[int, int, StepOutput], None] | None = None,
) -> StepOutput:
    """Run ``sampler`` over ``steps`` (the output of its ``timesteps``), starting from ``x_t``.

    ``eps_fn(x, t)`` returns the noise estimate for sample ``x`` at timesteps ``t`` (a (B,) long tensor on
    ``x``'s device); wrap the network there for conditioning or guidance. ``callback(i, t, out)`` sees each
    step. Returns the last :class:`StepOutput` (``prev_sample`` is the final sample). Gradient mode is the
    caller's choice (use ``torch.no_grad()`` for inference).
    """
    if len(steps) == 0:
        raise ValueError("steps is empty")
    x = x_t
    out: StepOutput | None = None
    for i, s in enumerate(steps):
        t = s[0] if isinstance(s, tuple) else s
        t_vec = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        eps = eps_fn(x, t_vec)
        if isinstance(s, tuple):
            if not isinstance(sampler, DDIMSampler):
                raise TypeError("(t, t_prev) steps need a DDIMSampler")
            out = sampler.step(eps, s[0], s[1], x, generator=generator)
        else:
            if not isinstance(sampler, DDPMSampler):
                raise TypeError("integer steps need a DDPMSampler")
            out = sampler.step(eps, s, x, generator=generator)
        if callback is not None:
            callback(i, int(t), out)
        x = out.prev_sample
    assert out is not None
    return out
