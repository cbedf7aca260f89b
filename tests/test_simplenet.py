"""SimpleNet baseline: aggregation, loss, training (resume, selection, NaN) and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from settings_checks import cpu_runtime

from texad.config import ConfigError, load_schema, validate_config
from texad.data.synth import generate_class
from texad.evaluation.protocol import center_crop, mask_geometry
from texad.methods import make_settings
from texad.methods import simplenet as simplenet_module
from texad.methods.base import RunKey
from texad.methods.jobs import run_method, train_model
from texad.methods.run import run_class
from texad.methods.simplenet.data import crop_fraction, load_test_set
from texad.methods.simplenet.detector import SimpleNetDetector
from texad.methods.simplenet.infer import anomaly_maps, image_scores
from texad.methods.simplenet.loss import truncated_l1_loss
from texad.methods.simplenet.model import (
    Discriminator,
    FeatureAggregator,
    aggregate_features,
    build_adaptor,
    local_patches,
    pool_to_dim,
)
from texad.methods.simplenet.settings import SimpleNetSettings, model_hash
from texad.methods.simplenet.training import TrainingStopped, build_model, load_simplenet, train_simplenet

torch.set_num_threads(1)

#: Small settings that train in a second on one core (64 px: an 8 x 8 feature grid).
TINY = dict(
    backbone="efficientnet_lite0",
    pretrain_embed_dim=64,
    target_embed_dim=64,
    dsc_hidden=64,
    meta_epochs=3,
    gan_epochs=1,
    batch_size=4,
    image_size=32,
    resize=32,
    noise_std=1.0,
    adaptor_lr=1e-3,
    dsc_lr=2e-3,
)


def _settings(**kw) -> SimpleNetSettings:
    """TINY with ``kw`` on top; every other key at its schema default."""
    return make_settings("simplenet", {**TINY, **kw})


# ------------------------------------------------------------------------------------ reference helpers
def _bilinear_1d(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of half-pixel bilinear resampling with edge clamping (align_corners=False)."""
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        x = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(x)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = x - i0
        w[o, i0] += 1 - t
        w[o, i1] += t
    return w


