"""Method A inference: noise injection + short reverse-SDE chains from a few start scales ("T scales").

Spec ``method_a_score_tscales.md`` §3.3-3.4. Noise levels are given in *pixel units* (images in [0, 1]) and
converted to the model's data units (x 2 for a model on [-1, 1]); every SDE is handled through its VE-equivalent
level sigma(t) = std(t) / a(t), so the same settings drive a VE score model, a VP one, or the shared DDPM.

For one scale with start level s_0 and n steps, chain levels s_0 > ... > s_{n-1} = sigma_end (geometric):

    x <- a(t_0) x_0 + std(t_0) z                                   # inject noise
    for j: s <- score(x, t_j);  M += std(t_j) ||s||_c;  x <- reverse_step(x, s, t_j, t_{j+1})   # t_n = clean end
    M <- M / n

Metrics (``metric``): ``score`` the map M above (the spec's metric A), averaged over scales and draws; ``recon``
the pixel-unit reconstruction error ||x_0 - x_hat||_c of each chain's final clean estimate; ``score_clean`` one
score evaluation per scale on the clean input perturbed once, ||x0_hat - x_0||_c^2 with Tweedie's
x0_hat = (x_t + std^2 s) / a in pixel units (= ||sigma^2 s + sigma z||^2 for VE); ``score_residual`` (texad's
addition, not in the spec) the same chain as ``score`` but each step contributes ||x0_hat_j - x_0||_c / sigma_j =
||sigma_j s_j + (x_j - x_0) / sigma_j||_c (VE): the score minus the score of the Gaussian kernel around the test
image, i.e. the per-pixel denoising-score-matching residual along the path. Why: sigma ||s|| ~ ||-z + d / sigma||
grows only quadratically in a defect offset d smaller than the noise (the chi-distributed ||z|| hides it), whereas
the residual removes the sample's own deviation from x_0 and grows linearly in d.

Scales: ``n_scales`` levels geometric from ``sigma_lo`` to ``sigma_hi`` (one scale: ``sigma_hi``). The full-length
reference chain (:func:`full_chain_levels`) starts at ``sigma_hi`` and visits every level of the SDE's own N-step
grid down to ``sigma_end``; on a VE grid (geometric) one scale with as many steps is the same chain.

Reverse step (``predictor``): "reverse_diffusion" is the spec's step (noise sqrt(sigma_j^2 - sigma_{j+1}^2));
"ancestral" draws the posterior noise instead, which keeps the sample at its level after the large jumps of a
sparse grid (see :mod:`texad.diffusion.sde`).

Defaults (a deviation from the spec, which chooses ``score`` with "reverse_diffusion"): ``score_residual`` with
"ancestral". Measured on the synthetic set (tiny model, 3 classes x 3 seeds), the spec's ``score`` gave image AUROC
0.31-0.64, near or below chance, while ``score_residual`` + "ancestral" gave 0.87-0.985. The spec's metric stays
available as a switch and is one point of the ablation.

Randomness: image i draws all its noise from its own CPU generator seeded with ``seeds[i]``, in the order
draw -> scale -> (injection, then one draw per noisy step), so results do not depend on batching.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from texad.diffusion.samplers import randn_like
from texad.diffusion.schedules import NoiseSchedule
from texad.diffusion.sde import SDE, DiscreteVP, ScoreFn, get_score_fn

if TYPE_CHECKING:
    from .settings import Inference

__all__ = [
    "ScoreModel",
    "score_model_from_net",
    "score_model_from_ddpm",
    "scale_levels",
    "chain_levels",
    "full_chain_levels",
    "raw_maps",
]


@dataclass(frozen=True)
class ScoreModel:
    """A score function on an SDE, with the map from [0, 1] images to the model's data range
    (data = ``pixel_scale`` * x + ``offset``)."""

    sde: SDE
    score_fn: ScoreFn
    pixel_scale: float = 1.0
    offset: float = 0.0
    kind: str = "own"

    def to_data(self, x01: torch.Tensor) -> torch.Tensor:
        return x01 * self.pixel_scale + self.offset

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_data`: model space -> [0, 1] pixels."""
        return (x - self.offset) / self.pixel_scale

    def level_time(self, sigma_pixel: float) -> float:
        """The SDE time whose VE-equivalent noise level is ``sigma_pixel`` (pixel units); a level outside the
        model's time range [0, 1] (e.g. above a VE model's sigma_max) is refused."""
        t = float(self.sde.time_of_sigma(sigma_pixel * self.pixel_scale))
        if not -1e-9 <= t <= 1 + 1e-9:
            lo, hi = (float(self.sde.sigma(v)) / self.pixel_scale for v in (0.0, 1.0))
            raise ValueError(
                f"noise level {sigma_pixel:g} (pixel units) is outside the model's range [{lo:.4g}, {hi:.4g}]"
            )
        return min(max(t, 0.0), 1.0)


