"""DRAEM baseline: Perlin noise, anomaly simulation, losses, networks, training/resume, end to end."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from settings_checks import cpu_runtime

from texad.config import ConfigError, load_config, load_schema, validate_config
from texad.data import anomalies as ag
from texad.data import augment as aug
from texad.data.anomalies import perlin_mask, recipe_for
from texad.data.anomaly_sources import SourceBank, source_paths
from texad.data.perlin import fade, perlin_noise_2d
from texad.data.synth import generate_class
from texad.methods import draem as draem_module
from texad.methods import make_settings
from texad.methods.base import RunKey
from texad.methods.draem import training as train_mod
from texad.methods.draem.anomaly_generator import simulate_anomaly
from texad.methods.draem.detector import DraemDetector
from texad.methods.draem.infer import image_scores
from texad.methods.draem.loss import focal_loss, ssim_loss, ssim_map
from texad.methods.draem.model import DiscriminativeNet, ReconstructiveNet, count_parameters
from texad.methods.draem.settings import DraemSettings, model_hash
from texad.methods.draem.training import TrainingStopped, load_draem_model, train_draem
from texad.methods.jobs import run_method, train_model
from texad.methods.run import load_images
from texad.results.record import method_block, read_result

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------- Perlin
def _perlin_reference(shape, res, angles):
    """Textbook Perlin noise, one pixel at a time (independent of the vectorised implementation)."""
    h, w = shape
    out = np.zeros(shape)
    for i in range(h):
        for j in range(w):
            py, px = i * res[0] / h, j * res[1] / w
            cy, cx = int(math.floor(py)), int(math.floor(px))
            fy, fx = py - cy, px - cx
            dots = {}
            for dy in (0, 1):
                for dx in (0, 1):
                    a = angles[cy + dy, cx + dx]
                    dots[dy, dx] = math.sin(a) * (fy - dy) + math.cos(a) * (fx - dx)
            sy = 6 * fy**5 - 15 * fy**4 + 10 * fy**3
            sx = 6 * fx**5 - 15 * fx**4 + 10 * fx**3
            top = dots[0, 0] + sx * (dots[0, 1] - dots[0, 0])
            bottom = dots[1, 0] + sx * (dots[1, 1] - dots[1, 0])
            out[i, j] = math.sqrt(2) * (top + sy * (bottom - top))
    return out


def test_perlin_matches_reference_shape_range_and_seed():
    for shape, res in [((16, 16), (2, 4)), ((12, 20), (3, 5)), ((32, 32), (32, 1))]:
        noise = perlin_noise_2d(shape, res, np.random.default_rng(7))
        angles = 2 * math.pi * np.random.default_rng(7).random((res[0] + 1, res[1] + 1))
        np.testing.assert_allclose(noise, _perlin_reference(shape, res, angles), atol=1e-12)
        assert noise.shape == shape and noise.dtype == np.float64
    big = perlin_noise_2d((64, 64), (8, 8), np.random.default_rng(1))
    assert -1.0 <= big.min() < -0.3 and 0.3 < big.max() <= 1.0
    # zero at every lattice corner (the offset to the nearest corner is 0)
    np.testing.assert_allclose(big[::8, ::8], 0.0, atol=1e-12)
    np.testing.assert_array_equal(big, perlin_noise_2d((64, 64), (8, 8), np.random.default_rng(1)))
    assert not np.array_equal(big, perlin_noise_2d((64, 64), (8, 8), np.random.default_rng(2)))
    assert fade(np.array([0.0, 0.5, 1.0])).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        perlin_noise_2d((8, 8), (16, 1), np.random.default_rng(0))


def test_perlin_mask_scales_threshold_and_coverage(monkeypatch):
    seen = []
    real = ag.perlin_noise_2d

    def spy(shape, res, rng):
        seen.append(res)
        return real(shape, res, rng)

    monkeypatch.setattr(ag, "perlin_noise_2d", spy)
    rec = recipe_for("code")
    masks = np.stack([perlin_mask((64, 64), np.random.default_rng(s), rec) for s in range(300)])
    assert masks.dtype == bool and masks.shape == (300, 64, 64)
    # scales 2^0 .. 2^5 per axis, independently: the exclusive upper bound of the official code
    assert {r for pair in seen for r in pair} == {1, 2, 4, 8, 16, 32}
    assert len(set(seen)) > 25
    coverage = masks.mean(axis=(1, 2))
    # noise in [-1, 1] thresholded at 0.5 covers a small part of the image. Measured over 3000 seeds:
    # mean coverage 0.039, 5.3 % empty masks, largest 0.45 (fixed seeds: the test is deterministic)
    assert 0.025 < coverage.mean() < 0.06, coverage.mean()
    assert 0.005 < (coverage == 0).mean() < 0.12
    assert coverage.max() < 0.6 and np.median(coverage) > 0.015
    # a mask is the noise > threshold (checked on one draw with the rotation undone by angle 0)
    rec0 = ag.AnomalyRecipe("t", noise_rotation=0.0, perlin_exponents=(3, 4))
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    mask = perlin_mask((32, 32), rng_a, rec0)
    rng_b.integers(3, 4), rng_b.integers(3, 4)
    np.testing.assert_array_equal(mask, real((32, 32), (8, 8), rng_b) > 0.5)


# ----------------------------------------------------------------------------------- augmenters
def _texture(h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_each_augmenter_keeps_shape_dtype_and_changes_something():
    x = _texture()
    for name, fn in ag.AUGMENTERS.items():
        outs = [fn(x, np.random.default_rng(s)) for s in range(4)]
        for out in outs:
            assert out.shape == x.shape and out.dtype == np.uint8, name
        if name != "solarize":  # solarize is a no-op with probability 0.5
            assert any(not np.array_equal(o, x) for o in outs), name
    assert len(ag.CODE_AUGMENTERS) == 10 and len(ag.PAPER_AUGMENTERS) == 7


def test_augmenter_formulas():
    x = _texture(seed=1)
    np.testing.assert_array_equal(aug.aug_invert(x, None), 255 - x)
    rng = np.random.default_rng(3)
    g = np.random.default_rng(3).uniform(0.5, 2.0, size=3)
    expected = np.clip(np.rint(255 * (x / 255.0) ** g), 0, 255)
    np.testing.assert_array_equal(aug.aug_gamma(x, rng), expected)
    for seed in range(6):
        bits = int(np.random.default_rng(seed).integers(1, 9))
        out = aug.aug_posterize(x, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, (x >> (8 - bits)) << (8 - bits))
    for seed in range(8):
        r = np.random.default_rng(seed)
        out = aug.aug_solarize(x, np.random.default_rng(seed))
        if r.random() >= 0.5:
            np.testing.assert_array_equal(out, x)
        else:
            t = r.uniform(32, 128)
            np.testing.assert_array_equal(out, np.where(x >= t, 255 - x, x))
    # brightness: +20 on the brightness channel of a grey image gives grey + 20 in the linear spaces,
    # and keeps grey grey (brighter) in Lab / Luv
    grey = np.full((4, 4, 3), 100, np.uint8)
    for space in ("YCrCb", "YUV", "HSV", "HLS"):
        np.testing.assert_array_equal(aug._with_brightness(grey, space, lambda c: c + 20), grey + 20)
    for space in ("Lab", "Luv"):
        out = aug._with_brightness(grey, space, lambda c: c + 20).astype(int)
        assert (out.max(-1) - out.min(-1)).max() <= 1 and out.mean() > 110
    # HSV keeps hue and saturation: a colour scales with V
    colour = np.array([[[200, 100, 50]]], np.uint8)
    np.testing.assert_array_equal(aug._with_brightness(colour, "HSV", lambda c: c * 0.5), [[[100, 50, 25]]])


def test_augment_source_draws_distinct_augmenters(monkeypatch):
    calls = []
    for name in ag.CODE_AUGMENTERS:
        monkeypatch.setitem(ag.AUGMENTERS, name, lambda x, rng, name=name: calls.append(name) or x)
    rec = recipe_for("code")
    picked = []
    for s in range(200):
        calls.clear()
        ag.augment_source(_texture(8, 8), np.random.default_rng(s), rec)
        assert len(calls) == 3 and len(set(calls)) == 3
        picked += calls
    counts = {n: picked.count(n) for n in ag.CODE_AUGMENTERS}
    assert min(counts.values()) > 30  # uniform: 60 each expected
    calls.clear()
    ag.augment_source(_texture(8, 8), np.random.default_rng(0), recipe_for("paper"))
    assert set(calls) <= set(ag.PAPER_AUGMENTERS) and {"gamma", "invert", "rotate"}.isdisjoint(calls)


# ------------------------------------------------------------------------------ simulated samples
def _sources(n=3, size=32):
    return [_texture(size, size, seed=10 + i) for i in range(n)]


def test_simulate_anomaly_blend_mask_and_label():
    image = torch.from_numpy(_texture(seed=2)).permute(2, 0, 1).float() / 255.0
    rec = recipe_for("code")
    anomalous = 0
    for s in range(60):
        out = simulate_anomaly(image, np.random.default_rng(s), rec, _sources())
        m = out.mask[0].bool()
        assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
        assert out.label == float(m.any())
        # outside the mask the input is the (possibly rotated) clean image, bit for bit
        assert torch.equal(out.input[:, ~m], out.target[:, ~m])
        if out.opacity is None:  # a normal draw
            assert not m.any() and torch.equal(out.input, out.target)
            continue
        assert 0.2 <= out.opacity <= 1.0
        expected = (1 - out.opacity) * out.target + out.opacity * out.source
        torch.testing.assert_close(out.input[:, m], expected[:, m], atol=1e-6, rtol=0)
        anomalous += int(m.any())
    assert anomalous > 10
    # same generator state, same sample
    a = simulate_anomaly(image, np.random.default_rng(9), rec, _sources())
    b = simulate_anomaly(image, np.random.default_rng(9), rec, _sources())
    assert torch.equal(a.input, b.input) and torch.equal(a.mask, b.mask)


def test_simulate_anomaly_probabilities():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    n = 400
    for p in (0.5, 0.2):
        # the source augmenters do not touch the draw of p_anomaly; leaving them out keeps the test fast
        rec = ag.AnomalyRecipe("code", n_augmenters=0, p_anomaly=p)
        normal = sum(
            simulate_anomaly(image, np.random.default_rng(s), rec, _sources()).opacity is None
            for s in range(n)
        )
        assert abs(normal / n - (1 - p)) < 0.07, (p, normal / n)
    none = ag.AnomalyRecipe("t", p_anomaly=0.0)
    draws = [simulate_anomaly(image, np.random.default_rng(s), none, _sources()) for s in range(n)]
    assert all(d.opacity is None and d.label == 0.0 for d in draws)
    rotated = sum(not torch.equal(d.target, image) for d in draws) / n  # clean rotation, p = 0.3
    assert abs(rotated - 0.3) < 0.07, rotated
    always = ag.AnomalyRecipe("t", p_anomaly=1.0, clean_rotation_p=0.0)
    assert all(
        simulate_anomaly(image, np.random.default_rng(s), always, _sources()).opacity is not None
        for s in range(50)
    )


# ------------------------------------------------------------------------------------------- losses
def test_focal_loss_formula():
    logits = torch.tensor([[2.0, -1.0, 0.3], [0.5, 1.5, 0.3]]).view(1, 2, 1, 3)
    probs = torch.softmax(logits, dim=1)
    target = torch.tensor([0.0, 1.0, 1.0]).view(1, 1, 1, 3)
    eps = 1e-5
    terms = []
    for j, t in enumerate([0, 1, 1]):
        p_true, p_other = float(probs[0, t, 0, j]), float(probs[0, 1 - t, 0, j])
        pt = (1 - eps) * p_true + eps * p_other + eps
        terms.append(-((1 - pt) ** 2) * math.log(pt))
    assert float(focal_loss(probs, target)) == pytest.approx(np.mean(terms), rel=1e-6)
    # gamma = 0 is the (smoothed) cross-entropy; a confident correct prediction costs almost nothing
    ce = float(focal_loss(probs, target, gamma=0.0))
    assert ce == pytest.approx(
        -np.mean(
            [
                math.log((1 - eps) * float(probs[0, t, 0, j]) + eps * float(probs[0, 1 - t, 0, j]) + eps)
                for j, t in enumerate([0, 1, 1])
            ]
        ),
        rel=1e-6,
    )
    sure = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert float(focal_loss(sure, torch.zeros(1, 1, 1, 1))) < 1e-9


def test_ssim_against_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 40, generator=g, dtype=torch.float64)
    y = (x + 0.15 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim_map(x, y)[0].permute(1, 2, 0).numpy()
    _, ref = structural_similarity(
        x[0].permute(1, 2, 0).numpy(),
        y[0].permute(1, 2, 0).numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=2,
        full=True,
    )
    # the interior (5 px from the border) is independent of the padding rule
    np.testing.assert_allclose(ours[5:-5, 5:-5], ref[5:-5, 5:-5], atol=1e-10)
    assert float(ssim_loss(x, y)) == pytest.approx(1 - ours.mean(), abs=1e-12)
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-12)
    assert 0.1 < float(ssim_loss(x, y)) < 1.0


# ----------------------------------------------------------------------------- networks, scores
def test_network_shapes_and_official_widths():
    torch.manual_seed(0)
    recon, disc = ReconstructiveNet(4), DiscriminativeNet(2)
    x = torch.rand(2, 3, 64, 64)
    r = recon(x)
    assert r.shape == (2, 3, 64, 64)
    assert disc(torch.cat((r, x), 1)).shape == (2, 2, 64, 64)
    with torch.device("meta"):  # official widths, counted without allocating 97 M parameters
        big_r, big_d = ReconstructiveNet(128), DiscriminativeNet(64)
    assert count_parameters(big_r) == 69_048_579 and count_parameters(big_d) == 28_374_146
    assert [b[0].out_channels for b in big_r.encoder] == [128, 256, 512, 1024, 1024]
    assert [b[0].out_channels for b in big_d.encoder] == [64, 128, 256, 512, 512, 512]
    assert [b[3].out_channels for b in big_d.decoder] == [512, 256, 128, 64, 64]


def test_image_score_is_max_of_zero_padded_box_mean():
    maps = torch.zeros(3, 40, 40)
    maps[0, 20, 20] = 1.0
    maps[1] = 1.0
    maps[2] = torch.rand(40, 40, generator=torch.Generator().manual_seed(1))
    scores = image_scores(maps, 21)
    assert float(scores[0]) == pytest.approx(1 / 441)
    assert float(scores[1]) == pytest.approx(1.0)
    ref = ndimage.uniform_filter(maps[2].double().numpy(), size=21, mode="constant", cval=0.0).max()
    assert float(scores[2]) == pytest.approx(ref, rel=1e-5)
    corner = image_scores(torch.ones(1, 40, 40)[:, :11, :11].contiguous(), 21)  # 11x11 ones, all padded
    assert float(corner[0]) == pytest.approx(121 / 441)


# ------------------------------------------------------------------------------------- settings
TINY = dict(
    epochs=2,
    batch_size=4,
    lr=1e-3,
    image_size=32,
    recon_base_width=2,
    disc_base_width=2,
    anomaly_source="synthetic",
)


def _tiny(**kw) -> DraemSettings:
    """TINY with ``kw`` on top; every other key at its schema default."""
    return make_settings("draem", {**TINY, **kw})


def test_settings_take_exactly_the_schema_keys_and_round_trip():
    block = load_schema("config")["properties"]["methods"]["properties"]["draem"]["properties"]
    schema_defaults = {k: v.get("default") for k, v in block.items() if k != "enabled"}
    fields = dataclasses.fields(DraemSettings)
    assert {f.metadata.get("key", f.name) for f in fields} == set(schema_defaults)
    # no dataclass defaults: the schema is their only source
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    base = make_settings("draem")
    filled = validate_config({"methods": {"draem": {"enabled": False}}}, partial=True)["methods"]["draem"]
    assert {k: v for k, v in schema_defaults.items() if not isinstance(v, dict)}.items() <= filled.items()
    assert base.to_config() == {"methods": {"draem": {k: v for k, v in filled.items() if k != "enabled"}}}
    varied = _tiny(recipe="paper", score_pool=5, p_anomaly=0.3)
    assert DraemSettings.from_config(varied.to_config()) == varied
    assert DraemSettings.from_config(validate_config(varied.to_config(), partial=True)) == varied
    demo = load_config(REPO / "config" / "demo.yaml")
    assert DraemSettings.from_config(demo).anomaly_source == "synthetic"
    assert base.lr_schedule() == ([560, 630], 0.2)
    assert make_settings("draem", {"recipe": "paper"}).lr_schedule() == ([400, 600], 0.1)
    with pytest.raises(
        ValueError, match=r"methods\.draem\.\w+ is missing"
    ):  # a block not filled by the schema
        DraemSettings.from_config({"methods": {"draem": {"epochs": 3}}})
    with pytest.raises(ValueError, match="unknown key"):
        DraemSettings.from_config({"methods": {"draem": {**schema_defaults, "epoch": 3}}})
    with pytest.raises(ConfigError, match="methods.draem.epoch: unknown key"):
        make_settings("draem", {"epochs": 3, "epoch": 3})


def test_image_size_must_be_a_multiple_of_32():
    with pytest.raises(ConfigError, match=r"methods\.draem\.image_size: 48 .*multiple of 32"):
        validate_config({"methods": {"draem": {"image_size": 48}}}, partial=True)
    assert make_settings("draem", {"image_size": 96}).image_size == 96


def test_model_hash_leaves_score_pool_out():
    base = make_settings("draem")
    h = model_hash(base, "d", "c", 0)
    assert h == model_hash(make_settings("draem", {"score_pool": 5}), "d", "c", 0)  # scoring only
    assert h != model_hash(make_settings("draem", {"epochs": 5}), "d", "c", 0)
    assert h != model_hash(base, "d", "c", 1) and h != model_hash(base, "d", "other", 0)
    assert h == model_hash(make_settings("draem", {"lr": 1e-4, "p_anomaly": 0.5}), "d", "c", 0)
    assert model_hash(make_settings("draem", {"p_anomaly": 1}), "d", "c", 0) == model_hash(
        make_settings("draem", {"p_anomaly": 1.0}), "d", "c", 0
    )  # the schema normalises numbers before they are hashed
    run = RunKey("d", "c", 0, "default")
    assert draem_module.identity("draem", base, run) == h
    assert draem_module.model_file("draem", base, run) == f"draem-{h}.pt"


# ------------------------------------------------------------------------------ data, training
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("draem_synth")
    # trained class: wood; anomaly sources: the 8 train/good images of carpet
    generate_class(root, "wood", image_size=64, n_train=16, n_test_good=12, n_test_per_defect=6, seed=0)
    generate_class(root, "carpet", image_size=64, n_train=8, n_test_good=1, n_test_per_defect=1, seed=0)
    return root


def test_synthetic_sources_exclude_the_trained_class(synth_root, tmp_path):
    paths = source_paths("synthetic", class_name="wood", dataset_root=synth_root)
    assert len(paths) == 8 and all("carpet" in p.parts and "train" in p.parts for p in paths)
    bank = SourceBank(paths, 32)
    assert bank[0].shape == (32, 32, 3) and bank[0].dtype == np.uint8 and bank[0] is bank[0]
    alone = tmp_path / "alone"
    generate_class(alone, "tile", image_size=32, n_train=2, n_test_good=1, n_test_per_defect=1)
    with pytest.raises(FileNotFoundError, match="other than 'tile'"):
        source_paths("synthetic", class_name="tile", dataset_root=alone)
    own = source_paths("synthetic", class_name="carpet", dataset_root=synth_root)
    with pytest.raises(ValueError, match="own images"):
        train_draem(synth_root / "wood", own, _tiny(epochs=1), dataset="synthetic", class_name="wood", seed=0,
                    out=tmp_path / "m.pt", ckpt_dir=tmp_path / "c", device="cpu")  # fmt: skip


def test_resume_equals_uninterrupted_training(synth_root, tmp_path):
    cls = synth_root / "wood"
    paths = source_paths("synthetic", class_name="wood", dataset_root=synth_root)
    kw = dict(seed=3, dataset="synthetic", class_name="wood", device="cpu", checkpoint_every=1, progress=False,
              log=lambda *a: None)  # fmt: skip
    full = train_draem(cls, paths, _tiny(), out=tmp_path / "full.pt", ckpt_dir=tmp_path / "ck_full", **kw)
    with pytest.raises(TrainingStopped):
        train_draem(
            cls,
            paths,
            _tiny(),
            out=tmp_path / "res.pt",
            ckpt_dir=tmp_path / "ck_res",
            _stop_after_epoch=1,
            **kw,
        )
    assert not (tmp_path / "res.pt").exists() and (tmp_path / "ck_res" / "last.pt").exists()
    resumed = train_draem(cls, paths, _tiny(), out=tmp_path / "res.pt", ckpt_dir=tmp_path / "ck_res", **kw)
    assert (
        resumed["resumed_from_epoch"] == 1 and full["steps"] == resumed["steps"] == 8
    )  # 16 images / 4, 2 epochs
    a = torch.load(tmp_path / "full.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "res.pt", weights_only=True)["state_dict"]
    for net in ("recon", "disc"):
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    recon, disc, meta = load_draem_model(tmp_path / "res.pt")
    assert (
        not recon.training and meta["settings"] == _tiny() and meta["anomaly_source"]["groups"] == ["carpet"]
    )
    assert meta["model_hash"] == model_hash(_tiny(), "synthetic", "wood", 3)
    # a checkpoint of other settings is refused, naming what to delete
    with pytest.raises(ValueError, match="delete"):
        train_draem(cls, paths, _tiny(epochs=3), out=tmp_path / "x.pt", ckpt_dir=tmp_path / "ck_res", **kw)


def test_nan_loss_names_class_and_step(synth_root, tmp_path, monkeypatch):
    def bad_loss(rec, clean, logits, mask):
        return rec.mean() * float("nan"), {"l2": float("nan"), "ssim": 0.0, "focal": 0.0}

    monkeypatch.setattr(train_mod, "draem_loss", bad_loss)
    paths = source_paths("synthetic", class_name="wood", dataset_root=synth_root)
    with pytest.raises(RuntimeError, match=r"class 'wood' at epoch 1, global step 1"):
        train_draem(
            synth_root / "wood",
            paths,
            _tiny(),
            dataset="synthetic",
            class_name="wood",
            seed=0,
            out=tmp_path / "m.pt",
            ckpt_dir=tmp_path / "c",
            device="cpu",
            progress=False,
        )


def test_model_file_keeps_its_whole_settings_block(synth_root, tmp_path):
    """A model file carries its settings block, inference-only keys included: a detector built from the file's own
    settings scores with the file's score_pool (5), not the schema's (21)."""
    settings = _tiny(epochs=1, score_pool=5)
    paths = source_paths("synthetic", class_name="wood", dataset_root=synth_root)
    train_draem(synth_root / "wood", paths, settings, dataset="synthetic", class_name="wood", seed=0,
                out=tmp_path / "m.pt", ckpt_dir=tmp_path / "ck", device="cpu", progress=False,
                log=lambda *a: None)  # fmt: skip
    _, _, meta = load_draem_model(tmp_path / "m.pt")
    assert meta["settings"].score_pool == 5 and meta["settings"] == settings
    assert meta["config"] == settings.to_config() and meta["class_name"] == "wood"
    run, runtime = RunKey("synthetic", "wood", 0, "default"), cpu_runtime(32)
    detector = DraemDetector(meta["settings"], runtime, run, {"model": tmp_path / "m.pt"})
    assert detector.record()["switches"]["score_pool"] == 5
    images = load_images(synth_root / "wood", "test", detector.load_size, limit=4)
    out = detector.score(images, [0, 1, 2, 3])
    maps = torch.from_numpy(out.maps)
    pool5, pool21 = image_scores(maps, 5).double().numpy(), image_scores(maps, 21).double().numpy()
    # a one-epoch model's maps are nearly flat: the two pools differ by about 4e-4, far above float32 noise
    assert np.abs(pool5 - pool21).min() > 1e-5
    np.testing.assert_allclose(out.scores, pool5, rtol=1e-6, atol=0)
    # the schema's pool reuses the same model (score_pool is not in its identity) and scores with 21
    default_pool = DraemDetector(_tiny(epochs=1), runtime, run, {"model": tmp_path / "m.pt"})
    np.testing.assert_allclose(default_pool.score(images, [0, 1, 2, 3]).scores, pool21, rtol=1e-6, atol=0)
    # a setting that shapes the model is refused
    with pytest.raises(ValueError, match="shapes the model"):
        DraemDetector(_tiny(epochs=2, score_pool=5), runtime, run, {"model": tmp_path / "m.pt"})


def test_end_to_end_train_and_evaluate(synth_root, tmp_path):
    """160 steps of the demo's narrow networks on 16 images at 64 px (about 25 s on one core), trained and run
    through the jobs a workflow runs (``texad train draem`` / ``texad run draem``).

    The score pool is 5: the official 21 at 256 px, scaled to 64 px (a 21-px box would average a third
    of the image). Measured with seeds 0, 1, 2: image AUROC 0.94, 0.99, 0.94; pixel AUROC 0.93, 0.95, 0.92
    (chance: 0.5; the spread of a random score's AUROC on 12 + 24 images is about 0.1).
    """
    block = {
        **TINY,
        "epochs": 40,
        "image_size": 64,
        "recon_base_width": 16,
        "disc_base_width": 8,
        "score_pool": 5,
    }
    config = validate_config({"run_name": "test", "device": "cpu", "evaluation": {"resolution": 64},
                              "methods": {"draem": block}}, partial=True)  # fmt: skip
    settings = DraemSettings.from_config(config, "wood")
    run = RunKey("synthetic", "wood", 0, "default")
    model = tmp_path / draem_module.model_file("draem", settings, run)
    with pytest.raises(ValueError, match="--anomaly-root"):
        train_model("draem", config, run, class_dir=synth_root / "wood", out=model, ckpt_dir=tmp_path / "ck")
    train_model("draem", config, run, class_dir=synth_root / "wood", out=model, ckpt_dir=tmp_path / "ck",
                expect_hash=draem_module.identity("draem", settings, run), anomaly_root=synth_root)  # fmt: skip
    result = run_method("draem", config, run, class_dir=synth_root / "wood", models={"model": model},
                        out_result=tmp_path / "r.json", out_maps=tmp_path / "m.npz")  # fmt: skip
    assert read_result(tmp_path / "r.json") == result
    assert (
        result["method"] == "draem" and result["backbone"] is None and "scratch" in result["extra"]["weights"]
    )
    assert result["extra"]["anomaly_source"]["kind"] == "synthetic"
    assert result["extra"]["anomaly_source"]["groups"] == ["carpet"]
    assert result["model_hash"] == draem_module.identity("draem", settings, run)
    assert method_block(result) == settings.to_config()["methods"]["draem"]
    assert result["extra"]["timing"]["batch_size"] == settings.batch_size
    assert result["timings"]["train_s"] > 0 and result["timings"]["images_per_s"] > 0
    maps = np.load(tmp_path / "m.npz")
    assert maps["maps"].shape == (36, 64, 64) and maps["reconstructions"].shape == (36, 64, 64, 3)
    assert result["evaluation"]["switches"]["score_pool"] == 5
    assert result["metrics"]["image_auroc"] >= 0.85, result["metrics"]
    assert result["metrics"]["pixel_auroc"] >= 0.85, result["metrics"]
