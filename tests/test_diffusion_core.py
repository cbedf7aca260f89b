"""Closed-form checks of the diffusion core: schedule, forward process, posterior, samplers, loss."""

from __future__ import annotations

import math

import pytest
import torch

from texad.diffusion import (
    DDIMSampler,
    DDPMSampler,
    NoiseSchedule,
    epsilon_loss,
    partial_noise,
    sample_loop,
)

F64 = torch.float64


def _hand_linear(T: int, b0: float, b1: float) -> tuple[list[float], list[float]]:
    """Betas and alpha_bar computed with Python floats, independently of the code under test."""
    betas = [b0 + (b1 - b0) * i / (T - 1) for i in range(T)]
    ab, acc = [], 1.0
    for b in betas:
        acc *= 1.0 - b
        ab.append(acc)
    return betas, ab


@pytest.fixture(scope="module")
def sch() -> NoiseSchedule:
    return NoiseSchedule.linear()


def _oracle(schedule: NoiseSchedule, x0: torch.Tensor):
    """A perfect eps-predictor for a known x0."""

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return schedule.predict_eps(x, t, x0)

    return eps_fn


# ---------------------------------------------------------------- schedule


def test_alpha_bar_small_T_by_hand():
    s = NoiseSchedule.linear(timesteps=3, beta_start=0.1, beta_end=0.3)
    torch.testing.assert_close(s.betas, torch.tensor([0.1, 0.2, 0.3], dtype=F64))
    # 0.9, 0.9*0.8, 0.9*0.8*0.7
    torch.testing.assert_close(s.alpha_bar, torch.tensor([0.9, 0.72, 0.504], dtype=F64), rtol=0, atol=1e-15)
    assert s.alpha_bar.dtype == F64
    assert float(s.alpha_bar_at(-1)) == 1.0
    torch.testing.assert_close(
        s.alpha_bar_at(torch.tensor([-1, 0, 2])), torch.tensor([1.0, 0.9, 0.504], dtype=F64)
    )
    with pytest.raises(IndexError):
        s.alpha_bar_at(3)
    with pytest.raises(IndexError):
        s.alpha_bar_at(-2)


