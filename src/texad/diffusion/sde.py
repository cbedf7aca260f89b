"""Forward SDEs as objects (Song et al. 2021), plus a VP view of the discrete DDPM schedule.

Spec ``method_a_score_tscales.md`` §2.1. Time ``t`` runs over [0, 1]; every SDE here is affine, so the marginal
is p_t(x_t | x_0) = N(a(t) x_0, std(t)^2 I) with a(t) = exp(log_mean_coeff(t)).

- :class:`VESDE`: a = 1, std = sigma(t) = sigma_min (sigma_max / sigma_min)^t.
- :class:`VPSDE`: beta(t) = beta_min + t (beta_max - beta_min), log a = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2,
  std = sqrt(1 - a^2).
- :class:`DiscreteVP`: Method B's :class:`~texad.diffusion.schedules.NoiseSchedule` read as a VP SDE. Time t maps
  to the fractional index u = t (T - 1); log alpha_bar is interpolated linearly between integer indices, so the
  view is exact on the DDPM's own steps. The network label is u, and the score is -eps / std.

Noise levels are compared through the *VE-equivalent* level ``sigma(t) = std(t) / a(t)``: x_t / a = x_0 + sigma z.

Reverse step on an arbitrary time grid (:meth:`SDE.reverse_step`): for the forward transition kernel from
t_next < t to t, x_t = r x_next + sqrt(v) z with r = a(t) / a(t_next), v = std(t)^2 - r^2 std(t_next)^2, the
reverse-diffusion step is

    x_next = (x_t + v * score(x_t, t)) / r + sqrt(v) z'        (no noise when t_next is the clean end)

For VE this is x + (sigma_t^2 - sigma_next^2) s + sqrt(sigma_t^2 - sigma_next^2) z', the score_sde predictor, but
with the *next time of the caller's grid*: score_sde's ``discretize`` uses the adjacent index of its fixed
N-grid, which is wrong on a sparse grid (spec §2.1, caveat). Stepping to the clean end (``t_next=None``) gives
Tweedie's estimate (x + std^2 s) / a.

``predictor="ancestral"`` keeps that mean but draws the noise with the posterior std of q(x_next | x_t, x_0),
sqrt(v) std(t_next) / std(t): with the exact score the sample then has the marginal of t_next even after a large
jump, whereas the reverse-diffusion noise sqrt(v) leaves it about as noisy as x_t when t_next << t. On adjacent
steps of a fine grid the two agree to first order.

Coefficients are computed in float64 and cast to the sample's dtype.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from .schedules import NoiseSchedule

__all__ = [
    "PREDICTORS",
    "SDE",
    "VESDE",
    "VPSDE",
    "DiscreteVP",
    "ScoreFn",
    "get_score_fn",
    "score_from_eps",
    "max_pairwise_distance",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PREDICTORS = ("reverse_diffusion", "ancestral")
TimeArg = float | torch.Tensor
F64 = torch.float64


def _t64(t: TimeArg) -> torch.Tensor:
    return torch.as_tensor(t, dtype=F64).detach().cpu()


def _bcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Float64 ``values`` (0-d or (B,)) cast to ``like``'s dtype/device and shaped to broadcast over it."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.ndim == 0:
        return values
    if values.shape[0] != like.shape[0]:
        raise ValueError(f"{values.shape[0]} times for a batch of shape {tuple(like.shape)}")
    return values.reshape(-1, *([1] * (like.ndim - 1)))


class SDE(ABC):
    """An affine forward SDE on t in [0, 1]. Subclasses give the mean coefficient, the std and the drift."""

    #: "ve", "vp" or "ddpm"
    kind: str = ""
    #: number of steps of the reference discretisation (the full-length reverse chain)
    N: int = 1000
    #: smallest time used by the training loss (score_sde: 1e-5 for VE, 1e-3 for VP)
    eps: float = 1e-5

    # ------------------------------------------------------------------ marginals
    @abstractmethod
    def log_mean_coeff(self, t: TimeArg) -> torch.Tensor:
        """log a(t), float64, the shape of ``t``."""

    @abstractmethod
    def std(self, t: TimeArg) -> torch.Tensor:
        """std(t) of the marginal, float64."""

    @abstractmethod
    def time_of_sigma(self, sigma: TimeArg) -> torch.Tensor:
        """The time whose VE-equivalent noise level is ``sigma`` (inverse of :meth:`sigma`), float64."""

    @abstractmethod
    def sde(self, x: torch.Tensor, t: TimeArg) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift f(x, t), diffusion g(t)); g is broadcast over ``x``."""

    @abstractmethod
    def noise_label(self, t: TimeArg) -> torch.Tensor:
        """What a network of this SDE is conditioned on at ``t`` (float64)."""

    @abstractmethod
    def discrete_times(self) -> torch.Tensor:
        """The N times of the reference discretisation, ascending (float64)."""

    @abstractmethod
    def describe(self) -> dict:
        """The parameters, JSON-ready."""

    def mean_coeff(self, t: TimeArg) -> torch.Tensor:
        return torch.exp(self.log_mean_coeff(t))

    def sigma(self, t: TimeArg) -> torch.Tensor:
        """VE-equivalent noise level std(t) / a(t)."""
        return self.std(t) / self.mean_coeff(t)

    def marginal_prob(self, x0: torch.Tensor, t: TimeArg) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean a(t) x0, std(t) shaped to broadcast over x0)."""
        return _bcast(self.mean_coeff(t), x0) * x0, _bcast(self.std(t), x0)

    def perturb(self, x0: torch.Tensor, t: TimeArg, noise: torch.Tensor) -> torch.Tensor:
        """x_t = a(t) x0 + std(t) noise."""
        mean, std = self.marginal_prob(x0, t)
        return mean + std * noise.to(x0.dtype)

    def prior_sampling(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A draw from p_1 (N(0, std(1)^2 I) for VE, approximately N(0, I) for VP), float32 on the generator's device."""
        dev = generator.device if generator is not None else "cpu"
        z = torch.randn(shape, generator=generator, device=dev)
        return z * float(self.std(1.0)) if self.kind == "ve" else z

    # ------------------------------------------------------------------ reverse step
    def transition(self, t: TimeArg, t_next: TimeArg | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, v) of the forward kernel x_t = r x_next + sqrt(v) z from ``t_next`` < ``t``; ``None`` = clean data."""
        a_t, s_t = self.mean_coeff(t), self.std(t)
        if t_next is None:
            return a_t, s_t**2
        a_n, s_n = self.mean_coeff(t_next), self.std(t_next)
        r = a_t / a_n
        v = s_t**2 - r**2 * s_n**2
        if bool((v < -1e-12).any()):
            raise ValueError("reverse_step needs t_next < t")
        return r, v.clamp(min=0.0)

    def reverse_step(
        self,
        x: torch.Tensor,
        score: torch.Tensor,
        t: TimeArg,
        t_next: TimeArg | None,
        noise: torch.Tensor | None = None,
        predictor: str = "reverse_diffusion",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step from ``t`` to ``t_next`` (any earlier time, or ``None`` = clean end); ``predictor`` is
        "reverse_diffusion" (noise std sqrt(v)) or "ancestral" (posterior std sqrt(v) std(t_next) / std(t)).

        Returns ``(x_next, x_mean)``; ``noise`` (standard normal like ``x``) is required unless ``t_next`` is None.
        """
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
        r, v = self.transition(t, t_next)
        mean = (x + _bcast(v, x) * score.to(x.dtype)) / _bcast(r, x)
        if t_next is None:
            return mean, mean
        if noise is None:
            raise ValueError("reverse_step to a noisy time needs noise")
        std = torch.sqrt(v)
        if predictor == "ancestral":
            std = std * self.std(t_next) / self.std(t)
        return mean + _bcast(std, x) * noise.to(x.dtype), mean


