"""Tests of the SDE core of Method A: VE/VP/DDPM-view marginals, the sparse-grid reverse step, the DSM loss and
the NCSN++ score network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from texad.diffusion.ncsnpp import PRESETS, build_ncsnpp, count_parameters, fir_downsample, fir_upsample
from texad.diffusion.samplers import DDPMSampler
from texad.diffusion.schedules import NoiseSchedule
from texad.diffusion.score_losses import dsm_loss, sample_times
from texad.diffusion.sde import (
    VESDE,
    VPSDE,
    DiscreteVP,
    get_score_fn,
    max_pairwise_distance,
    score_from_eps,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ marginals
def test_ve_marginal_and_diffusion_match_the_closed_form():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
    expected = 0.01 * (50.0 / 0.01) ** t
    assert torch.allclose(sde.std(t), expected, rtol=1e-12)
    assert torch.equal(sde.mean_coeff(t), torch.ones(4, dtype=F64))
    assert torch.allclose(sde.sigma(t), expected, rtol=1e-12)
    assert torch.allclose(sde.time_of_sigma(expected), t, atol=1e-12)
    # g(t)^2 = d sigma(t)^2 / dt (VE: the variance grows exactly by the diffusion)
    x = torch.zeros(2, 1, 1, 1, dtype=F64)
    _, g = sde.sde(x, torch.tensor([0.3, 0.3], dtype=F64))
    h = 1e-6
    dvar = (float(sde.std(0.3 + h)) ** 2 - float(sde.std(0.3 - h)) ** 2) / (2 * h)
    assert float(g[0, 0, 0, 0]) ** 2 == pytest.approx(dvar, rel=1e-6)
    x0 = torch.full((2, 3, 4, 4), 0.7, dtype=F64)
    mean, std = sde.marginal_prob(x0, torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.equal(mean, x0) and std.shape == (2, 1, 1, 1)
    assert float(std[1]) == pytest.approx(50.0)
    # the reference grid is score_sde's exp(linspace(ln sigma_min, ln sigma_max, N))
    grid = VESDE(0.01, 50.0, N=7)
    want = torch.exp(torch.linspace(math.log(0.01), math.log(50.0), 7, dtype=F64))
    assert torch.allclose(grid.sigma(grid.discrete_times()), want, rtol=1e-12)


def test_vp_marginal_matches_the_integrated_moment_equations():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    # dm/dt = -beta m / 2, dv/dt = beta (1 - v): integrate from m = 1, v = 0 with small RK4 steps
    beta = lambda t: 0.1 + t * 19.9  # noqa: E731

    def f(t, y):
        return np.array([-0.5 * beta(t) * y[0], beta(t) * (1.0 - y[1])])

    y, t, h = np.array([1.0, 0.0]), 0.0, 1e-4
    checkpoints = {0.05: None, 0.3: None, 1.0: None}
    for _ in range(10000):
        k1 = f(t, y)
        k2 = f(t + h / 2, y + h / 2 * k1)
        k3 = f(t + h / 2, y + h / 2 * k2)
        k4 = f(t + h, y + h * k3)
        y, t = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + h
        for c in checkpoints:
            if abs(t - c) < h / 2:
                checkpoints[c] = y.copy()
    for c, (m, v) in checkpoints.items():
        assert float(sde.mean_coeff(c)) == pytest.approx(m, rel=1e-8)
        assert float(sde.std(c)) ** 2 == pytest.approx(v, rel=1e-7)
    ts = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=F64)
    assert torch.allclose(sde.time_of_sigma(sde.sigma(ts)), ts, rtol=1e-10)
    drift, g = sde.sde(torch.ones(1, 1, 1, 1, dtype=F64), torch.tensor([0.5], dtype=F64))
    assert float(drift) == pytest.approx(-0.5 * beta(0.5)) and float(g) == pytest.approx(math.sqrt(beta(0.5)))


def test_ddpm_view_is_exact_on_the_schedule_steps():
    sch = NoiseSchedule.linear(1000, 1e-4, 0.02)
    sde = DiscreteVP(sch)
    idx = torch.tensor([0, 1, 249, 500, 999])
    t = idx.to(F64) / 999
    assert torch.allclose(sde.mean_coeff(t) ** 2, sch.alpha_bar[idx], rtol=1e-12)
    assert torch.allclose(sde.std(t) ** 2, 1 - sch.alpha_bar[idx], rtol=1e-10)
    assert torch.allclose(sde.noise_label(t), idx.to(F64), atol=1e-9)
    assert torch.allclose(sde.time_of_sigma(sde.sigma(t)), t, atol=1e-12)
    # between two steps log alpha_bar is linear in the index
    mid = float(sde.mean_coeff(torch.tensor(249.5 / 999, dtype=F64))) ** 2
    assert mid == pytest.approx(math.sqrt(float(sch.alpha_bar[249] * sch.alpha_bar[250])), rel=1e-12)
    with pytest.raises(ValueError, match="outside"):
        sde.time_of_sigma(1e-4)


class _LabelledEps(torch.nn.Module):
    """eps(x, label): a fixed nonlinear function of x and the label; records the labels it got."""

    def __init__(self):
        super().__init__()
        self.labels: list[torch.Tensor] = []

    def forward(self, x, label):
        self.labels.append(label.detach().clone())
        return torch.sin(3 * x) + 0.001 * label.view(-1, 1, 1, 1).to(x.dtype)


def test_score_of_the_shared_ddpm_is_minus_eps_over_std():
    sch = NoiseSchedule.linear(1000, 1e-4, 0.02)
    sde = DiscreteVP(sch)
    net = _LabelledEps()
    score_fn = get_score_fn(sde, net)
    x = torch.randn(3, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    i = torch.tensor([10, 250, 700])
    s = score_fn(x, i.to(F64) / 999)
    assert torch.allclose(net.labels[-1], i.float())
    eps = net(x, i.float())
    std = torch.sqrt(1 - sch.alpha_bar[i]).view(-1, 1, 1, 1)
    assert torch.allclose(s, -eps / std, rtol=1e-6)
    assert torch.allclose(score_from_eps(eps, std), -eps / std)


def test_ve_score_fn_passes_sigma_and_keeps_the_output():
    sde = VESDE(0.01, 30.0)
    net = _LabelledEps()
    x = torch.rand(2, 3, 4, 4, dtype=F64)
    t = torch.tensor([0.2, 0.9], dtype=F64)
    s = get_score_fn(sde, net)(x, t)
    assert torch.allclose(net.labels[-1], sde.std(t).float())
    assert torch.allclose(s, net(x, sde.std(t).float()))
    vp = VPSDE()
    s_vp = get_score_fn(vp, net)(x, t)
    assert torch.allclose(net.labels[-1], (999 * t).float())
    assert torch.allclose(s_vp, -net(x, (999 * t).float()) / vp.std(t).view(-1, 1, 1, 1), rtol=1e-6)


# ------------------------------------------------------------------------------------- reverse step
def test_ve_sparse_grid_step_against_hand_computation():
    sde = VESDE(0.01, 50.0, N=2000)
    t, t_next = float(sde.time_of_sigma(0.4)), float(sde.time_of_sigma(0.1))
    x = torch.tensor([[[[0.3]]]], dtype=F64)
    s = torch.tensor([[[[-2.0]]]], dtype=F64)
    z = torch.tensor([[[[0.7]]]], dtype=F64)
    out, mean = sde.reverse_step(x, s, t, t_next, noise=z)
    step = 0.4**2 - 0.1**2
    assert float(mean) == pytest.approx(0.3 + step * -2.0, rel=1e-12)
    assert float(out) == pytest.approx(0.3 + step * -2.0 + math.sqrt(step) * 0.7, rel=1e-12)
    # score_sde's discretize would have used the ADJACENT level of the N-grid, sigma_{i-1}, not 0.1
    i = round(t * (sde.N - 1))
    adjacent = float(sde.std((i - 1) / (sde.N - 1)))
    wrong = 0.3 + (0.4**2 - adjacent**2) * -2.0
    assert abs(float(mean) - wrong) > 0.1
    # to the clean end: Tweedie's x + sigma^2 s, no noise
    clean, _ = sde.reverse_step(x, s, t, None)
    assert float(clean) == pytest.approx(0.3 - 2.0 * 0.16, rel=1e-12)
    with pytest.raises(ValueError, match="noise"):
        sde.reverse_step(x, s, t, t_next)
    with pytest.raises(ValueError, match="t_next < t"):
        sde.reverse_step(x, s, t_next, t, noise=z)


def test_vp_sparse_grid_step_against_hand_computation():
    sde = VPSDE()
    t, t_next = 0.4, 0.05
    a_t, a_n = float(sde.mean_coeff(t)), float(sde.mean_coeff(t_next))
    r = a_t / a_n
    v = 1 - r**2
    x, s, z = 0.8, 1.5, -0.4
    out, _ = sde.reverse_step(
        torch.full((1, 1), x, dtype=F64),
        torch.full((1, 1), s, dtype=F64),
        t,
        t_next,
        torch.full((1, 1), z, dtype=F64),
    )
    assert float(out) == pytest.approx((x + v * s) / r + math.sqrt(v) * z, rel=1e-12)
    clean, _ = sde.reverse_step(torch.full((1, 1), x, dtype=F64), torch.full((1, 1), s, dtype=F64), t, None)
    std = float(sde.std(t))
    assert float(clean) == pytest.approx((x + std**2 * s) / a_t, rel=1e-12)


def test_ddpm_view_full_grid_step_is_the_ddpm_ancestral_step():
    """On adjacent DDPM steps the generic reverse step is DDPM's ancestral step with variance beta_t."""
    sch = NoiseSchedule.linear(1000, 1e-4, 0.02)
    sde = DiscreteVP(sch)
    sampler = DDPMSampler(sch, variance="beta")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 4, dtype=F64, generator=g)
    eps = torch.randn(2, 3, 4, 4, dtype=F64, generator=g)
    z = torch.randn(2, 3, 4, 4, dtype=F64, generator=g)
    for i in (1, 120, 999):
        std = float(sde.std(i / 999))
        ours, _ = sde.reverse_step(x, -eps / std, i / 999, (i - 1) / 999, noise=z)
        ref = sampler.step(eps, i, x, noise=z).prev_sample
        assert torch.allclose(ours, ref, atol=1e-10), i
    ours0, _ = sde.reverse_step(x, -eps / float(sde.std(0.0)), 0.0, None)
    assert torch.allclose(ours0, sampler.step(eps, 0, x).prev_sample, atol=1e-10)