def test_alpha_bar_default_linear_is_cumprod(sch):
    betas, ab = _hand_linear(1000, 1e-4, 0.02)
    assert sch.num_timesteps == 1000
    torch.testing.assert_close(sch.betas, torch.tensor(betas, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(sch.alpha_bar, torch.cumprod(1 - sch.betas, 0), rtol=0, atol=0)
    torch.testing.assert_close(sch.alpha_bar, torch.tensor(ab, dtype=F64), rtol=1e-12, atol=0)
    assert float(sch.alpha_bar_at(249)) == pytest.approx(ab[249], rel=1e-12)
    # A known landmark: alpha_bar_999 for the DDPM schedule is ~4.04e-5.
    assert float(sch.alpha_bar[-1]) == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_schedule_matches_closed_form():
    T, s = 100, 0.008
    sc = NoiseSchedule.cosine(timesteps=T, s=s)

    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    assert bool((sc.betas <= 0.999).all()) and bool((sc.betas > 0).all())
    assert bool((sc.alpha_bar[1:] < sc.alpha_bar[:-1]).all())
    # Telescoping product: alpha_bar_t = f((t+1)/T) / f(0) wherever no beta was clipped.
    unclipped = int((sc.betas < 0.999).to(torch.int64).cumprod(0).sum())
    assert unclipped >= T - 2
    for t in range(unclipped):
        assert float(sc.alpha_bar[t]) == pytest.approx(f((t + 1) / T) / f(0), rel=1e-10)


def test_schedule_to_device(sch):
    s2 = sch.to("cpu")
    assert s2 is not sch
    torch.testing.assert_close(s2.alpha_bar, sch.alpha_bar)
    assert s2.alpha_bar.dtype == F64


# ---------------------------------------------------------------- forward process


def test_q_sample_exact(sch):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=F64)
    noise = torch.randn(3, 2, 4, 4, generator=g, dtype=F64)
    t = torch.tensor([0, 249, 999])
    _, ab = _hand_linear(1000, 1e-4, 0.02)

    out0 = sch.q_sample(x0, t, torch.zeros_like(x0))
    out = sch.q_sample(x0, t, noise)
    for i, ti in enumerate(t.tolist()):
        torch.testing.assert_close(out0[i], math.sqrt(ab[ti]) * x0[i], rtol=1e-12, atol=1e-14)
        expect = math.sqrt(ab[ti]) * x0[i] + math.sqrt(1 - ab[ti]) * noise[i]
        torch.testing.assert_close(out[i], expect, rtol=1e-12, atol=1e-14)
    # Scalar t broadcasts to every item.
    scalar = sch.q_sample(x0, 249, noise)
    torch.testing.assert_close(
        scalar, math.sqrt(ab[249]) * x0 + math.sqrt(1 - ab[249]) * noise, rtol=1e-12, atol=1e-14
    )
    with pytest.raises(ValueError):
        sch.q_sample(x0, torch.tensor([1, 2]), noise)


def test_q_sample_empirical_moments(sch):
    g = torch.Generator().manual_seed(1)
    n, t, x0v = 200_000, 100, 0.7
    x0 = torch.full((n, 1), x0v, dtype=F64)
    xt = sch.q_sample(x0, torch.full((n,), t), torch.randn(n, 1, generator=g, dtype=F64))
    ab = float(sch.alpha_bar[t])
    se_mean = math.sqrt((1 - ab) / n)
    assert abs(float(xt.mean()) - math.sqrt(ab) * x0v) < 5 * se_mean
    assert float(xt.var()) == pytest.approx(1 - ab, rel=0.02)


def test_predict_x0_and_eps_invert_q_sample(sch):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=F64)
    noise = torch.randn(4, 3, 5, 5, generator=g, dtype=F64)
    t = torch.tensor([0, 10, 500, 999])
    xt = sch.q_sample(x0, t, noise)
    torch.testing.assert_close(sch.predict_x0(xt, t, noise), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(sch.predict_eps(xt, t, x0), noise, rtol=0, atol=1e-9)
    # For moderate t the inversion is exact to float64 round-off.
    torch.testing.assert_close(sch.predict_x0(xt[1:3], t[1:3], noise[1:3]), x0[1:3], rtol=0, atol=1e-13)


@pytest.mark.parametrize("t", [1, 2, 10, 250, 999])
def test_posterior_matches_bayes(sch, t):
    betas, ab = _hand_linear(1000, 1e-4, 0.02)
    x0v, xtv = 0.37, -1.21
    # Prior q(x_{t-1}|x0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}); likelihood q(x_t|x_{t-1}) = N(sqrt(a_t) x_{t-1}, b_t).
    # Product of Gaussians in x_{t-1}: precision adds, mean is the precision-weighted average.
    a_t, b_t, ab_p = 1 - betas[t], betas[t], ab[t - 1]
    prec = 1 / (1 - ab_p) + a_t / b_t
    var = 1 / prec
    mean = var * (math.sqrt(ab_p) * x0v / (1 - ab_p) + math.sqrt(a_t) * xtv / b_t)

    m, v, logv = sch.posterior_mean_variance(
        torch.tensor([[x0v]], dtype=F64), torch.tensor([[xtv]], dtype=F64), torch.tensor([t])
    )
    assert float(m) == pytest.approx(mean, rel=1e-10, abs=1e-13)
    assert float(v) == pytest.approx(var, rel=1e-10)
    assert float(logv) == pytest.approx(math.log(var), rel=1e-10)


def test_posterior_at_t0(sch):
    x0 = torch.tensor([[0.37]], dtype=F64)
    xt = torch.tensor([[-1.21]], dtype=F64)
    m, v, logv = sch.posterior_mean_variance(x0, xt, 0)
    assert float(v) == 0.0
    assert float(m) == pytest.approx(0.37, abs=1e-12)  # x_{-1} = x0 deterministically
    assert float(logv) == pytest.approx(math.log(float(sch.posterior_variance[1])), rel=1e-12)
    assert math.isfinite(float(logv))


# ---------------------------------------------------------------- DDIM


def test_ddim_timesteps_ddad_convention(sch):
    steps = DDIMSampler(sch).timesteps(250, 25)
    assert len(steps) == 10
    assert steps[0] == (225, 200) and steps[-2] == (25, 0) and steps[-1] == (0, -1)
    assert steps == [(t, t - 25 if t > 0 else -1) for t in range(225, -1, -25)]
    assert DDIMSampler(sch).timesteps(200, 20)[0] == (180, 160)
    assert DDIMSampler(sch).timesteps(10, 1) == [(t, t - 1) for t in range(9, -1, -1)]


def test_ddim_eta0_oracle_recovers_x0_one_step(sch):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 3, 8, 8, generator=g, dtype=F64)
    noise = torch.randn(2, 3, 8, 8, generator=g, dtype=F64)
    xt = sch.q_sample(x0, 249, noise)
    smp = DDIMSampler(sch, eta=0.0)
    out = smp.step(sch.predict_eps(xt, 249, x0), 249, -1, xt)
    torch.testing.assert_close(out.prev_sample, x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.pred_x0, x0, rtol=0, atol=1e-12)