def _adaptive_pool_ref(v: np.ndarray, out: int) -> np.ndarray:
    """Bins [floor(i L / out), ceil((i + 1) L / out)) averaged, as adaptive average pooling defines them."""
    n = v.shape[-1]
    return np.stack([v[..., (i * n) // out : -((-(i + 1) * n) // out)].mean(-1) for i in range(out)], axis=-1)


def _neighbourhood(fmap: np.ndarray, y: int, x: int) -> np.ndarray:
    """The zero-padded 3 x 3 neighbourhood of (y, x) of a (C, H, W) map, flattened in (C, 3, 3) order."""
    padded = np.pad(fmap, ((0, 0), (1, 1), (1, 1)))
    return padded[:, y : y + 3, x : x + 3].reshape(-1)


# -------------------------------------------------------------------------------------- settings
def test_settings_take_exactly_the_schema_keys_and_round_trip():
    props = load_schema("config")["properties"]["methods"]["properties"]["simplenet"]["properties"]
    props = {k: v for k, v in props.items() if k != "enabled"}
    fields = dataclasses.fields(SimpleNetSettings)
    assert {f.metadata.get("key", f.name) for f in fields} == set(props)
    # no dataclass defaults: the schema is their only source
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    default = make_settings("simplenet")
    filled = validate_config({"methods": {"simplenet": {}}}, partial=True)["methods"]["simplenet"]
    assert filled["select"] == {"meta_epoch": []}  # a nested block: its keys' defaults
    assert default.to_config() == {"methods": {"simplenet": {k: filled[k] for k in props}}}
    assert default.layers == ("layer2", "layer3") and isinstance(default.smoothing_sigma, float)
    varied = _settings(selection="official", center_crop=True, resize=40, layers=["layer2"])
    assert SimpleNetSettings.from_config(varied.to_config()) == varied
    assert SimpleNetSettings.from_config(validate_config(varied.to_config(), partial=True)) == varied
    assert make_settings("simplenet", {"enabled": True, "noise_std": 0.1}).noise_std == 0.1
    with pytest.raises(ConfigError, match="pre_proj: unknown key"):
        make_settings("simplenet", {"pre_proj": 1})
    with pytest.raises(ConfigError, match="selection"):
        make_settings("simplenet", {"selection": "best"})
    # a block the schema has not filled in is refused: no key falls back on a dataclass default
    with pytest.raises(ValueError, match=r"methods\.simplenet\.\w+ is missing"):
        SimpleNetSettings.from_config({"methods": {"simplenet": {"noise_std": 0.1}}})
    with pytest.raises(ValueError, match="unknown key"):
        block = {**varied.to_config()["methods"]["simplenet"], "pre_proj": 1}
        SimpleNetSettings.from_config({"methods": {"simplenet": block}})


def test_model_hash_covers_what_shapes_the_model():
    def h(seed=0, **kw):
        s = make_settings("simplenet", kw)
        return model_hash(s, dataset="d", class_name="c", seed=seed, backbone_weights="none")

    base = h()
    assert h(noise_std=0.02) != base and h(meta_epochs=1) != base and h(seed=1) != base
    assert h(smoothing_sigma=2.0) == base  # evaluation-only under selection "last"
    assert h(resize=300) == base  # unused without the centre crop
    assert h(selection="official", smoothing_sigma=2.0) != h(selection="official")  # breaks ties there
    assert h(center_crop=True, resize=300) != h(center_crop=True)
    assert h(noise_std=1) == h(noise_std=1.0)  # the schema normalises numbers before they are hashed
    assert model_hash(make_settings("simplenet"), dataset="d", class_name="c", seed=0,
                      backbone_weights="torchvision") != base  # fmt: skip
    # the registry's identity is this hash with the backbone's own weights
    s, run = _settings(), RunKey("d", "c", 0, "default")
    expected = model_hash(s, dataset="d", class_name="c", seed=0, backbone_weights=s.backbone_weights)
    assert simplenet_module.identity("simplenet", s, run) == expected
    assert simplenet_module.model_file("simplenet", s, run) == f"simplenet-{expected}.pt"


# ------------------------------------------------------------------------------------- aggregation
def test_local_patches_are_the_zero_padded_3x3_neighbourhoods():
    fmap = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4) + 1
    out = local_patches(torch.from_numpy(fmap)[None], 3)[0].numpy()
    assert out.shape == (2 * 9, 3, 4)
    for y in range(3):
        for x in range(4):
            np.testing.assert_array_equal(out[:, y, x], _neighbourhood(fmap, y, x))
    # corner by hand: channel 0 neighbourhood of (0, 0) is [[0, 0, 0], [0, 1, 2], [0, 5, 6]]
    np.testing.assert_array_equal(out[:9, 0, 0], [0, 0, 0, 0, 1, 2, 0, 5, 6])


def test_adaptive_pooling_embedding_dims():
    g = np.random.default_rng(0)
    v = g.standard_normal((5, 4608))
    pooled = pool_to_dim(torch.from_numpy(v), 1536).numpy()
    np.testing.assert_allclose(pooled, v.reshape(5, 1536, 3).mean(-1), atol=1e-12)  # layer2 of WRN50
    v = g.standard_normal((5, 9216))
    np.testing.assert_allclose(
        pool_to_dim(torch.from_numpy(v), 1536).numpy(), v.reshape(5, 1536, 6).mean(-1), atol=1e-12
    )
    for n, out in [(10, 4), (360, 256), (7, 12)]:  # uneven bins and the up-pooling of small layers
        v = g.standard_normal((3, n))
        np.testing.assert_allclose(
            pool_to_dim(torch.from_numpy(v), out).numpy(), _adaptive_pool_ref(v, out), atol=1e-12
        )


def test_aggregate_features_by_hand():
    g = np.random.default_rng(1)
    fine = g.standard_normal((2, 4, 4))  # layer "2": 2 channels on a 4 x 4 grid
    coarse = g.standard_normal((3, 2, 2))  # layer "3": 3 channels on a 2 x 2 grid
    out = aggregate_features([torch.from_numpy(fine)[None], torch.from_numpy(coarse)[None]], 3, 6, 4)[
        0
    ].numpy()
    assert out.shape == (4, 4, 4)
    # coarse neighbourhood vectors on the 2 x 2 grid, resized bilinearly to 4 x 4
    coarse_vec = np.stack([[_neighbourhood(coarse, y, x) for x in range(2)] for y in range(2)])  # (2, 2, 27)
    wy, wx = _bilinear_1d(2, 4), _bilinear_1d(2, 4)
    coarse_up = np.einsum("ay,bx,yxc->abc", wy, wx, coarse_vec)
    for y in range(4):
        for x in range(4):
            a = _neighbourhood(fine, y, x).reshape(6, 3).mean(-1)  # 18 -> 6: means of triples
            b = _adaptive_pool_ref(coarse_up[y, x], 6)  # 27 -> 6: bins of 4 or 5
            expected = np.concatenate([a, b]).reshape(4, 3).mean(-1)  # 12 -> 4: means of triples
            np.testing.assert_allclose(out[y, x], expected, atol=1e-12)


def test_feature_aggregator_shapes_and_frozen_backbone():
    settings = _settings(image_size=64)
    model = build_model(settings, backbone_weights="efficientnet_lite0", weights_cache=None)
    assert isinstance(model.aggregator, FeatureAggregator)
    x = torch.rand(2, 3, 64, 64)
    feats = model.aggregator(x)
    assert feats.shape == (2, 8, 8, 64)  # layer2 grid at stride 8
    assert not feats.requires_grad
    assert all(not p.requires_grad for p in model.aggregator.parameters())
    scores = model.eval().patch_scores(x)
    assert scores.shape == (2, 8, 8)
    torch.testing.assert_close(image_scores(scores), scores.flatten(1).max(1).values)


def test_adaptor_and_discriminator_structure():
    adaptor = build_adaptor(1536)
    disc = Discriminator(1536, n_layers=2, hidden=1024)
    # parameter counts of the official MVTec configuration (spec §4)
    assert sum(p.numel() for p in adaptor.parameters()) == 2_360_832
    assert sum(p.numel() for p in disc.parameters()) == 1_576_960
    assert isinstance(disc.body[0][1], torch.nn.BatchNorm1d) and disc.tail.bias is None
    assert isinstance(disc.body[0][2], torch.nn.LeakyReLU) and disc.body[0][2].negative_slope == 0.2
    assert Discriminator(8, n_layers=1, hidden=16)(torch.rand(5, 8)).shape == (5,)
    # Xavier-normal: std sqrt(2 / (fan_in + fan_out))
    assert abs(float(adaptor.weight.detach().std()) - math.sqrt(2 / 3072)) < 1e-3


# ------------------------------------------------------------------------------------------ loss
def test_truncated_l1_loss_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, generator=g), torch.randn(30, generator=g)
    m = 0.5
    expected = (
        sum(max(0.0, m - r) for r in real.tolist()) / 50 + sum(max(0.0, m + f) for f in fake.tolist()) / 30
    )
    assert float(truncated_l1_loss(real, fake, m)) == pytest.approx(expected, abs=1e-6)
    # saturated scores (real >= m, fake <= -m) give zero loss and zero gradient
    r = torch.tensor([0.5, 2.0], requires_grad=True)
    f = torch.tensor([-0.7, -0.5], requires_grad=True)
    loss = truncated_l1_loss(r, f, m)
    loss.backward()
    assert (
        float(loss.detach()) == 0.0 and float(r.grad.abs().sum()) == 0.0 and float(f.grad.abs().sum()) == 0.0
    )
    # inside the margin: d/d real = -1/n_real, d/d fake = +1/n_fake
    r = torch.tensor([0.0, 0.1, 3.0], requires_grad=True)
    f = torch.tensor([0.2, -3.0], requires_grad=True)
    truncated_l1_loss(r, f, m).backward()
    torch.testing.assert_close(r.grad, torch.tensor([-1 / 3, -1 / 3, 0.0]))
    torch.testing.assert_close(f.grad, torch.tensor([0.5, 0.0]))


# ------------------------------------------------------------------------------------------ geometry
def test_center_crop_geometry():
    s = make_settings("simplenet", {"resize": 80, "image_size": 64, "center_crop": True})
    keep = crop_fraction(s)
    assert keep == 0.8 and s.load_size == 80
    assert mask_geometry(32, (100, 100), keep) == ((40, 40), (32, 32))
    assert mask_geometry("native", (100, 100), keep) == ((100, 100), (80, 80))
    whole = make_settings("simplenet", {"resize": 80, "image_size": 64})
    assert crop_fraction(whole) == 1.0 and whole.load_size == 64
    assert mask_geometry(32, (100, 100), crop_fraction(whole)) == ((32, 32), (32, 32))
    x = torch.arange(36.0).reshape(6, 6)
    torch.testing.assert_close(center_crop(x, (2, 4)), x[2:4, 1:5])


def test_center_crop_test_set(tiny_class):
    from texad.data.mvtec import MVTecDataset

    s = make_settings("simplenet", {"resize": 40, "image_size": 32, "center_crop": True})
    test = load_test_set(tiny_class, s, 16)
    ref = MVTecDataset(tiny_class, "test", image_size=40, mask_size=20)
    assert test.images.shape == (len(ref), 3, 32, 32) and test.masks.shape == (len(ref), 16, 16)
    assert test.grid == (16, 16)
    torch.testing.assert_close(test.images[3], ref[3]["image"][:, 4:36, 4:36])
    np.testing.assert_array_equal(
        test.masks, np.stack([ref[i]["mask"][0, 2:18, 2:18].bool().numpy() for i in range(len(ref))])
    )
    assert test.masks[test.labels == 1].any()


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("sn_data")
    generate_class(root, "carpet", image_size=32, n_train=6, n_test_good=2, n_test_per_defect=1, seed=0)
    return root / "carpet"


def _train(cls_dir, tmp, name, settings, **kw):
    return train_simplenet(
        cls_dir, tmp / f"{name}.pt", tmp / f"ck_{name}", settings, dataset="synthetic", class_name="carpet",
        seed=3, backbone_weights="efficientnet_lite0", device="cpu", progress=False, log=lambda *a: None, **kw,
    )  # fmt: skip


def test_resume_equals_uninterrupted_run(tiny_class, tmp_path):
    s = _settings()
    full = _train(tiny_class, tmp_path, "full", s)
    with pytest.raises(TrainingStopped):
        _train(tiny_class, tmp_path, "cut", s, _stop_after_meta_epoch=1)
    assert not (tmp_path / "cut.pt").exists() and (tmp_path / "ck_cut" / "last.pt").exists()
    resumed = _train(tiny_class, tmp_path, "cut", s)
    assert resumed["resumed_from_meta_epoch"] == 1 and full["resumed_from_meta_epoch"] is None
    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert a["model_hash"] == b["model_hash"]
    for part in ("adaptor", "discriminator"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert full["steps"] == 3 * 2  # 3 passes over 6 images in batches of 4 (last batch kept)
    # a checkpoint of other settings is refused, naming both models
    with pytest.raises(ValueError, match="belongs to model"):
        _train(tiny_class, tmp_path, "cut", _settings(noise_std=0.5))


def test_official_selection_keeps_the_best_test_epoch(tiny_class, tmp_path):
    s = _settings(meta_epochs=4, selection="official")
    records = iter([(0.5, 0.5), (0.9, 0.6), (0.9, 0.7), (0.8, 0.9)])  # best: epoch 3 (tie broken by pixel)
    seen = []

    def selector(model):
        seen.append(model.adaptor.weight.detach().clone())
        assert not model.discriminator.training  # scored with BatchNorm running statistics
        return next(records)

    summary = _train(tiny_class, tmp_path, "off", s, selector=selector)
    assert summary["selected_meta_epoch"] == 3 and summary["used_test_set"]
    assert summary["selected_test_record"] == [0.9, 0.7]
    saved = torch.load(tmp_path / "off.pt", weights_only=True)
    assert torch.equal(saved["adaptor"]["weight"], seen[2]) and not torch.equal(seen[2], seen[3])
    with pytest.raises(ValueError, match="selector"):
        _train(tiny_class, tmp_path, "x", s)
    with pytest.raises(ValueError, match="selector"):
        _train(tiny_class, tmp_path, "y", _settings(), selector=selector)


def test_official_selection_through_the_run_reproduces_the_selected_record(tiny_class, tmp_path):
    s = _settings(meta_epochs=3, selection="official")
    run, runtime = RunKey("synthetic", "carpet", 1, "default"), cpu_runtime(32)
    simplenet_module.train("simplenet", s, run, runtime, class_dir=tiny_class, out=tmp_path / "m.pt",
                           ckpt_dir=tmp_path / "ck")  # fmt: skip
    detector = SimpleNetDetector(s, runtime, run, {"model": tmp_path / "m.pt"})
    assert detector.batch_size == s.batch_size and detector.crop is None and detector.load_size == 32
    result = run_class(detector, tiny_class, run, runtime, out_result=tmp_path / "r.json",
                       out_maps=tmp_path / "maps.npz")  # fmt: skip
    sel = result["extra"]["selection"]
    assert sel["mode"] == "official" and sel["used_test_set"] is True
    assert result["evaluation"]["switches"]["selection"] == "official"
    tested = [h["test_image_auroc"] for h in result["extra"]["history"]]
    assert len(tested) == 3 and sel["selected_test_record"][0] == max(tested)
    # the final evaluation of the kept weights is the evaluation that selected them
    assert result["metrics"]["image_auroc"] == sel["selected_test_record"][0]
    assert result["metrics"]["pixel_auroc"] == sel["selected_test_record"][1]
    # a run whose settings shape another model refuses this file
    with pytest.raises(ValueError, match="shapes the model"):
        SimpleNetDetector(_settings(meta_epochs=3, selection="official", noise_std=0.5), runtime, run,
                          {"model": tmp_path / "m.pt"})  # fmt: skip


def test_nan_loss_names_class_and_step(tiny_class, tmp_path, monkeypatch):
    import texad.methods.simplenet.training as train_mod

    calls = []

    def nan_on_third(real, fake, margin):
        calls.append(1)
        loss = truncated_l1_loss(real, fake, margin)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train_mod, "truncated_l1_loss", nan_on_third)
    with pytest.raises(RuntimeError, match=r"class 'carpet'.*step 3"):
        _train(tiny_class, tmp_path, "nan", _settings())
    assert not (tmp_path / "nan.pt").exists()


# ------------------------------------------------------------------------------------------ end to end
def test_end_to_end_synthetic_class(tmp_path):
    """Train and run through the jobs a workflow runs (``texad train simplenet`` / ``texad run simplenet``)."""
    generate_class(tmp_path, "carpet", image_size=64, n_train=16, n_test_good=6, n_test_per_defect=3, seed=0)
    dims = dict(pretrain_embed_dim=128, target_embed_dim=128, dsc_hidden=128)
    block = {**TINY, **dims, "image_size": 64, "resize": 64, "meta_epochs": 10, "gan_epochs": 4}
    top = {"run_name": "t", "device": "cpu", "evaluation": {"resolution": 32}}
    config = validate_config({**top, "methods": {"simplenet": block}}, partial=True)
    s = SimpleNetSettings.from_config(config, "carpet")
    run = RunKey("synthetic", "carpet", 0, "default")
    model = tmp_path / simplenet_module.model_file("simplenet", s, run)
    with pytest.raises(ValueError, match="config changed"):
        train_model("simplenet", config, run, class_dir=tmp_path / "carpet", out=model, ckpt_dir=tmp_path / "ck",
                    expect_hash="0" * 16)  # fmt: skip
    train_model("simplenet", config, run, class_dir=tmp_path / "carpet", out=model, ckpt_dir=tmp_path / "ck",
                expect_hash=simplenet_module.identity("simplenet", s, run))  # fmt: skip
    out = dict(class_dir=tmp_path / "carpet", models={"model": model}, out_result=tmp_path / "r.json",
               out_maps=tmp_path / "maps.npz")  # fmt: skip
    result = run_method("simplenet", config, run, **out)
    m = result["metrics"]
    assert m["n_images"] == 18 and m["n_anomalous"] == 12 and m["grid"] == [32, 32]
    # measured 0.89 (image) / 0.76 (pixel) for this seed; 0.89-0.97 / 0.76-0.80 over seeds 0-3
    assert m["image_auroc"] >= 0.8, m
    assert m["pixel_auroc"] >= 0.7, m
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["method"] == "simplenet" and on_disk["backbone"]["name"] == "efficientnet_lite0"
    assert on_disk["backbone"]["sha256"] is not None
    assert on_disk["evaluation"]["switches"] == {"center_crop": False, "selection": "last"}
    assert on_disk["extra"]["selection"]["used_test_set"] is False
    assert on_disk["extra"]["config"] == s.to_config()  # the block the run ran with
    assert on_disk["extra"]["timing"]["batch_size"] == s.batch_size
    assert on_disk["timings"]["train_s"] > 0 and on_disk["timings"]["images_per_s"] > 0
    maps = np.load(tmp_path / "maps.npz")
    assert maps["maps"].shape == (18, 32, 32)
    # the saved scores are the maxima of the raw patch scores, recomputed from the loaded model
    net, trained_with, meta = load_simplenet(model)
    assert trained_with == s and meta["config"] == s.to_config()
    test = load_test_set(tmp_path / "carpet", s, 32)
    with torch.no_grad():
        expected = image_scores(net.patch_scores(test.images)).numpy()
    np.testing.assert_allclose(maps["scores"], expected, rtol=1e-5, atol=1e-5)
    assert meta["model_hash"] == result["model_hash"] == simplenet_module.identity("simplenet", s, run)
    # another smoothing_sigma reuses the model (same identity): same image scores, other maps
    mtime = model.stat().st_mtime_ns
    smoother = validate_config(
        {**top, "methods": {"simplenet": {**block, "smoothing_sigma": 1}}}, partial=True
    )
    out.update(out_result=tmp_path / "r2.json", out_maps=tmp_path / "maps2.npz")
    again = run_method("simplenet", smoother, run, **out)
    assert model.stat().st_mtime_ns == mtime and again["model_hash"] == result["model_hash"]
    assert again["extra"]["config"]["methods"]["simplenet"]["smoothing_sigma"] == 1.0
    assert again["metrics"]["image_auroc"] == m["image_auroc"]
    maps2 = np.load(tmp_path / "maps2.npz")
    np.testing.assert_array_equal(maps2["scores"], maps["scores"])
    assert not np.allclose(maps2["maps"], maps["maps"])
    # the anomaly map is the upsampled, smoothed patch score: F.interpolate + Gaussian, checked at one image
    patch = net.patch_scores(test.images[:1])
    up = F.interpolate(patch[:, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0].numpy()
    from scipy.ndimage import gaussian_filter

    ref = gaussian_filter(up, sigma=4.0)
    np.testing.assert_allclose(anomaly_maps(patch, 64, 4.0)[0], ref, rtol=1e-5, atol=1e-5)