def test_sparse_chain_with_the_exact_score_ends_near_the_data():
    """Gaussian data N(mu, s0^2): the exact-score chain from sigma 0.4 over 40 geometric levels ends with the
    right mean and a std close to s0 (the clean end is Tweedie's estimate, variance s0^4 / (s0^2 + sigma_end^2))."""
    mu, s0 = 0.3, 0.05
    sde = VESDE(0.01, 50.0)
    g = torch.Generator().manual_seed(0)
    x0 = mu + s0 * torch.randn(20000, dtype=F64, generator=g)
    levels = np.exp(np.linspace(np.log(0.4), np.log(0.01), 40))
    x = x0 + 0.4 * torch.randn(20000, dtype=F64, generator=g)
    for j, sg in enumerate(levels):
        score = -(x - mu) / (s0**2 + sg**2)
        nxt = float(sde.time_of_sigma(levels[j + 1])) if j + 1 < len(levels) else None
        noise = torch.randn(20000, dtype=F64, generator=g) if nxt is not None else None
        x, _ = sde.reverse_step(x, score, float(sde.time_of_sigma(sg)), nxt, noise)
    assert float(x.mean()) == pytest.approx(mu, abs=2e-3)
    assert float(x.std()) == pytest.approx(s0**2 / math.sqrt(s0**2 + 0.01**2), rel=0.08)


