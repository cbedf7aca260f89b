"""Method B inference: DDAD-conditioned, blur-guided partial-noise DDIM reconstruction.

Spec ``method_b_conditioned_blur_ddpm.md`` §3.2. For a test batch x in [-1, 1] (target y = x):

    x_t <- sqrt(ab_ts) x + sqrt(1 - ab_ts) z                       # partial noising to t_start
    for (t, t') in DDAD's grid (225 -> 200 -> ... -> 0 -> -1 at the defaults):
        eps   <- model(x_t, t)
        y_t   <- sqrt(ab_t) y + sqrt(1 - ab_t) eps
        eps_c <- eps - w sqrt(1 - ab_t) (y_t - x_t)                # DDAD conditioning
        if s > 0:                                                  # blur guidance (SAG, mask = 1)
            x0_c  <- (x_t - sqrt(1 - ab_t) eps_c) / sqrt(ab_t)
            xbar  <- sqrt(ab_t) G(x0_c) + sqrt(1 - ab_t) eps_c
            eps_g <- eps_c + s (eps - model(xbar, t))
        else:
            eps_g <- eps_c
        x_t   <- DDIM(eta) update of x_t with eps_g
    return the last x0 estimate

Randomness: image ``i`` of the batch draws all of its noise (z, then one z' per step when eta > 0) from
its own ``torch.Generator`` seeded with ``seeds[i]``, in the same order as ``partial_noise`` followed by
``DDIMSampler.step`` would for a batch of one. The result for an image therefore does not depend on which
other images share its batch.

``draws`` > 1 (CHOSEN, not in the papers; 1 = DDAD): the reconstruction is the mean of that many runs of the
loop, each from its own noise (draw k of image i seeded with ``draw_seed(seeds[i], k)``; draw 0 is the
single-draw run). The mean estimates E[x0 | x] better than one sample: the residual on normal texture is
partly the sampler's own noise, which averaging removes, while a defect that the model does not reproduce stays.
Cost: ``draws`` times the network evaluations.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from texad.diffusion.samplers import DDIMSampler, randn_like
from texad.diffusion.schedules import NoiseSchedule

if TYPE_CHECKING:
    from .settings import Inference

__all__ = [
    "gaussian_blur",
    "gaussian_kernel1d",
    "time_grid",
    "condition_eps",
    "blur_guidance_input",
    "draw_seed",
    "reconstruct",
]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------ blur
def gaussian_kernel1d(sigma: float, kernel: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-d Gaussian weights at offsets -(k//2) .. k//2 (torchvision's convention)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
    half = kernel // 2
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (offsets / float(sigma)) ** 2)
    return (w / w.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur of every channel of ``x`` (N, C, H, W) with reflect padding.

    Same weights and boundary as ``torchvision.transforms.v2.functional.gaussian_blur(x, [k, k],
    [sigma, sigma])``. Reflect padding needs ``kernel // 2 < min(H, W)``.
    """
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(x.shape)}")
    half = kernel // 2
    if half >= x.shape[-1] or half >= x.shape[-2]:
        raise ValueError(f"kernel {kernel} too large for reflect padding of a {tuple(x.shape[-2:])} image")
    c = x.shape[1]
    k1 = gaussian_kernel1d(sigma, kernel, dtype=x.dtype).to(x.device)
    kh = k1.view(1, 1, 1, kernel).expand(c, 1, 1, kernel)
    kv = k1.view(1, 1, kernel, 1).expand(c, 1, kernel, 1)
    y = F.pad(x, (half, half, half, half), mode="reflect")
    y = F.conv2d(y, kh, groups=c)
    return F.conv2d(y, kv, groups=c)


# ----------------------------------------------------------------------------------- loop pieces
def time_grid(schedule: NoiseSchedule, settings: Inference) -> list[tuple[int, int]]:
    """(t, t_prev) pairs of the loop: DDAD's ``range(0, t_start, skip)`` walked backwards (first call below
    ``t_start``), preceded by ``(t_start, seq[-1])`` when ``first_call_at_ts``."""
    steps = DDIMSampler(schedule).timesteps(settings.t_start, settings.skip)
    if settings.first_call_at_ts:
        if settings.t_start >= schedule.num_timesteps:
            raise ValueError(
                f"first_call_at_ts needs t_start < T = {schedule.num_timesteps}, got {settings.t_start}"
            )
        steps = [(settings.t_start, steps[0][0]), *steps]
    return steps


def condition_eps(
    schedule: NoiseSchedule, eps: torch.Tensor, x_t: torch.Tensor, y: torch.Tensor, t: int, w: float
) -> torch.Tensor:
    """DDAD conditioning: eps - w sqrt(1 - ab_t) (y_t - x_t), y_t = sqrt(ab_t) y + sqrt(1 - ab_t) eps."""
    if w == 0:
        return eps
    ab = schedule.alpha_bar_like(t, x_t)
    b = torch.sqrt(1.0 - ab)
    y_t = torch.sqrt(ab) * y + b * eps
    return eps - w * b * (y_t - x_t)