def score_model_from_net(net: torch.nn.Module, sde: SDE) -> ScoreModel:
    """A trained NCSN++ on its SDE: VE models see [0, 1] data, VP models [-1, 1] (score_sde's ``centered``)."""
    if sde.kind == "ve":
        return ScoreModel(sde, get_score_fn(sde, net), 1.0, 0.0, "own")
    return ScoreModel(sde, get_score_fn(sde, net), 2.0, -1.0, "own")


def score_model_from_ddpm(eps_net: torch.nn.Module, schedule: NoiseSchedule) -> ScoreModel:
    """Method B's DDPM (data in [-1, 1]) as a score model: score = -eps / std on the DDPM's VP view."""
    sde = DiscreteVP(schedule)
    return ScoreModel(sde, get_score_fn(sde, eps_net), 2.0, -1.0, "shared_ddpm")


# ----------------------------------------------------------------------------------------- levels
def _geometric(start: float, stop: float, n: int) -> list[float]:
    """exp(linspace(ln start, ln stop, n)); a single level is ``start``."""
    if n == 1:
        return [float(start)]
    a, b = math.log(start), math.log(stop)
    return [math.exp(a + (b - a) * j / (n - 1)) for j in range(n)]


def scale_levels(settings: Inference) -> list[float]:
    """Start levels of the scales (pixel units), high to low: geometric from sigma_hi to sigma_lo."""
    return _geometric(settings.sigma_hi, settings.sigma_lo, settings.n_scales)


def chain_levels(start: float, sigma_end: float, steps: int) -> list[float]:
    """The levels of one short chain, ``start`` down to ``sigma_end`` (geometric, ``steps`` entries)."""
    if steps > 1 and not start > sigma_end:
        raise ValueError(f"a chain must start above its end level: start {start} <= end {sigma_end}")
    return _geometric(start, sigma_end, steps)


def full_chain_levels(model: ScoreModel, start: float, sigma_end: float) -> list[float]:
    """Every level of the SDE's own N-step grid within [sigma_end, start] (pixel units), high to low."""
    sig = model.sde.sigma(model.sde.discrete_times()) / model.pixel_scale
    tol = 1e-9
    keep = [float(s) for s in sig if sigma_end * (1 - tol) <= float(s) <= start * (1 + tol)]
    if not keep:
        raise ValueError(f"the SDE's grid has no level in [{sigma_end}, {start}]")
    return sorted(keep, reverse=True)