class VESDE(SDE):
    """Variance exploding SDE (SMLD): dx = sigma(t) sqrt(2 ln(sigma_max / sigma_min)) dw."""

    kind = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000, eps: float = 1e-5):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if N < 2:
            raise ValueError(f"N must be >= 2, got {N}")
        self.sigma_min, self.sigma_max, self.N, self.eps = (
            float(sigma_min),
            float(sigma_max),
            int(N),
            float(eps),
        )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def log_mean_coeff(self, t: TimeArg) -> torch.Tensor:
        return torch.zeros_like(_t64(t))

    def std(self, t: TimeArg) -> torch.Tensor:
        return self.sigma_min * torch.exp(_t64(t) * self._log_ratio)

    def time_of_sigma(self, sigma: TimeArg) -> torch.Tensor:
        return torch.log(_t64(sigma) / self.sigma_min) / self._log_ratio

    def sde(self, x: torch.Tensor, t: TimeArg) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.std(t) * math.sqrt(2.0 * self._log_ratio)
        return torch.zeros_like(x), _bcast(g, x)

    def noise_label(self, t: TimeArg) -> torch.Tensor:
        return self.std(t)

    def discrete_times(self) -> torch.Tensor:
        """t_i = i / (N - 1): sigma_i = exp(linspace(ln sigma_min, ln sigma_max, N)), score_sde's SMLD grid."""
        return torch.linspace(0.0, 1.0, self.N, dtype=F64)

    def describe(self) -> dict:
        return {"type": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}


class VPSDE(SDE):
    """Variance preserving SDE (DDPM limit): dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw."""

    kind = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000, eps: float = 1e-3):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        if N < 2:
            raise ValueError(f"N must be >= 2, got {N}")
        self.beta_min, self.beta_max, self.N, self.eps = float(beta_min), float(beta_max), int(N), float(eps)

    def log_mean_coeff(self, t: TimeArg) -> torch.Tensor:
        t = _t64(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def std(self, t: TimeArg) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coeff(t)))

    def time_of_sigma(self, sigma: TimeArg) -> torch.Tensor:
        # -2 log a = ln(1 + sigma^2) = t^2 (b1 - b0) / 2 + t b0, the positive root
        rhs = torch.log1p(_t64(sigma) ** 2)
        d = self.beta_max - self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * rhs)) / d

    def sde(self, x: torch.Tensor, t: TimeArg) -> tuple[torch.Tensor, torch.Tensor]:
        beta = self.beta_min + _t64(t) * (self.beta_max - self.beta_min)
        return -0.5 * _bcast(beta, x) * x, _bcast(torch.sqrt(beta), x)

    def noise_label(self, t: TimeArg) -> torch.Tensor:
        return 999.0 * _t64(t)  # score_sde's label for continuously trained VP models

    def discrete_times(self) -> torch.Tensor:
        return torch.linspace(self.eps, 1.0, self.N, dtype=F64)

    def describe(self) -> dict:
        return {"type": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}


