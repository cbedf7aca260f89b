"""Method A (score SDE + T scales): levels, chains against hand computations, the full-chain equivalence, the
metrics on an exactly known score, the map post-processing, settings vs the config schema, the ablation
variants, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from settings_checks import assert_each_grid_regenerates_its_variant, assert_settings_mirror_the_schema

from texad.config import ConfigError, validate_config
from texad.data.layout import list_samples
from texad.diffusion.samplers import randn_like
from texad.diffusion.schedules import NoiseSchedule
from texad.diffusion.sde import VESDE, VPSDE
from texad.evaluation.grid import gaussian_smooth
from texad.methods import make_settings
from texad.methods import method_a as method_a_module
from texad.methods.base import RunKey, Runtime, variant_settings
from texad.methods.jobs import run_method
from texad.methods.method_a import MethodASettings, point_name, score_train_settings, variants
from texad.methods.method_a.anomaly_map import anomaly_maps, normalise_maps, train_statistics
from texad.methods.method_a.infer import (
    ScoreModel,
    chain_levels,
    full_chain_levels,
    raw_maps,
    scale_levels,
    score_model_from_ddpm,
)
from texad.methods.method_a.settings import Inference
from texad.methods.run import run_class
from texad.results.record import method_block

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inf(**changes) -> Inference:
    """Method A's inference settings: the schema's defaults with ``changes`` (validated like a config)."""
    return make_settings("method_a", {"inference": changes}).inference


def _rejected(block: dict, key: str) -> None:
    """A config whose ``methods.method_a`` block is ``block`` is refused with an error naming ``key``."""
    with pytest.raises(ConfigError, match=f"methods\\.method_a\\.{key}"):
        validate_config({"methods": {"method_a": block}}, partial=True)


def _const_score_model(sde, c: torch.Tensor, pixel_scale: float = 1.0, offset: float = 0.0) -> ScoreModel:
    """The exact score of a data set holding one image ``c`` (data units): -(x - a c) / std^2."""

    def score(x, t):
        a = sde.mean_coeff(t).to(x.dtype).view(-1, 1, 1, 1)
        std = sde.std(t).to(x.dtype).view(-1, 1, 1, 1)
        return -(x - a * c) / std**2

    return ScoreModel(sde, score, pixel_scale, offset, "own")


def _gauss_score_model(sde, mu: float, s0: float) -> ScoreModel:
    """The exact score of data N(mu, s0^2 I) (VE): -(x - mu) / (s0^2 + sigma^2)."""

    def score(x, t):
        std = sde.std(t).to(x.dtype).view(-1, 1, 1, 1)
        return -(x - mu) / (s0**2 + std**2)

    return ScoreModel(sde, score, 1.0, 0.0, "own")


def _images(n=2, size=8, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, dtype=F64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- levels
def test_default_levels_and_chains():
    s = _inf()
    assert scale_levels(s) == pytest.approx([0.4, 0.2, 0.1, 0.05], rel=1e-12)
    assert scale_levels(_inf(n_scales=1)) == [0.4]
    assert chain_levels(0.4, 0.01, 5) == pytest.approx([0.4 * (0.01 / 0.4) ** (j / 4) for j in range(5)])
    assert chain_levels(0.4, 0.01, 1) == [0.4]
    with pytest.raises(ValueError, match="start above"):
        chain_levels(0.005, 0.01, 3)
    # values the settings used to refuse themselves: now the schema's, and its cross-key check on the range
    _rejected({"inference": {"metric": "l2"}}, "inference.metric")
    _rejected({"inference": {"predictor": "euler"}}, "inference.predictor")
    _rejected({"inference": {"sigma_lo": 0.5, "sigma_hi": 0.4}}, "inference.sigma_lo")
    assert _inf(sigma_lo=0.4, sigma_hi=0.4).sigma_lo == 0.4  # one level: allowed


def test_full_chain_levels_follow_the_sde_grid():
    sde = VESDE(0.01, 30.0, N=2000)
    model = _gauss_score_model(sde, 0.5, 0.1)
    levels = full_chain_levels(model, 0.4, 0.01)
    grid = sde.sigma(sde.discrete_times()).numpy()
    expect = sorted(grid[(grid >= 0.01 * (1 - 1e-9)) & (grid <= 0.4)], reverse=True)
    assert levels == pytest.approx(expect, rel=1e-12)
    # spec §3.4: about ln(sigma_hi / sigma_min) / ln(sigma_max / sigma_min) * N evaluations
    assert len(levels) == math.floor(math.log(40) / math.log(3000) * 1999) + 1
    # the DDPM view walks the integer steps, in pixel units (x 1/2 for [-1, 1] data)
    ddpm = score_model_from_ddpm(torch.nn.Identity(), NoiseSchedule.linear(1000, 1e-4, 0.02))
    lv = full_chain_levels(ddpm, 0.4, 0.01)
    t = ddpm.sde.time_of_sigma(torch.tensor(lv, dtype=F64) * 2) * 999
    assert torch.allclose(t, torch.round(t), atol=1e-8)
    assert np.allclose(np.diff(t.numpy()), -1.0, atol=1e-8)


# ------------------------------------------------------------------------------------------- chains
def test_one_chain_against_hand_computation():
    """Two steps, n_scales 1: M = (sigma_0 |s_0| + sigma_1 |s_1|) / 2, written out with plain tensors."""
    sde = VESDE(0.01, 30.0)
    mu, s0 = 0.5, 0.1
    model = _gauss_score_model(sde, mu, s0)
    x = _images(1, 4, seed=3)
    inf = _inf(
        n_scales=1, sigma_hi=0.3, sigma_lo=0.3, steps_per_scale=2, draws=1, metric="score",
        predictor="reverse_diffusion",
    )  # fmt: skip
    maps, info = raw_maps(model, x, inf, seeds=[11], sigma_end=0.02)
    assert info["nfe_per_image"] == 2 and info["levels"] == [pytest.approx([0.3, 0.02])]

    g = torch.Generator().manual_seed(11)
    z0 = randn_like(x, g)
    z1 = randn_like(x, g)
    xt = x + 0.3 * z0
    sc0 = -(xt - mu) / (s0**2 + 0.09)
    m = 0.3 * sc0.norm(dim=1)
    x1 = xt + (0.09 - 0.0004) * sc0 + math.sqrt(0.09 - 0.0004) * z1
    sc1 = -(x1 - mu) / (s0**2 + 0.0004)
    m = (m + 0.02 * sc1.norm(dim=1)) / 2
    assert torch.allclose(maps, m, rtol=1e-10)

    recon, _ = raw_maps(model, x, replace(inf, metric="recon"), seeds=[11], sigma_end=0.02)
    x_hat = x1 + 0.0004 * sc1
    assert torch.allclose(recon, (x_hat - x).norm(dim=1), rtol=1e-10)


def test_one_scale_with_all_steps_is_the_full_chain():
    """On the VE grid (geometric in sigma) one scale from a grid level with as many steps as the grid has levels
    down to sigma_end visits the same levels as the full-length reference chain, with the same noise."""
    sde = VESDE(0.01, 30.0, N=400)
    model = _gauss_score_model(sde, 0.5, 0.1)
    end = 0.01
    start = full_chain_levels(model, 0.4, end)[0]  # a level of the SDE's own grid
    levels = full_chain_levels(model, start, end)
    x = _images(2, 8, seed=1)
    full_inf = _inf(n_scales=1, sigma_hi=start, sigma_lo=start, draws=1, mode="full_chain")
    full, info_full = raw_maps(model, x, full_inf, seeds=[1, 2], sigma_end=levels[-1])
    ts_inf = _inf(n_scales=1, sigma_hi=start, sigma_lo=start, steps_per_scale=len(levels), draws=1)
    assert ts_inf.mode == "t_scales"
    ts, info_ts = raw_maps(model, x, ts_inf, seeds=[1, 2], sigma_end=levels[-1])
    assert info_full["nfe_per_image"] == info_ts["nfe_per_image"] == len(levels) > 50
    assert info_full["levels"][0] == pytest.approx(info_ts["levels"][0], rel=1e-10)
    assert torch.allclose(full, ts, rtol=1e-8, atol=1e-10)
    for metric in ("recon",):
        a, _ = raw_maps(model, x, replace(full_inf, metric=metric), seeds=[1, 2], sigma_end=levels[-1])
        b, _ = raw_maps(model, x, replace(ts_inf, metric=metric), seeds=[1, 2], sigma_end=levels[-1])
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_nfe_counts_and_batch_independence():
    sde = VESDE(0.01, 30.0)
    model = _gauss_score_model(sde, 0.5, 0.1)
    x = _images(3, 8, seed=2)
    inf = _inf(n_scales=3, steps_per_scale=4, draws=2)
    both, info = raw_maps(model, x, inf, seeds=[7, 8, 9], sigma_end=0.01)
    assert info["nfe_per_image"] == 3 * 4 * 2
    alone, _ = raw_maps(model, x[1:2], inf, seeds=[8], sigma_end=0.01)
    assert torch.allclose(both[1:2], alone, rtol=1e-12)
    again, _ = raw_maps(model, x, inf, seeds=[7, 8, 9], sigma_end=0.01)
    assert torch.equal(both, again)
    other, _ = raw_maps(model, x, inf, seeds=[1, 8, 9], sigma_end=0.01)
    assert not torch.allclose(other[0], both[0])
    clean, info_c = raw_maps(model, x, _inf(metric="score_clean", n_scales=3, draws=2), seeds=[7, 8, 9],
                             sigma_end=0.01)  # fmt: skip
    assert info_c["nfe_per_image"] == 3 * 2
    with pytest.raises(ValueError, match="chain metric"):
        raw_maps(model, x, _inf(metric="score_clean", mode="full_chain"), seeds=[1, 2, 3], sigma_end=0.01)
    with pytest.raises(ValueError, match="one seed per image"):
        raw_maps(model, x, inf, seeds=[1], sigma_end=0.01)


CHI3_MEAN = math.sqrt(2) * math.gamma(2) / math.gamma(1.5)  # E ||z|| for z ~ N(0, I_3)


def _expected_normal_score(model: ScoreModel, inf: Inference, end: float, predictor: str) -> float:
    """E[std ||s||_c] on a normal pixel for data = one image: the deviation x - a c stays Gaussian with variance
    V_{j+1} = V_j (r std_{j+1}^2 / std_j^2)^2 + noise variance of the step (module docstring of sde.py)."""
    sde, total = model.sde, 0.0
    starts = scale_levels(inf)
    for s0 in starts:
        times = [model.level_time(s) for s in chain_levels(s0, end, inf.steps_per_scale)]
        var = float(sde.std(times[0])) ** 2
        for j, t in enumerate(times):
            std_t = float(sde.std(t))
            total += math.sqrt(var) / std_t * CHI3_MEAN / len(times)
            if j + 1 < len(times):
                r, v = (float(a) for a in sde.transition(t, times[j + 1]))
                std_n = float(sde.std(times[j + 1]))
                noise = v if predictor == "reverse_diffusion" else v * std_n**2 / std_t**2
                var = var * (r * std_n**2 / std_t**2) ** 2 + noise
    return total / len(starts)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
@pytest.mark.parametrize("sde_kind", ["ve", "vp"])
def test_metrics_on_an_exactly_known_score_locate_the_defect(sde_kind, predictor):
    """Normal data = one image c. Then Tweedie's estimate is c exactly: ``recon`` is |x0 - c|_c and ``score_clean``
    its square whatever the noise; ``score`` has the closed-form mean on normal pixels (the ancestral step keeps
    the marginal, so every step contributes E||z||; the reverse-diffusion step leaves the sample noisier than its
    level after a large jump) and is far larger at the defect."""
    if sde_kind == "ve":
        sde, scale, offset = VESDE(0.01, 30.0), 1.0, 0.0
    else:
        sde, scale, offset = VPSDE(), 2.0, -1.0
    c01 = torch.full((1, 3, 32, 32), 0.5, dtype=F64)
    model = _const_score_model(sde, c01 * scale + offset, scale, offset)
    x = c01.clone()
    x[..., 4:8, 4:8] += 0.2  # the defect
    diff = (x - c01).norm(dim=1)
    base = dict(n_scales=2, steps_per_scale=3, draws=2, predictor=predictor)
    kw = dict(seeds=[0], sigma_end=0.01)
    recon, _ = raw_maps(model, x, _inf(metric="recon", **base), **kw)
    assert torch.allclose(recon, diff, atol=1e-9)
    clean, _ = raw_maps(model, x, _inf(metric="score_clean", **base), **kw)
    assert torch.allclose(clean, diff**2, atol=1e-9)
    inf = _inf(metric="score", **base)
    score, _ = raw_maps(model, x, inf, **kw)
    inside, outside = score[0, 4:8, 4:8], torch.cat([score[0, :4].flatten(), score[0, 8:].flatten()])
    expected = _expected_normal_score(model, inf, 0.01, predictor)
    assert float(outside.mean()) == pytest.approx(expected, rel=0.05)
    if predictor == "ancestral":
        assert expected == pytest.approx(CHI3_MEAN, rel=1e-9)
    else:
        assert expected > 2 * CHI3_MEAN
    # the chain repairs the defect (exact score), so its signal comes mostly from the first step of each chain
    # (the ancestral step gives the clearer contrast: its normal pixels are not inflated by left-over noise)
    assert float(inside.mean()) > (1.5 if predictor == "ancestral" else 1.15) * float(outside.mean())


# ---------------------------------------------------------------------------------------- map steps
def test_train_statistics_normalise_and_score_by_max():
    train = np.array([[[1.0, 2.0], [3.0, 4.0]], [[3.0, 2.0], [5.0, 8.0]]])
    stats = train_statistics(train)
    assert np.allclose(stats.mean, [[2.0, 2.0], [4.0, 6.0]])
    assert np.allclose(stats.std, [[1.0, 0.0], [1.0, 2.0]])
    test = np.array([[[4.0, 2.0], [4.0, 10.0]]])
    z = normalise_maps(test, stats)
    assert np.allclose(z, [[[2.0 / (1 + 1e-6), 0.0], [0.0, 4.0 / (2 + 1e-6)]]])
    assert np.array_equal(normalise_maps(test, None), test)
    maps, scores = anomaly_maps(np.random.default_rng(0).random((3, 16, 16)), None, 2.0)
    assert np.allclose(scores, maps.reshape(3, -1).max(axis=1))
    raw = np.random.default_rng(1).random((3, 16, 16))
    maps, _ = anomaly_maps(raw, train_statistics(raw[:2]), 2.0)
    assert np.allclose(maps, gaussian_smooth(normalise_maps(raw, train_statistics(raw[:2])), 2.0))
    with pytest.raises(ValueError, match="do not match"):
        normalise_maps(np.zeros((1, 3, 3)), stats)
    with pytest.raises(ValueError):
        train_statistics(train[:1])


# ----------------------------------------------------------------------------------------- settings
def test_settings_take_exactly_the_schema_keys_and_round_trip():
    assert_settings_mirror_the_schema("method_a")

    # from_config / to_config round-trip, for the defaults and for a block that sets keys of every group
    defaults = validate_config({"methods": {"method_a": {}}}, partial=True)
    s = MethodASettings.from_config(defaults)
    assert s.to_config() == {
        "image_size": defaults["image_size"],
        "methods": {"method_a": defaults["methods"]["method_a"]},
    }
    cfg = {
        "model": "shared_ddpm", "sde": {"type": "vp", "sigma_max": 2, "n_steps": 40},
        "network": {"preset": "tiny", "nf": 16},
        "train": {"iterations": 10, "hflip": False, "checkpoint_every": 3},
        "inference": {"n_scales": 2, "mode": "full_chain", "smoothing_sigma": 2},
        "ablation": {"n_scales": [1, 4], "metric": [], "speed_batches": []},
    }  # fmt: skip
    parsed = make_settings("method_a", cfg, image_size=64)
    assert parsed.network.nf == 16 and parsed.ablation.n_scales == (1, 4) and parsed.ablation.metric == ()
    assert parsed.sde.sigma_max == 2.0 and isinstance(parsed.sde.sigma_max, float)  # the schema's number
    assert parsed.inference.smoothing_sigma == 2.0 and parsed.train.checkpoint_every == 3
    again = MethodASettings.from_config(validate_config(parsed.to_config(), partial=True))
    assert again == parsed
    # JSON-ready, as results record it
    assert json.loads(json.dumps(parsed.to_config())) == parsed.to_config()

    own = make_settings("method_a", {"network": {"preset": "tiny", "nf": 16}}, image_size=64)
    ts = score_train_settings(own, "synthetic", "wood", 3)
    assert ts.preset == "tiny" and ts.nf == 16 and ts.iterations == 100000 and ts.hflip and ts.seed == 3
    assert ts.sigma_max == "auto" and ts.sde == "ve" and ts.image_size == 64
    run = RunKey("synthetic", "wood", 3, "default")
    assert method_a_module.identity("score", own, run) == ts.model_hash()
    # inference does not shape the model
    other = replace(own, inference=replace(own.inference, n_scales=1))
    assert score_train_settings(other, "synthetic", "wood", 3) == ts


# ------------------------------------------------------------------------------------------ ablation
def test_ablation_variants_one_factor_at_a_time():
    demo = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    s = make_settings("method_a", demo["methods"]["method_a"], image_size=demo["image_size"])
    vs = variants(s)
    names = [v.name for v in vs]
    # default first; the default's own point is not run twice
    assert names == ["default", "K1_n1_s0.4", "K2_n1_s0.4", "full_chain"]
    assert point_name(s.inference) == "K4_n1_s0.4"
    full_chain = variant_settings(vs, "full_chain", "method_a")
    assert full_chain.inference == replace(s.inference, mode="full_chain") and full_chain.model == s.model
    assert variant_settings(vs, "default", "method_a") == s
    assert_each_grid_regenerates_its_variant("method_a", s, timed=("default", "full_chain"))

    full = make_settings("method_a")
    by_name = {v.name: v.settings for v in variants(full)}
    names_full = list(by_name)
    assert names_full == [
        "default", "K1_n5_s0.4", "K2_n5_s0.4", "K8_n5_s0.4", "K4_n1_s0.4", "K4_n2_s0.4", "K4_n10_s0.4",
        "K4_n20_s0.4", "K4_n5_s0.2", "K4_n5_s0.8", "full_chain", "metric_score", "metric_recon",
        "metric_score_clean", "shared_ddpm",
    ]  # fmt: skip
    assert all(len(n) < 40 for n in names_full)
    # one factor at a time: each point differs from the default in exactly the named setting
    assert by_name["default"] == full
    assert by_name["K2_n5_s0.4"] == replace(full, inference=replace(full.inference, n_scales=2))
    assert by_name["K4_n5_s0.2"].inference == replace(full.inference, sigma_hi=0.2, sigma_lo=0.05)
    assert by_name["metric_recon"].inference == replace(full.inference, metric="recon")
    assert by_name["full_chain"].inference == replace(full.inference, mode="full_chain")
    assert by_name["shared_ddpm"] == replace(full, model="shared_ddpm")
    assert all(v.model == "own" for n, v in by_name.items() if n != "shared_ddpm")
    assert all(v.inference.mode == "t_scales" for n, v in by_name.items() if n != "full_chain")
    assert variant_settings(variants(full), "default", "method_a").inference == full.inference
    with pytest.raises(ValueError, match="unknown method_a variant 'K3_n5_s0.4'.*default, K1_n5_s0.4"):
        variant_settings(variants(full), "K3_n5_s0.4", "method_a")
    assert_each_grid_regenerates_its_variant("method_a", full, timed=("default", "full_chain"))
    # the speed probe belongs to the timed points only
    grids = {v.name: v.grid for v in variants(full)}
    assert grids["default"].speed_batches == grids["full_chain"].speed_batches == (1, 16)
    assert grids["K2_n5_s0.4"].speed_batches == () and grids["K2_n5_s0.4"].n_scales == (2,)
    # a config that reads the DDPM already has no shared_ddpm point
    shared = make_settings("method_a", {"model": "shared_ddpm"})
    assert "shared_ddpm" not in [v.name for v in variants(shared)]
    assert all(v.settings.model == "shared_ddpm" for v in variants(shared))
    assert_each_grid_regenerates_its_variant("method_a", shared, timed=("default", "full_chain"))
    # a configured full chain is the default: no second full_chain point
    assert "full_chain" not in [
        v.name for v in variants(replace(full, inference=by_name["full_chain"].inference))
    ]
    assert json.dumps([v.settings.to_config() for v in vs] + [asdict(v.grid) for v in vs])  # JSON-ready


@pytest.mark.parametrize("sde_kind", ["ve", "vp"])
def test_score_residual_on_an_exactly_known_score_is_the_offset_over_sigma(sde_kind):
    """Data = one image c: Tweedie's estimate at every step is c, so the residual map is exactly
    |x0 - c|_c * mean over scales and steps of 1 / sigma_j (pixel units), whatever the noise or predictor."""
    if sde_kind == "ve":
        sde, scale, offset = VESDE(0.01, 30.0), 1.0, 0.0
    else:
        sde, scale, offset = VPSDE(), 2.0, -1.0
    c01 = torch.full((1, 3, 16, 16), 0.4, dtype=F64)
    model = _const_score_model(sde, c01 * scale + offset, scale, offset)
    x = c01 + 0.1 * _images(1, 16, seed=4)
    inf = _inf(metric="score_residual", n_scales=3, steps_per_scale=4, draws=2)
    factor = np.mean([np.mean([1 / s for s in chain_levels(s0, 0.01, 4)]) for s0 in scale_levels(inf)])
    for predictor in ("reverse_diffusion", "ancestral"):
        res, info = raw_maps(model, x, replace(inf, predictor=predictor), seeds=[5], sigma_end=0.01)
        assert info["nfe_per_image"] == 3 * 4 * 2
        assert torch.allclose(res, (x - c01).norm(dim=1) * factor, rtol=1e-8)


def test_levels_outside_the_model_range_are_refused():
    model = _gauss_score_model(VESDE(0.01, 0.3), 0.5, 0.1)
    x = _images(1, 8)
    with pytest.raises(ValueError, match=r"noise level 0.4 .*outside the model's range \[0.01, 0.3\]"):
        raw_maps(model, x, _inf(), seeds=[0], sigma_end=0.01)
    with pytest.raises(ValueError, match="outside"):
        raw_maps(model, x, _inf(sigma_hi=0.3), seeds=[0], sigma_end=0.005)
    maps, _ = raw_maps(model, x, _inf(sigma_hi=0.3), seeds=[0], sigma_end=0.01)
    assert maps.shape == (1, 8, 8) and bool(torch.isfinite(maps).all())


# ------------------------------------------------------------------------------------------ end to end
IMAGE_SIZE = 32
E2E_BLOCK = {
    "sde": {"sigma_max": 1.0, "n_steps": 40},
    "network": {"preset": "tiny", "nf": 16},
    "train": {"batch_size": 8, "iterations": 150, "lr": 2e-3, "warmup": 20},
    "inference": {"metric": "score_residual", "draws": 1, "batch_size": 16, "smoothing_sigma": 2},
    "ablation": {"speed_batches": []},  # no speed probe unless asked
}
TOP = {"run_name": "test", "device": "cpu", "image_size": IMAGE_SIZE, "evaluation": {"resolution": 64}}
RUN = RunKey("synthetic", "wood", 0, "default")


def _config(block: dict) -> dict:
    return validate_config({**TOP, "methods": {"method_a": block}}, partial=True)


def _recorded(settings: MethodASettings) -> dict:
    """What a result records under extra.config: the run's settings, its variant applied, its grid with every
    axis left out (the grid is not what the run ran)."""
    config = settings.to_config()
    config["methods"]["method_a"]["ablation"] = {
        "n_scales": [], "steps_per_scale": [], "sigma_hi": [], "full_chain": False, "metric": [],
        "shared_ddpm": False, "speed_batches": [],
    }  # fmt: skip
    return config


@pytest.fixture(scope="module")
def synth_class(tmp_path_factory) -> Path:
    from texad.data.synth import generate_class

    root = tmp_path_factory.mktemp("synth")
    generate_class(root, "wood", image_size=64, n_train=16, n_test_good=6, n_test_per_defect=3, seed=0)
    return root / "wood"


@pytest.fixture(scope="module")
def own_model(synth_class, tmp_path_factory) -> Path:
    from texad.diffusion.training import train_diffusion

    out = tmp_path_factory.mktemp("model")
    settings = make_settings("method_a", E2E_BLOCK, image_size=IMAGE_SIZE)
    ts = score_train_settings(settings, RUN.dataset, RUN.class_name, RUN.seed)
    train_diffusion(synth_class, out / "score.pt", out / "ckpt", ts, device="cpu", precision="fp32",
                    checkpoint_every=settings.train.checkpoint_every, config=settings.to_config(),
                    progress=False, log=lambda _m: None)  # fmt: skip
    return out / "score.pt"


def test_tiny_train_and_t_scales_detect_defects(synth_class, own_model, tmp_path):
    config = _config(E2E_BLOCK)
    result = run_method(
        "method_a", config, RUN, class_dir=synth_class, models={"model": own_model},
        out_result=tmp_path / "r.json", out_maps=tmp_path / "m.npz",
    )  # fmt: skip
    m = result["metrics"]
    assert m["n_images"] == 18 and m["n_anomalous"] == 12
    assert m["image_auroc"] >= 0.8, m
    assert m["pixel_auroc"] >= 0.8, m
    assert result["method"] == "method_a" and result["timings"]["nfe_per_image"] == 20
    assert result["extra"]["timing"]["s_per_image_at_batch"] == {}  # no speed probe unless asked
    assert result["extra"]["timing"]["batch_size"] == 16
    assert result["timings"]["train_s"] > 0 and result["backbone"] is None
    assert result["extra"]["levels_pixel"][0] == pytest.approx(chain_levels(0.4, 0.01, 5))
    settings = MethodASettings.from_config(config)
    assert result["extra"]["config"] == _recorded(settings)
    assert "settings" not in result["extra"] and method_block(result)["inference"]["draws"] == 1
    assert result["model_hash"] == score_train_settings(settings, "synthetic", "wood", 0).model_hash()
    assert json.loads((tmp_path / "r.json").read_text())["model_hash"] == result["model_hash"]
    npz = np.load(tmp_path / "m.npz")
    assert npz["maps"].shape == (18, 64, 64) and npz["scores"].shape == (18,)
    # the labels and paths in the dataset's listing order: test/good first, then the defects alphabetically
    listing = list_samples(synth_class, "test")
    assert npz["paths"].tolist() == [str(s.path) for s in listing]
    assert npz["labels"].tolist() == [s.label for s in listing] == [0] * 6 + [1] * 12
    assert npz["reconstructions"].shape == (18, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_full_chain_reference_run(synth_class, own_model, tmp_path):
    runtime = Runtime.from_config(_config({}))
    settings = make_settings(
        "method_a", {**E2E_BLOCK, "ablation": {"speed_batches": [1, 4]}}, image_size=IMAGE_SIZE
    )
    vs = variants(settings)
    models = {"model": own_model}
    # only the default and the full chain are timed
    point = method_a_module.Detector(variant_settings(vs, "K2_n5_s0.4", "method_a"), runtime,
                                     replace(RUN, variant="K2_n5_s0.4"), models)  # fmt: skip
    assert point.speed_batches == ()
    run = replace(RUN, variant="full_chain")
    detector = method_a_module.Detector(variant_settings(vs, "full_chain", "method_a"), runtime, run, models)
    assert detector.speed_batches == (1, 4)
    result = run_class(detector, synth_class, run, runtime, out_result=tmp_path / "r.json",
                       out_maps=tmp_path / "m.npz")  # fmt: skip
    speed = result["extra"]["timing"]["s_per_image_at_batch"]
    assert set(speed) == {"1", "4"} and all(v > 0 for v in speed.values())
    # grid exp(linspace(ln 0.01, ln 1, 40)): the levels <= 0.4
    expected = math.floor(math.log(40) / math.log(100) * 39) + 1
    assert result["timings"]["nfe_per_image"] == expected
    assert len(result["extra"]["levels_pixel"][0]) == expected
    assert result["evaluation"]["switches"]["mode"] == "full_chain"
    assert result["variant"] == "full_chain"
    assert result["extra"]["sde_model"] == {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0, "N": 40}
    assert method_block(result)["inference"] == asdict(replace(settings.inference, mode="full_chain"))
    assert result["extra"]["config"] == _recorded(variant_settings(vs, "full_chain", "method_a"))


def test_shared_ddpm_runs_as_a_score_model(synth_class, tmp_path):
    from texad.diffusion.training import train_diffusion
    from texad.methods.method_b import ddpm_train_settings

    b_block = {"diffusion": {"preset": "tiny"}, "train": {"epochs": {"default": 1}, "batch_size": 8}}
    b = make_settings("method_b", b_block, image_size=IMAGE_SIZE)
    ddpm = ddpm_train_settings(b, RUN.dataset, RUN.class_name, RUN.seed)
    train_diffusion(synth_class, tmp_path / "ddpm.pt", tmp_path / "ck", ddpm, device="cpu", precision="fp32",
                    checkpoint_every=1, progress=False, log=lambda _m: None)  # fmt: skip
    block = {
        **E2E_BLOCK,
        "model": "shared_ddpm",
        "inference": {"normalise": "none", "draws": 1, "n_scales": 2},
    }
    config = _config(block)
    result = run_method(
        "method_a", config, RUN, class_dir=synth_class, models={"model": tmp_path / "ddpm.pt"},
        out_result=tmp_path / "r.json", out_maps=tmp_path / "m.npz",
    )  # fmt: skip
    assert result["model_hash"] == ddpm.model_hash()
    assert result["timings"]["train_s"] is None  # the DDPM's training belongs to Method B
    assert result["timings"]["nfe_per_image"] == 2 * 5
    assert result["extra"]["sde_model"]["type"] == "ddpm"
    assert result["evaluation"]["switches"]["model"] == "shared_ddpm"
    assert method_block(result)["model"] == "shared_ddpm"
    runtime = Runtime.from_config(config)
    with pytest.raises(ValueError, match="not a texad score model"):
        method_a_module.Detector(make_settings("method_a", E2E_BLOCK, image_size=IMAGE_SIZE), runtime, RUN,
                                 {"model": tmp_path / "ddpm.pt"})  # fmt: skip
    # the DDPM of another class is refused
    with pytest.raises(ValueError, match="synthetic/carpet/seed0"):
        method_a_module.Detector(MethodASettings.from_config(config), runtime,
                                 replace(RUN, class_name="carpet"), {"model": tmp_path / "ddpm.pt"})  # fmt: skip


def test_a_chain_free_measure_has_no_full_chain_reference():
    """score_clean scores one perturbation per scale: there is no chain to run in full, so the ablation leaves its
    full-chain point out, and a full-chain default is refused at start-up."""
    names = [v.name for v in variants(make_settings("method_a", {"inference": {"metric": "score_clean"}}))]
    assert "full_chain" not in names and "metric_score" in names
    assert "full_chain" in [v.name for v in variants(make_settings("method_a"))]
    with pytest.raises(ConfigError, match="methods.method_a.inference.mode: full_chain needs a chain metric"):
        make_settings("method_a", {"inference": {"metric": "score_clean", "mode": "full_chain"}})