def test_prior_and_max_pairwise_distance():
    sde = VESDE(0.01, 20.0)
    z = sde.prior_sampling((4000,), torch.Generator().manual_seed(0))
    assert float(z.std()) == pytest.approx(20.0, rel=0.05)
    imgs = torch.rand(7, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    flat = imgs.reshape(7, -1).double()
    brute = max(float((flat[i] - flat[j]).norm()) for i in range(7) for j in range(7))
    assert max_pairwise_distance(imgs, chunk=3) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(ValueError):
        max_pairwise_distance(imgs[:1])


# ------------------------------------------------------------------------------------------ DSM loss
def _gaussian_data(n: int, mu: float, s0: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mu + s0 * torch.randn(n, 3, 4, 4, dtype=F64, generator=g)


@pytest.mark.parametrize("sde", [VESDE(0.01, 5.0), VPSDE()], ids=["ve", "vp"])
def test_dsm_loss_of_the_exact_gaussian_score_is_the_closed_form_minimum(sde):
    """Data N(mu, s0^2 I): p_t = N(a mu, a^2 s0^2 + std^2), and the DSM loss of c * (exact score) per item is
    0.5 D (1 - (2c - c^2) std^2 / (a^2 s0^2 + std^2)), minimal at c = 1."""
    mu, s0, n = 0.4, 0.2, 20000
    x0 = _gaussian_data(n, mu, s0, seed=0)
    d = x0[0].numel()
    g = torch.Generator().manual_seed(1)
    t = sample_times(sde, n, "cpu", g).to(F64)
    noise = torch.randn(x0.shape, dtype=F64, generator=g)
    a, std = sde.mean_coeff(t).view(-1, 1, 1, 1), sde.std(t).view(-1, 1, 1, 1)

    def exact(c):
        return lambda x, tt: -c * (x - a * mu) / (a**2 * s0**2 + std**2)

    frac = (std**2 / (a**2 * s0**2 + std**2)).flatten()
    values = {}
    for c in (0.8, 1.0, 1.25):
        loss, info = dsm_loss(exact(c), sde, x0, t=t, noise=noise)
        values[c] = float(loss)
        closed = float((0.5 * d * (1 - (2 * c - c**2) * frac)).mean())
        assert float(loss) == pytest.approx(closed, rel=0.02), c
        assert info["per_sample"].shape == (n,)
    assert values[1.0] < values[0.8] and values[1.0] < values[1.25]
    # the zero score costs 0.5 D
    zero, _ = dsm_loss(lambda x, tt: torch.zeros_like(x), sde, x0, t=t, noise=noise)
    assert float(zero) == pytest.approx(0.5 * d, rel=0.02)


def test_dsm_loss_draws_t_in_range_and_from_the_generator():
    sde = VESDE(0.01, 5.0)
    x0 = _gaussian_data(64, 0.5, 0.1, seed=2)
    fn = lambda x, t: -x  # noqa: E731
    l1, i1 = dsm_loss(fn, sde, x0, generator=torch.Generator().manual_seed(5))
    l2, i2 = dsm_loss(fn, sde, x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(i1["t"], i2["t"]) and float(l1) == float(l2)
    assert float(i1["t"].min()) >= sde.eps and float(i1["t"].max()) <= 1.0
    with pytest.raises(ValueError, match="score shape"):
        dsm_loss(lambda x, t: x[:, :1], sde, x0)


# ----------------------------------------------------------------------------------------- NCSN++
def test_fir_resampling_hand_values():
    impulse = torch.zeros(1, 1, 6, 6)
    impulse[0, 0, 2, 2] = 1.0
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = torch.outer(k, k) / 64
    down = fir_downsample(impulse)
    assert down.shape == (1, 1, 3, 3)
    # output (i, j) sees input rows 2i-1 .. 2i+2 (padding 1): the impulse at 2 has weights k[3 - 2 + ...]
    assert float(down[0, 0, 1, 1]) == pytest.approx(float(k2[1, 1]))
    assert float(down[0, 0, 0, 0]) == pytest.approx(float(k2[3, 3]))
    const = torch.full((1, 2, 8, 8), 0.5)
    assert torch.allclose(fir_downsample(const)[..., 1:-1, 1:-1], torch.full((1, 2, 2, 2), 0.5))
    up = fir_upsample(const)
    assert up.shape == (1, 2, 16, 16)
    assert torch.allclose(up[..., 1:-1, 1:-1], torch.full((1, 2, 14, 14), 0.5))
    # up then down of a smooth ramp keeps it (the filters are normalised)
    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    back = fir_downsample(fir_upsample(ramp))
    assert torch.allclose(back[..., 2:-2, 2:-2], ramp[..., 2:-2, 2:-2], atol=1e-6)


def _randomise(net: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_ncsnpp_tiny_shapes_init_and_sigma_scaling():
    torch.manual_seed(0)
    net = build_ncsnpp("tiny", 32, 16, "ve")
    n = count_parameters(net)
    assert 100_000 < n < 600_000
    x = torch.rand(2, 3, 32, 32)
    sig = torch.tensor([0.05, 2.0])
    assert torch.equal(net(x, sig), torch.zeros(2, 3, 32, 32))  # zero-initialised heads
    _randomise(net)
    unscaled = build_ncsnpp("tiny", 32, 16, "ve", scale_by_sigma=False)
    unscaled.load_state_dict(net.state_dict())
    out, raw = net(x, sig), unscaled(x, sig)
    assert torch.allclose(out * sig.view(-1, 1, 1, 1), raw, rtol=1e-5, atol=1e-6)
    # conditioned on the noise level: same image, another sigma, another output
    same = x[:1].expand(2, -1, -1, -1)
    r2 = unscaled(same, sig)
    assert not torch.allclose(r2[0], r2[1], atol=1e-4)
    # VP variant: centered input, time label, no scaling
    vp = build_ncsnpp("tiny", 32, 16, "vp")
    assert vp.embedding == "positional" and vp.centered and not vp.scale_by_sigma
    assert vp(torch.rand(1, 3, 32, 32) * 2 - 1, torch.tensor([500.0])).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.rand(1, 3, 30, 30), sig[:1])


def test_ncsnpp_paper_preset_layout():
    with torch.device("meta"):
        net = build_ncsnpp("paper", 256, 64, "ve")
    assert net.channel_mults == PRESETS["paper"]["channel_mults"] == (1, 1, 2, 2, 2, 2, 2)
    assert net.num_res_blocks == 2
    assert net.attn_levels == (4,)  # 256 / 2**4 = 16
    assert 10_000_000 < count_parameters(net) < 25_000_000
    with torch.device("meta"):
        small = build_ncsnpp("paper", 128, 64, "ve")
    assert small.attn_levels == (4,)  # attention stays at the same depth (feature size 8 at 128 px)
    with pytest.raises(ValueError, match="preset"):
        build_ncsnpp("huge", 64, 16)


def test_ncsnpp_gradients_flow_to_every_parameter():
    torch.manual_seed(0)
    net = build_ncsnpp("tiny", 16, 8, "ve")
    _randomise(net, 1)
    loss = net(torch.rand(2, 3, 16, 16), torch.tensor([0.1, 1.0])).pow(2).sum()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