def test_ddim_eta0_oracle_follows_forward_marginals(sch):
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 3, 8, 8, generator=g, dtype=F64)
    noise = torch.randn(2, 3, 8, 8, generator=g, dtype=F64)
    smp = DDIMSampler(sch, eta=0.0)
    steps = smp.timesteps(250, 25)
    xt = sch.q_sample(x0, steps[0][0], noise)
    seen = []

    def cb(i, t, out):
        # With a perfect oracle, deterministic DDIM lands on q_sample(x0, t_prev, same noise).
        t_prev = steps[i][1]
        expect = sch.q_sample(x0, t_prev, noise) if t_prev >= 0 else x0
        torch.testing.assert_close(out.prev_sample, expect, rtol=0, atol=1e-10)
        seen.append(t)

    out = sample_loop(_oracle(sch, x0), smp, xt, steps, callback=cb)
    assert seen == [s[0] for s in steps]
    torch.testing.assert_close(out.prev_sample, x0, rtol=0, atol=1e-10)


def test_ddim_eta1_step_variance_is_c1_squared(sch):
    t, tp = 225, 200
    ab_t, ab_p = float(sch.alpha_bar[t]), float(sch.alpha_bar[tp])
    c1_hand = math.sqrt((1 - ab_t / ab_p) * (1 - ab_p) / (1 - ab_t))
    c2_hand = math.sqrt(1 - ab_p - c1_hand**2)
    smp = DDIMSampler(sch, eta=1.0)
    c1, c2 = smp.coefficients(t, tp)
    assert float(c1) == pytest.approx(c1_hand, rel=1e-12)
    assert float(c2) == pytest.approx(c2_hand, rel=1e-12)

    g = torch.Generator().manual_seed(5)
    n = 100_000
    x0 = torch.randn(n, 1, generator=g, dtype=F64)
    xt = sch.q_sample(x0, t, torch.randn(n, 1, generator=g, dtype=F64))
    eps = torch.randn(n, 1, generator=g, dtype=F64)  # any eps: the step is affine in z
    mean = smp.step(eps, t, tp, xt, noise=torch.zeros_like(xt)).prev_sample
    # Exact: the noise enters with coefficient c1.
    z = torch.randn(n, 1, generator=g, dtype=F64)
    torch.testing.assert_close(smp.step(eps, t, tp, xt, noise=z).prev_sample - mean, c1_hand * z)
    # Empirical: with generator-drawn noise the step variance around the mean is c1^2.
    draw = smp.step(eps, t, tp, xt, generator=g).prev_sample
    assert float((draw - mean).var()) == pytest.approx(c1_hand**2, rel=0.02)
    # eta = 1 with adjacent steps is the DDPM posterior variance.
    c1_adj, _ = smp.coefficients(500, 499)
    assert float(c1_adj) ** 2 == pytest.approx(float(sch.posterior_variance[500]), rel=1e-10)
    # The last step (t_prev = -1) is deterministic and returns x0_hat.
    c1_last, c2_last = smp.coefficients(0, -1)
    assert float(c1_last) == 0.0 and float(c2_last) == 0.0


def test_ddim_clip_flag(sch):
    x0 = torch.full((1, 1, 2, 2), 3.0, dtype=F64)
    noise = torch.zeros_like(x0)
    xt = sch.q_sample(x0, 100, noise)
    eps = sch.predict_eps(xt, 100, x0)
    assert float(DDIMSampler(sch).step(eps, 100, -1, xt).prev_sample.max()) == pytest.approx(3.0)
    clipped = DDIMSampler(sch, clip_x0=True).step(eps, 100, -1, xt)
    assert float(clipped.pred_x0.max()) == 1.0 and float(clipped.prev_sample.max()) == pytest.approx(1.0)