def blur_guidance_input(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps_c: torch.Tensor,
    t: int,
    sigma: float,
    kernel: int,
    clip_x0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_bar_t, x0_c): the degraded input of the guidance pass, sqrt(ab) G(x0_c) + sqrt(1 - ab) eps_c,
    with x0_c the (optionally clamped) x0 estimate of ``eps_c``."""
    x0 = schedule.predict_x0(x_t, t, eps_c)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    ab = schedule.alpha_bar_like(t, x_t)
    x_bar = torch.sqrt(ab) * gaussian_blur(x0, sigma, kernel) + torch.sqrt(1.0 - ab) * eps_c
    return x_bar, x0


def _draw(x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Per-image standard normal noise: row i from ``generators[i]``."""
    return torch.cat([randn_like(x[i : i + 1], g) for i, g in enumerate(generators)], dim=0)


def draw_seed(seed: int, draw: int) -> int:
    """The noise seed of reconstruction ``draw`` of an image whose seed is ``seed`` (draw 0: ``seed`` itself)."""
    return int(seed) if draw == 0 else zlib.crc32(f"{int(seed)}/draw{int(draw)}".encode()) & 0x7FFFFFFF


def _reconstruct_once(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: Inference,
    steps: list[tuple[int, int]],
    generators: Sequence[torch.Generator],
) -> tuple[torch.Tensor, int]:
    """One run of the loop (module docstring) from the noise of ``generators``: (final x0 estimate, NFE)."""
    sampler = DDIMSampler(schedule, eta=settings.eta, clip_x0=settings.clip_x0)
    nfe = 0
    x_t = schedule.q_sample(x, settings.t_start, _draw(x, generators))
    x0_hat = x_t
    for t, t_prev in steps:
        t_vec = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_model(x_t, t_vec).to(x_t.dtype)
        nfe += 1
        eps_g = condition_eps(schedule, eps, x_t, y, t, settings.w)
        if settings.s > 0:
            x_bar, _ = blur_guidance_input(
                schedule, x_t, eps_g, t, settings.blur_sigma, settings.blur_kernel, settings.clip_x0
            )
            eps_bar = eps_model(x_bar, t_vec).to(x_t.dtype)
            nfe += 1
            eps_g = eps_g + settings.s * (eps - eps_bar)
        noise = _draw(x_t, generators) if settings.eta > 0 else None
        out = sampler.step(eps_g, t, t_prev, x_t, noise=noise)
        x_t, x0_hat = out.prev_sample, out.pred_x0
    return x0_hat, nfe


# ------------------------------------------------------------------------------------------- API
def reconstruct(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    settings: Inference,
    *,
    seeds: Sequence[int],
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Reconstruct the batch ``x`` (N, C, H, W) in [-1, 1] (spec §3.2); ``eps_model(x_t, t)`` takes a (N,)
        long tensor of timesteps and returns the noise estimate; ``settings``: the loop's keys of Method B's inference
    (``t_start``, ``skip``, ``eta``, ``w``, ``s``, ``blur_sigma``, ``blur_kernel``, ``clip_x0``, ``first_call_at_ts``,
    ``draws``). ``target`` is the conditioning image y (default
        ``x`` itself, as at test time; DDAD's domain adaptation conditions one image on another).

        ``seeds[i]`` seeds the CPU generator of image i (see the module docstring). Runs under
        ``torch.no_grad()``. Returns ``(x_rec, info)`` with ``x_rec`` the final x0 estimate, averaged over the
        draws (same shape, dtype and device as ``x``), and ``info`` = {"nfe_per_image", "timesteps"}.
    """
    if x.ndim != 4:
        raise ValueError(f"expected x of shape (N, C, H, W), got {tuple(x.shape)}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != x.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for a batch of {x.shape[0]}")
    if target is not None and target.shape != x.shape:
        raise ValueError(f"target {tuple(target.shape)} must have the shape of x {tuple(x.shape)}")
    if settings.t_start > schedule.num_timesteps - 1:
        raise ValueError(f"t_start must be < T = {schedule.num_timesteps}, got {settings.t_start}")
    steps = time_grid(schedule, settings)
    y = x if target is None else target
    x_rec, nfe = None, 0
    with torch.no_grad():
        for k in range(settings.draws):
            generators = [torch.Generator(device="cpu").manual_seed(draw_seed(s, k)) for s in seeds]
            x0_hat, n = _reconstruct_once(eps_model, schedule, x, y, settings, steps, generators)
            x_rec, nfe = (x0_hat if x_rec is None else x_rec + x0_hat), nfe + n
        if settings.draws > 1:
            x_rec = x_rec / settings.draws
    info = {
        "nfe_per_image": nfe,
        "timesteps": [t for t, _ in steps],
    }
    return x_rec, info
