"""DDPM noise schedules and the closed forms of the forward process.

Conventions (see spec ``method_b_conditioned_blur_ddpm.md`` §1.1):

- Timesteps are 0-indexed: ``t`` in ``{0, ..., T-1}``; ``alpha_bar[t] = prod_{i<=t} (1 - beta_i)``.
- ``alpha_bar_at(-1) == 1`` (a clean image), which the DDIM sampler uses for its last step.
- Every table is stored in float64. Coefficients are gathered in float64 and cast to the dtype and device
  of the tensor they multiply, so float32 inputs give float32 outputs.

The schedule knows nothing about networks, samplers or anomalies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["NoiseSchedule", "TimeLike"]

TimeLike = int | torch.Tensor


def _as_index(t: TimeLike, device: torch.device) -> torch.Tensor:
    """``t`` as a long tensor (0-d or 1-d) on ``device``."""
    if isinstance(t, torch.Tensor):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"timesteps must be integers, got dtype {t.dtype}")
        idx = t.to(device=device, dtype=torch.long)
    else:
        idx = torch.tensor(int(t), dtype=torch.long, device=device)
    if idx.ndim > 1:
        raise ValueError(f"timesteps must be a scalar or a 1-d tensor, got shape {tuple(idx.shape)}")
    return idx


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cast gathered float64 ``values`` (0-d or shape (B,)) to ``like``'s dtype/device, shaped to broadcast
    over ``like`` along the batch dimension."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.ndim == 0:
        return values
    if like.ndim == 0 or values.shape[0] != like.shape[0]:
        raise ValueError(
            f"per-item timesteps of length {values.shape[0]} do not match a batch of shape {tuple(like.shape)}"
        )
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


@dataclass(eq=False)
class NoiseSchedule:
    """A discrete DDPM variance schedule ``beta_0 .. beta_{T-1}`` and its derived tables.

    Build with :meth:`linear` (DDAD / Ho et al.) or :meth:`cosine` (Nichol & Dhariwal), or pass ``betas``.
    """

    betas: torch.Tensor
    alphas: torch.Tensor = field(init=False)
    alpha_bar: torch.Tensor = field(init=False)
    #: ``alpha_bar`` with a leading 1: ``alpha_bar_padded[t + 1] == alpha_bar_at(t)``, valid for t = -1.
    alpha_bar_padded: torch.Tensor = field(init=False)
    #: variance of q(x_{t-1} | x_t, x_0); 0 at t = 0.
    posterior_variance: torch.Tensor = field(init=False)
    #: log of ``posterior_variance`` with the t = 0 entry replaced by the t = 1 entry (finite).
    posterior_log_variance_clipped: torch.Tensor = field(init=False)
    posterior_mean_coef_x0: torch.Tensor = field(init=False)
    posterior_mean_coef_xt: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas).detach().to(torch.float64)
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError("betas must be a non-empty 1-d tensor")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        one = torch.ones(1, dtype=torch.float64, device=betas.device)
        self.alpha_bar_padded = torch.cat([one, self.alpha_bar])
        ab_prev = self.alpha_bar_padded[:-1]
        self.posterior_variance = betas * (1.0 - ab_prev) / (1.0 - self.alpha_bar)
        if betas.numel() > 1:
            clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        else:  # T = 1: no later entry to borrow; fall back to beta_0.
            clipped = betas.clone()
        self.posterior_log_variance_clipped = torch.log(clipped)
        self.posterior_mean_coef_x0 = betas * torch.sqrt(ab_prev) / (1.0 - self.alpha_bar)
        self.posterior_mean_coef_xt = (1.0 - ab_prev) * torch.sqrt(self.alphas) / (1.0 - self.alpha_bar)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(
        cls,
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        dtype: torch.dtype = torch.float64,
    ) -> NoiseSchedule:
        """Betas spaced linearly from ``beta_start`` to ``beta_end`` (both included).

        ``dtype`` is the precision the linspace is computed in; the tables are always stored in float64.
        """
        if timesteps < 1:
            raise ValueError("timesteps must be >= 1")
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=dtype)
        return cls(betas=betas)

    @classmethod
    def cosine(cls, timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal (2021) cosine schedule: alpha_bar(u) = f(u)/f(0), f(u) = cos^2((u+s)/(1+s) * pi/2),
        with ``beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta)``."""
        if timesteps < 1:
            raise ValueError("timesteps must be >= 1")

        def f(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1.0 - f((i + 1) / timesteps) / f(i / timesteps), max_beta) for i in range(timesteps)]
        return cls(betas=torch.tensor(betas, dtype=torch.float64))

    # ------------------------------------------------------------------ basics
    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy whose tables live on ``device`` (still float64)."""
        return NoiseSchedule(betas=self.betas.to(device))

    def _check_range(self, idx: torch.Tensor, allow_minus_one: bool) -> None:
        lo = -1 if allow_minus_one else 0
        if idx.numel() and (int(idx.min()) < lo or int(idx.max()) >= self.num_timesteps):
            raise IndexError(f"timestep out of range [{lo}, {self.num_timesteps - 1}]: {idx.tolist()}")

    def _gather(self, table: torch.Tensor, t: TimeLike, like: torch.Tensor) -> torch.Tensor:
        idx = _as_index(t, table.device)
        self._check_range(idx, allow_minus_one=False)
        return _broadcast(table[idx], like)

    def alpha_bar_at(self, t: TimeLike) -> torch.Tensor:
        """alpha_bar at ``t`` (int or long tensor, -1 allowed and mapped to 1), float64 on the schedule's device,
        with the shape of ``t``."""
        idx = _as_index(t, self.device)
        self._check_range(idx, allow_minus_one=True)
        return self.alpha_bar_padded[idx + 1]

    def alpha_bar_like(self, t: TimeLike, like: torch.Tensor) -> torch.Tensor:
        """``alpha_bar_at(t)`` cast to ``like``'s dtype/device and shaped to broadcast over it."""
        return _broadcast(self.alpha_bar_at(t), like)

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: torch.Tensor, t: TimeLike, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise. ``t``: int or (B,) long tensor."""
        ab = self.alpha_bar_at(t)
        a = _broadcast(torch.sqrt(ab), x0)
        b = _broadcast(torch.sqrt(1.0 - ab), x0)
        return a * x0 + b * noise.to(dtype=x0.dtype)

    def predict_x0(self, x_t: torch.Tensor, t: TimeLike, eps: torch.Tensor) -> torch.Tensor:
        """Invert q_sample for x0 given the noise: (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)."""
        ab = self.alpha_bar_at(t)
        a = _broadcast(torch.rsqrt(ab), x_t)  # 1 / sqrt(ab)
        b = _broadcast(torch.sqrt(1.0 / ab - 1.0), x_t)  # sqrt(1 - ab) / sqrt(ab)
        return a * x_t - b * eps.to(dtype=x_t.dtype)

    def predict_eps(self, x_t: torch.Tensor, t: TimeLike, x0: torch.Tensor) -> torch.Tensor:
        """Invert q_sample for the noise given x0: (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""
        ab = self.alpha_bar_at(t)
        a = _broadcast(torch.rsqrt(1.0 - ab), x_t)
        b = _broadcast(torch.sqrt(ab / (1.0 - ab)), x_t)
        return a * x_t - b * x0.to(dtype=x_t.dtype)

    def posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: TimeLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x0) = N(mean, variance).

        mean = beta_t sqrt(ab_{t-1}) / (1 - ab_t) * x0 + (1 - ab_{t-1}) sqrt(alpha_t) / (1 - ab_t) * x_t,
        variance = beta_t (1 - ab_{t-1}) / (1 - ab_t)  (0 at t = 0, where ab_{-1} = 1).

        Returns ``(mean, variance, log_variance_clipped)``; the last two are shaped to broadcast over x_t
        (log variance at t = 0 uses the t = 1 value so it stays finite).
        """
        c0 = self._gather(self.posterior_mean_coef_x0, t, x_t)
        ct = self._gather(self.posterior_mean_coef_xt, t, x_t)
        mean = c0 * x0.to(dtype=x_t.dtype) + ct * x_t
        var = self._gather(self.posterior_variance, t, x_t)
        log_var = self._gather(self.posterior_log_variance_clipped, t, x_t)
        return mean, var, log_var