# ---------------------------------------------------------------- DDPM


def test_ddpm_timesteps(sch):
    smp = DDPMSampler(sch)
    full = smp.timesteps()
    assert len(full) == 1000 and full[0] == 999 and full[-1] == 0
    assert smp.timesteps(5) == [5, 4, 3, 2, 1, 0]
    with pytest.raises(ValueError):
        smp.timesteps(1000)


@pytest.mark.parametrize("t", [1, 250, 999])
def test_ddpm_step_oracle_mean_and_variance(sch, t):
    betas, ab = _hand_linear(1000, 1e-4, 0.02)
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    xt = sch.q_sample(x0, t, torch.randn(2, 3, 4, 4, generator=g, dtype=F64))
    smp = DDPMSampler(sch)
    eps = sch.predict_eps(xt, t, x0)
    mean = smp.step(eps, t, xt, noise=torch.zeros_like(xt)).prev_sample
    # Bayes posterior mean (product of Gaussians), computed independently.
    a_t, b_t, ab_p = 1 - betas[t], betas[t], ab[t - 1]
    var = 1 / (1 / (1 - ab_p) + a_t / b_t)
    expect = var * (math.sqrt(ab_p) * x0 / (1 - ab_p) + math.sqrt(a_t) * xt / b_t)
    torch.testing.assert_close(mean, expect, rtol=1e-9, atol=1e-11)
    z = torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    out = smp.step(eps, t, xt, noise=z)
    torch.testing.assert_close(out.prev_sample - mean, math.sqrt(var) * z, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.pred_x0, x0, rtol=0, atol=1e-9)
    # variance="beta" uses beta_t instead.
    out_b = DDPMSampler(sch, variance="beta").step(eps, t, xt, noise=z)
    torch.testing.assert_close(out_b.prev_sample - mean, math.sqrt(b_t) * z, rtol=1e-9, atol=1e-12)


def test_ddpm_last_step_adds_no_noise_and_loop_recovers_x0(sch):
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(2, 1, 4, 4, generator=g, dtype=F64)
    smp = DDPMSampler(sch)
    xt0 = sch.q_sample(x0, 0, torch.randn_like(x0))
    out = smp.step(sch.predict_eps(xt0, 0, x0), 0, xt0, noise=torch.ones_like(x0))
    torch.testing.assert_close(out.prev_sample, x0, rtol=0, atol=1e-12)
    # Per-item timesteps: only the t > 0 item gets noise.
    t_mix = torch.tensor([0, 5])
    xt_mix = sch.q_sample(x0, t_mix, torch.randn_like(x0))
    eps_mix = sch.predict_eps(xt_mix, t_mix, x0)
    z = torch.ones_like(x0)
    mixed = (
        smp.step(eps_mix, t_mix, xt_mix, noise=z).prev_sample
        - smp.step(eps_mix, t_mix, xt_mix, noise=0 * z).prev_sample
    )
    assert float(mixed[0].abs().max()) == 0.0
    torch.testing.assert_close(mixed[1], math.sqrt(float(sch.posterior_variance[5])) * z[1])
    # Oracle over a partial-noising trajectory: every x0_hat is x0, so the final sample is x0.
    xt = partial_noise(sch, x0, 20, generator=g)
    final = sample_loop(_oracle(sch, x0), smp, xt, smp.timesteps(20), generator=g)
    torch.testing.assert_close(final.prev_sample, x0, rtol=0, atol=1e-9)


def test_partial_noise_uses_generator(sch):
    x0 = torch.randn(2, 3, 4, 4, dtype=F64)
    a = partial_noise(sch, x0, 250, generator=torch.Generator().manual_seed(8))
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(8), dtype=F64)
    torch.testing.assert_close(a, sch.q_sample(x0, 250, z), rtol=0, atol=0)


# ---------------------------------------------------------------- loss