class DiscreteVP(SDE):
    """Method B's discrete DDPM schedule as a VP SDE (see the module docstring): index u = t (T - 1)."""

    kind = "ddpm"

    def __init__(self, schedule: NoiseSchedule):
        if schedule.num_timesteps < 2:
            raise ValueError("a DiscreteVP view needs at least 2 timesteps")
        self.schedule = schedule
        self.N = schedule.num_timesteps
        self.eps = 0.0
        self._log_ab = torch.log(schedule.alpha_bar.detach().to("cpu", F64))

    def _index(self, t: TimeArg) -> torch.Tensor:
        u = _t64(t) * (self.N - 1)
        if bool(((u < -1e-9) | (u > self.N - 1 + 1e-9)).any()):
            raise ValueError(f"time outside [0, 1]: {t}")
        return u.clamp(0.0, self.N - 1)

    def log_mean_coeff(self, t: TimeArg) -> torch.Tensor:
        u = self._index(t)
        i0 = torch.floor(u).long().clamp(max=self.N - 2)
        w = u - i0
        log_ab = (1.0 - w) * self._log_ab[i0] + w * self._log_ab[i0 + 1]
        return 0.5 * log_ab

    def std(self, t: TimeArg) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coeff(t)))

    def time_of_sigma(self, sigma: TimeArg) -> torch.Tensor:
        target = -torch.log1p(_t64(sigma) ** 2)  # log alpha_bar at that level, decreasing in the index
        neg = -self._log_ab  # increasing
        lo, hi = float(neg[0]), float(neg[-1])
        if bool(((-target < lo - 1e-12) | (-target > hi + 1e-12)).any()):
            raise ValueError(
                f"noise level {sigma} is outside the DDPM schedule's range "
                f"[{math.sqrt(math.expm1(lo)):.4g}, {math.sqrt(math.expm1(hi)):.4g}]"
            )
        x = (-target).clamp(lo, hi)
        i1 = torch.searchsorted(neg, x.reshape(-1), right=False).clamp(1, self.N - 1)
        i0 = i1 - 1
        w = (x.reshape(-1) - neg[i0]) / (neg[i1] - neg[i0])
        return ((i0.to(F64) + w) / (self.N - 1)).reshape(x.shape)

    def sde(self, x: torch.Tensor, t: TimeArg) -> tuple[torch.Tensor, torch.Tensor]:
        u = self._index(t)
        i0 = torch.floor(u).long().clamp(max=self.N - 2)
        beta = -(self._log_ab[i0 + 1] - self._log_ab[i0]) * (self.N - 1)  # -d log(alpha_bar) / dt
        return -0.5 * _bcast(beta, x) * x, _bcast(torch.sqrt(beta), x)

    def noise_label(self, t: TimeArg) -> torch.Tensor:
        return self._index(t)

    def discrete_times(self) -> torch.Tensor:
        return torch.arange(self.N, dtype=F64) / (self.N - 1)

    def describe(self) -> dict:
        b = self.schedule.betas
        return {"type": "ddpm", "timesteps": self.N, "beta_start": float(b[0]), "beta_end": float(b[-1])}


def score_from_eps(eps: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The score of a noise-prediction model: -eps / std (std broadcast over eps)."""
    return -eps / std


def get_score_fn(sde: SDE, net: torch.nn.Module) -> ScoreFn:
    """``score(x, t)`` with ``t`` of shape (B,) for a network trained on ``sde`` (score_sde's ``get_score_fn``).

    VE: the network is conditioned on sigma(t) and its output already is the score (it divides by sigma).
    VP and the DDPM view: the network predicts the noise from its label (999 t, or the DDPM index); score = -out / std.
    """

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = sde.noise_label(t).to(device=x.device, dtype=torch.float32)
        out = net(x, labels).to(x.dtype)
        if sde.kind == "ve":
            return out
        return score_from_eps(out, _bcast(sde.std(t), x))

    return score_fn


def max_pairwise_distance(images: torch.Tensor, chunk: int = 64) -> float:
    """Largest L2 distance between two of ``images`` (N, ...) (Song & Ermon 2020, technique 1, for sigma_max)."""
    if images.shape[0] < 2:
        raise ValueError("need at least two images to measure their largest distance")
    flat = images.reshape(images.shape[0], -1).to(F64)
    best = 0.0
    for i in range(0, flat.shape[0], chunk):
        best = max(best, float(torch.cdist(flat[i : i + chunk], flat).max()))
    return best