# -------------------------------------------------------------------------------------------- maps
def _draw(x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    return torch.cat([randn_like(x[i : i + 1], g) for i, g in enumerate(generators)], dim=0)


def _tvec(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.float64)


def _chain(
    model: ScoreModel,
    x0: torch.Tensor,
    levels: Sequence[float],
    gens: Sequence[torch.Generator],
    predictor: str = "reverse_diffusion",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One noise-and-denoise chain. Returns the step means of std ||s||_c and of the score residual
    ||x0_hat_j - x_0||_c / sigma_j (x0_hat_j = Tweedie's estimate at step j), both (B, H, W), and the final
    clean estimate."""
    sde = model.sde
    times = [model.level_time(s) for s in levels]
    x = sde.perturb(x0, _tvec(times[0], x0), _draw(x0, gens))
    acc = torch.zeros(x0.shape[0], *x0.shape[2:], dtype=x0.dtype, device=x0.device)
    res = torch.zeros_like(acc)
    for j, t in enumerate(times):
        tv = _tvec(t, x)
        s = model.score_fn(x, tv).to(x.dtype)
        acc += float(sde.std(t)) * torch.linalg.vector_norm(s, dim=1)
        x0_hat, _ = sde.reverse_step(x, s, tv, None)
        res += torch.linalg.vector_norm(x0_hat - x0, dim=1) / float(sde.sigma(t))
        t_next = times[j + 1] if j + 1 < len(times) else None
        noise = _draw(x, gens) if t_next is not None else None
        x, _ = sde.reverse_step(x, s, tv, None if t_next is None else _tvec(t_next, x), noise, predictor)
    return acc / len(times), res / len(times), x


def _clean_score(
    model: ScoreModel, x0: torch.Tensor, level: float, gens: Sequence[torch.Generator]
) -> torch.Tensor:
    """(||x0_hat - x0||_c^2 in pixel units, x0_hat) after one perturbation of the clean input to ``level``."""
    sde = model.sde
    t = model.level_time(level)
    tv = _tvec(t, x0)
    x = sde.perturb(x0, tv, _draw(x0, gens))
    s = model.score_fn(x, tv).to(x.dtype)
    x0_hat, _ = sde.reverse_step(x, s, tv, None)
    return (torch.linalg.vector_norm(x0_hat - x0, dim=1) / model.pixel_scale) ** 2, x0_hat


def raw_maps(
    model: ScoreModel,
    x01: torch.Tensor,
    settings: Inference,
    *,
    seeds: Sequence[int],
    sigma_end: float,
) -> tuple[torch.Tensor, dict]:
    """Unnormalised per-pixel maps (B, H, W) of the batch ``x01`` (B, 3, H, W) in [0, 1] (module docstring).

    ``sigma_end``: the level each chain ends at (pixel units; the config's ``sde.sigma_min``). ``settings.mode``
    ``full_chain``: the reference run, one chain from ``sigma_hi`` over the SDE's whole grid instead of the T
    scales.
    ``settings.predictor``: the reverse step (:meth:`texad.diffusion.sde.SDE.reverse_step`).
    Returns ``(maps, info)`` with info = {"nfe_per_image", "levels" (pixel units, per chain), "seconds",
    "reconstruction"}: the reconstruction is the first draw's clean estimate from the highest level (B, 3, H, W)
    in [0, 1], for the Figure-1 grids (the input's Tweedie estimate for ``score_clean``, which runs no chain).
    """
    if x01.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(x01.shape)}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != x01.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for a batch of {x01.shape[0]}")
    if settings.mode == "full_chain":
        if settings.metric == "score_clean":
            raise ValueError(
                "the full-chain reference needs a chain metric (score, score_residual or recon), not score_clean"
            )
        chains = [full_chain_levels(model, settings.sigma_hi, sigma_end)]
    else:
        chains = [chain_levels(s0, sigma_end, settings.steps_per_scale) for s0 in scale_levels(settings)]
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    start = time.perf_counter()
    nfe = 0
    reconstruction = None
    with torch.no_grad():
        x0 = model.to_data(x01)
        total = torch.zeros(x0.shape[0], *x0.shape[2:], dtype=x0.dtype, device=x0.device)
        for _ in range(settings.draws):
            for levels in chains:
                if settings.metric == "score_clean":
                    clean, x_hat = _clean_score(model, x0, levels[0], gens)
                    total += clean
                    nfe += 1
                    reconstruction = x_hat if reconstruction is None else reconstruction
                    continue
                m, r, x_hat = _chain(model, x0, levels, gens, settings.predictor)
                reconstruction = x_hat if reconstruction is None else reconstruction
                nfe += len(levels)
                if settings.metric == "score":
                    total += m
                elif settings.metric == "score_residual":
                    total += r
                else:  # recon
                    total += torch.linalg.vector_norm(x_hat - x0, dim=1) / model.pixel_scale
        maps = total / (settings.draws * len(chains))
    if x0.device.type == "cuda":
        torch.cuda.synchronize(x0.device)
    info = {
        "nfe_per_image": nfe,
        "levels": [[float(s) for s in c] for c in chains],
        "seconds": time.perf_counter() - start,
        "reconstruction": model.to_unit(reconstruction).clamp(0, 1),
    }
    return maps, info