def test_loss_zero_for_oracle_positive_otherwise(sch):
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    seed = 10

    def replay_oracle(x_t, t):
        # Recompute the noise the loss drew: same seed, same order (t first, then noise).
        g = torch.Generator().manual_seed(seed)
        torch.randint(0, sch.num_timesteps, (x0.shape[0],), generator=g)
        return torch.randn(x0.shape, generator=g, dtype=x0.dtype)

    loss, info = epsilon_loss(replay_oracle, sch, x0, generator=torch.Generator().manual_seed(seed))
    assert float(loss) == 0.0
    assert info["t"].shape == (4,) and info["t"].dtype == torch.long
    assert int(info["t"].min()) >= 0 and int(info["t"].max()) < 1000

    # A model that knows x0 (float64 to make the inversion exact).
    x64 = x0.double()

    def x0_oracle(x, t):
        return sch.predict_eps(x, t, x64)

    loss64, _ = epsilon_loss(x0_oracle, sch, x64, generator=torch.Generator().manual_seed(seed))
    assert float(loss64) < 1e-12

    # A zero model: loss = mean over batch of sum(noise^2); "mean" divides by C*H*W.
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    loss_z, _ = epsilon_loss(zero, sch, x0, generator=torch.Generator().manual_seed(seed))
    noise = replay_oracle(None, None)
    assert float(loss_z) > 0
    assert float(loss_z) == pytest.approx(float(noise.pow(2).sum() / 4), rel=1e-6)
    loss_m, _ = epsilon_loss(zero, sch, x0, generator=torch.Generator().manual_seed(seed), reduction="mean")
    assert float(loss_m) == pytest.approx(float(loss_z) / (3 * 8 * 8), rel=1e-6)

    # Gradients flow into a model's parameters.
    w = torch.zeros((), requires_grad=True)
    loss_w, _ = epsilon_loss(lambda x, t: w * x, sch, x0, generator=torch.Generator().manual_seed(seed))
    loss_w.backward()
    assert w.grad is not None and float(w.grad) != 0.0


def test_loss_explicit_t_and_noise(sch):
    x0 = torch.randn(2, 1, 3, 3, dtype=F64)
    t = torch.tensor([5, 700])
    noise = torch.randn_like(x0)
    seen = {}

    def model(x, tt):
        seen["x"], seen["t"] = x, tt
        return torch.zeros_like(x)

    loss, info = epsilon_loss(model, sch, x0, t=t, noise=noise)
    torch.testing.assert_close(seen["x"], sch.q_sample(x0, t, noise))
    assert seen["t"].tolist() == [5, 700]
    torch.testing.assert_close(info["per_sample"], noise.pow(2).flatten(1).sum(1))


# ---------------------------------------------------------------- determinism and dtype


def test_determinism_with_seeded_generator(sch):
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(11))

    def eps_fn(x, t):
        return 0.1 * x + 0.001 * t.view(-1, 1, 1, 1).to(x.dtype)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        smp = DDIMSampler(sch, eta=1.0)
        xt = partial_noise(sch, x0, 250, generator=g)
        return sample_loop(eps_fn, smp, xt, smp.timesteps(250, 25), generator=g).prev_sample

    a, b, c = run(42), run(42), run(43)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)

    def loss(seed):
        return epsilon_loss(lambda x, t: 0.5 * x, sch, x0, generator=torch.Generator().manual_seed(seed))

    (l1, i1), (l2, i2), (l3, _) = loss(1), loss(1), loss(2)
    assert torch.equal(l1, l2) and torch.equal(i1["t"], i2["t"])
    assert float(l1) != float(l3)


def test_float32_stays_float32(sch):
    g = torch.Generator().manual_seed(12)
    x0 = torch.randn(2, 3, 4, 4, generator=g)
    noise = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([3, 400])
    xt = sch.q_sample(x0, t, noise)
    assert xt.dtype == torch.float32
    assert sch.predict_x0(xt, t, noise).dtype == torch.float32
    assert sch.predict_eps(xt, t, x0).dtype == torch.float32
    m, v, lv = sch.posterior_mean_variance(x0, xt, t)
    assert m.dtype == v.dtype == lv.dtype == torch.float32
    assert DDPMSampler(sch).step(noise, 400, xt, generator=g).prev_sample.dtype == torch.float32
    assert DDIMSampler(sch, eta=1.0).step(noise, 400, 375, xt, generator=g).prev_sample.dtype == torch.float32
    assert partial_noise(sch, x0, 250, generator=g).dtype == torch.float32
    loss, _ = epsilon_loss(lambda x, tt: torch.zeros_like(x), sch, x0, generator=g)
    assert loss.dtype == torch.float32
    # float32 round trip is accurate to single precision.
    torch.testing.assert_close(sch.predict_x0(xt, t, noise), x0, rtol=1e-4, atol=1e-4)
