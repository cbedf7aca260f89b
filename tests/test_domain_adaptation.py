"""DDAD's feature-extractor domain adaptation: the loss against its formula, training, resume, loading."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from texad.backbones.features import FeatureExtractor, load_backbone
from texad.checkpoints import TrainingStopped
from texad.config import ConfigError, validate_config
from texad.diffusion.schedules import NoiseSchedule
from texad.methods import make_settings
from texad.methods import method_b as method_b_module
from texad.methods.base import RunKey, Runtime
from texad.methods.method_b.domain_adaptation import (
    ADAPTATION_LAYERS,
    adapt_features,
    adaptation_loop,
    adaptation_loss,
    load_adapted_state,
)
from texad.methods.method_b.settings import AdaptationSettings, MethodBSettings, adaptation_settings


def _method_b(feature_adaptation: dict | None = None, **inference) -> MethodBSettings:
    """Method B's settings with these ``feature_adaptation`` and ``inference`` keys (schema defaults else);
    ``epochs`` is per class in the config, the value of every class here."""
    fa = dict(feature_adaptation or {})
    if "epochs" in fa:
        fa["epochs"] = {"default": fa["epochs"]}
    return make_settings("method_b", {"feature_adaptation": fa, "inference": inference})


def _rejected(block: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"methods\\.method_b\\.{key}"):
        validate_config({"methods": {"method_b": block}}, partial=True)


def _cos_ref(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of 1 - cos of the flattened maps, by explicit loops."""
    out = []
    for i in range(a.shape[0]):
        u, v = a[i].ravel(), b[i].ravel()
        out.append(1.0 - float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return float(np.mean(out))


def test_adaptation_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    shapes = {"layer1": (3, 4, 6, 6), "layer2": (3, 5, 3, 3)}
    f = [{k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()} for _ in range(4)]
    lam = 0.1
    got = float(adaptation_loss(f[0], f[1], f[2], f[3], lam))
    ref = 0.0
    for k in shapes:
        a, b, c, d = (x[k].numpy() for x in f)
        ref += _cos_ref(a, b) + lam * _cos_ref(b, c) + lam * _cos_ref(a, d)
    assert got == pytest.approx(ref, rel=1e-12)


def test_adaptation_loss_is_zero_for_identical_features_and_scale_invariant():
    f = {"layer1": torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.1}
    assert float(adaptation_loss(f, f, f, f, 0.5)) == pytest.approx(0.0, abs=1e-12)
    scaled = {"layer1": 3.0 * f["layer1"]}
    assert float(adaptation_loss(scaled, f, f, scaled, 0.5)) == pytest.approx(0.0, abs=1e-12)


def test_settings_reject_bad_values():
    # 0 epochs means: do not adapt (the pretrained extractor serves); there is then nothing to train
    assert adaptation_settings(_method_b({"epochs": 0}), 0) is None
    none = _method_b({"epochs": 0})
    run = RunKey("synthetic", "wood", 0, "default")
    assert method_b_module.identity("features", none, run) is None
    assert method_b_module.models(none) == {"model": "ddpm"}
    runtime = Runtime.from_config(validate_config({"device": "cpu"}, partial=True))
    with pytest.raises(ValueError, match="feature_adaptation.epochs is 0 for class wood: nothing to adapt"):
        method_b_module.train("features", none, run, runtime, class_dir=Path("unused"), out=Path("unused.pt"),
                              ckpt_dir=Path("unused"), model=Path("ddpm.pt"))  # fmt: skip
    # per class: only the classes that list epochs adapt
    per_class = make_settings("method_b", {"feature_adaptation": {"epochs": {"default": 0, "carpet": 2}}},
                              class_name="carpet")  # fmt: skip
    assert adaptation_settings(per_class, 0).epochs == 2
    assert method_b_module.models(per_class) == {"model": "ddpm", "features": "features"}
    # what the settings refused themselves, the config refuses now, naming the key
    _rejected({"feature_adaptation": {"epochs": {"default": -1}}}, "feature_adaptation.epochs")
    _rejected({"feature_adaptation": {"batch_size": 1}}, "feature_adaptation.batch_size")  # half and half
    _rejected({"feature_adaptation": {"lambda": -0.1}}, "feature_adaptation.lambda")
    _rejected({"feature_adaptation": {"w": -1}}, "feature_adaptation.w")
    _rejected({"feature_adaptation": {"lr": 0}}, "feature_adaptation.lr")


def test_adaptation_settings_and_loop_come_from_the_run_settings():
    """The trainer's settings: the feature_adaptation block (with its own loop's t_start and skip, DDAD's *_DA
    keys), the run's eta and feature size, and the seed; its reconstruction loop is DDAD's: the adaptation's w, no
    blur guidance, one draw."""
    fa = {"epochs": 2, "w": 3, "lambda": 0.2, "lr": 1e-3, "batch_size": 4, "t_start": 150, "skip": 15}
    settings = _method_b(fa, t_start=100, skip=10, eta=0.5, w={"default": 8}, s=0.75, draws=3, clip_x0=True,
                         first_call_at_ts=True, feature_size=48)  # fmt: skip
    a = adaptation_settings(settings, 7)
    assert a == AdaptationSettings(epochs=2, w=3.0, lam=0.2, lr=1e-3, batch_size=4, t_start=150, skip=15, eta=0.5,
                                   seed=7, feature_size=48)  # fmt: skip
    loop = adaptation_loop(a, settings.inference)
    assert (loop.w, loop.s, loop.draws, loop.t_start, loop.skip, loop.eta) == (3.0, 0.0, 1, 150, 15, 0.5)
    assert not loop.clip_x0 and not loop.first_call_at_ts
    assert replace(
        loop, w=8.0, s=0.75, draws=3, clip_x0=True, first_call_at_ts=True, t_start=100, skip=10
    ) == (settings.inference)


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    extractor = load_backbone("resnet18", weights="none", cache_dir=None, layers=ADAPTATION_LAYERS)
    schedule = NoiseSchedule.linear(1000, 1e-4, 0.02)
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    run = _method_b(
        {"epochs": 2, "batch_size": 4, "lr": 1e-3, "t_start": 50, "skip": 25}, t_start=50, skip=25
    )
    settings = adaptation_settings(run, 0)

    def eps_model(x_t, t):  # a fixed, deterministic stand-in for the U-Net
        return 0.1 * x_t

    return extractor, schedule, images, settings, run.inference, eps_model


def _run(setup, tmp_path, name, **kw):
    extractor, schedule, images, settings, inference, eps_model = setup
    return adapt_features(
        eps_model, schedule, extractor, images, settings, inference, model_hash="abc123abc123",
        out_path=tmp_path / f"{name}.pt", ckpt_dir=tmp_path / f"ck-{name}", progress=False,
        log=lambda m: None, **kw,
    )  # fmt: skip


def test_adaptation_changes_the_copy_not_the_original_and_loads_back(setup, tmp_path):
    extractor = setup[0]
    before = {k: v.clone() for k, v in extractor.state_dict().items()}
    summary = _run(setup, tmp_path, "a")
    assert len(summary["losses"]) == 2 and all(np.isfinite(summary["losses"]))
    for k, v in extractor.state_dict().items():  # the frozen original is untouched
        assert torch.equal(v, before[k]), k
    assert not extractor.training and all(not p.requires_grad for p in extractor.parameters())

    state, record = load_adapted_state(tmp_path / "a.pt")
    assert record["epochs"] == 2 and len(record["sha256"]) == 64
    changed = [k for k in before if k.endswith("weight") and not torch.equal(state[k], before[k])]
    assert changed, "no parameter moved"
    # BatchNorm ran in train mode (DDAD), so its running statistics moved too
    assert any(not torch.equal(state[k], before[k]) for k in before if k.endswith("running_mean"))

    test_fe = load_backbone("resnet18", weights="none", cache_dir=None, layers=("layer2", "layer3"))
    test_fe.load_adapted(state, record)
    assert test_fe.describe()["adapted"]["sha256"] == record["sha256"]
    assert torch.equal(test_fe.state_dict()["stem.0.weight"], state["stem.0.weight"])
    assert not test_fe.training


def test_resume_after_interruption_gives_the_same_weights(setup, tmp_path):
    _run(setup, tmp_path, "full")
    with pytest.raises(TrainingStopped):
        _run(setup, tmp_path, "cut", _stop_after_epoch=1)
    assert not (tmp_path / "cut.pt").exists()
    _run(setup, tmp_path, "cut")
    full, _ = load_adapted_state(tmp_path / "full.pt")
    cut, _ = load_adapted_state(tmp_path / "cut.pt")
    for k in full:
        assert torch.equal(full[k], cut[k]), k


def test_too_few_images_is_a_clear_error(setup, tmp_path):
    extractor, schedule, images, settings, inference, eps_model = setup
    with pytest.raises(ValueError, match="batch_size=4"):
        adapt_features(eps_model, schedule, extractor, images[:3], settings, inference, model_hash="abc123abc123",
                       out_path=tmp_path / "x.pt", ckpt_dir=tmp_path / "ck", progress=False)  # fmt: skip


def test_identity_does_not_depend_on_int_or_float_spelling():
    a = adaptation_settings(
        _method_b({"epochs": 2, "w": 3, "lambda": 0.1, "lr": 1e-4, "batch_size": 4}, eta=1), 0
    )
    b = adaptation_settings(
        _method_b({"epochs": 2.0, "w": 3.0, "lambda": 0.1, "lr": 0.0001, "batch_size": 4.0}, eta=1.0), 0
    )
    assert a == b and isinstance(b.epochs, int) and isinstance(a.w, float) and isinstance(a.eta, float)
    assert a.identity_hash("m", "resnet18", "none") == b.identity_hash("m", "resnet18", "none")
    assert a.identity_hash("m", "resnet18", "none") != replace(a, epochs=3).identity_hash(
        "m", "resnet18", "none"
    )
    # the seed, the DDPM and the starting backbone are part of it too
    assert a.identity_hash("m", "resnet18", "none") != replace(a, seed=1).identity_hash(
        "m", "resnet18", "none"
    )
    assert a.identity_hash("m", "resnet18", "none") != a.identity_hash("n", "resnet18", "none")


@pytest.mark.parametrize("feature_size", [None, 48])
def test_extractor_sees_the_maps_comparison_size(setup, tmp_path, feature_size):
    """With feature_size set, the adaptation resizes every image it gives the extractor (the trainable copy
    and the frozen original) to that side, as the anomaly maps do; without it, the model's 32 px."""
    extractor, schedule, images, settings, inference, eps_model = setup
    sides = []
    original_copy = extractor.trainable_copy

    def spied_copy():  # hooks on both after copying, so that neither carries the other's
        copy = original_copy()
        for module in (copy, extractor):
            module.register_forward_pre_hook(lambda module, args: sides.append(tuple(args[0].shape[-2:])))
        return copy

    extractor.trainable_copy = spied_copy
    run = _method_b(
        {"epochs": 1, "batch_size": 4, "lr": 1e-3}, t_start=50, skip=25, feature_size=feature_size
    )
    s = adaptation_settings(run, 0)
    assert s.feature_size == feature_size  # the maps' comparison size
    adapt_features(eps_model, schedule, extractor, images, s, run.inference, model_hash="abc123abc123",
                   out_path=tmp_path / "a.pt", ckpt_dir=tmp_path / "ck", progress=False)  # fmt: skip
    side = feature_size or 32
    # 2 steps x (adapted: reconstruction + target, frozen: target + reconstruction)
    assert sides == [(side, side)] * 8


def test_feature_size_shapes_the_identity_and_none_keeps_the_earlier_one():
    base = adaptation_settings(_method_b({"epochs": 2}), 0)
    assert base.feature_size is None
    assert "feature_size" not in base.identity("m", "resnet18", "none")["settings"]
    sized = adaptation_settings(_method_b({"epochs": 2}, feature_size=128), 0)
    assert sized.identity("m", "resnet18", "none")["settings"]["feature_size"] == 128
    assert base.identity_hash("m", "resnet18", "none") != sized.identity_hash("m", "resnet18", "none")
    _rejected({"inference": {"feature_size": 8}}, "inference.feature_size")


def test_every_inference_point_of_the_ablation_reuses_the_adapted_extractor():
    """The adaptation runs its own loop (DDAD's test_trajectoy_steps_DA / skip_DA): a start-step point of the
    ablation found the paper rehearsal asking for an extractor adapted at its own t_start, which nothing trains."""
    block = {"feature_adaptation": {"epochs": {"default": 2}},
             "ablation": {"t_start": [150, 350], "w": [0, 11], "s": [0, 1.0], "blur_sigma": [9]}}  # fmt: skip
    settings = make_settings("method_b", block, class_name="wood")
    run = RunKey("mvtec_ad", "wood", 0, "default")
    default = method_b_module.identity("features", settings, run)
    variants = method_b_module.variants(settings)
    assert {v.settings.inference.t_start for v in variants} == {150, 250, 350}
    for v in variants:
        assert method_b_module.identity("features", v.settings, run) == default, v.name
    # the adaptation's own loop shapes the extractor
    moved = make_settings("method_b", {**block, "feature_adaptation": {"epochs": {"default": 2}, "t_start": 150}},
                          class_name="wood")  # fmt: skip
    assert method_b_module.identity("features", moved, run) != default
    assert adaptation_settings(moved, 0).t_start == 150 and adaptation_settings(settings, 0).skip == 25


# ----------------------------------------------------------------------------------------------------
# one adaptation run against a hand-computed one
# ----------------------------------------------------------------------------------------------------
def _tiny_extractor() -> FeatureExtractor:
    """A three-stage float64 conv net in the extractor's frame: convolutions without bias (as in a ResNet; before
    a train-mode BatchNorm a bias gets a zero gradient, which Adam's g / (|g| + eps) turns into rounding noise),
    BatchNorm with fresh running statistics."""
    torch.manual_seed(3)

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    stages = {"layer1": block(4, 4, 1), "layer2": block(4, 6, 2), "layer3": block(6, 8, 2)}
    return FeatureExtractor(block(3, 4, 2), stages, layers=ADAPTATION_LAYERS, name="tiny", weights="none",
                            weight_path=None, sha256=None).double()  # fmt: skip


def _hand_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos of each sample's flattened maps, averaged over the batch, written out."""
    a, b = a.flatten(1), b.flatten(1)
    return (1.0 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean()


@pytest.mark.usefixtures("one_torch_thread")
def test_adaptation_steps_equal_hand_computed_adamw_steps(tmp_path, monkeypatch):
    """Two epochs of two steps on a tiny float64 extractor equal the same steps done by hand: the spec's loss
    (§1.4: sum over the layers of (1 - cos(F(x_rec), F(y))) + lambda (1 - cos(F(y), F0(y))) + lambda (1 -
    cos(F(x_rec), F0(x_rec))), F trained in train() mode, F0 the frozen original), its gradient by autograd and
    AdamW's update (lr, default weight decay 0.01, betas (0.9, 0.999), eps 1e-8) written out. The reconstructions
    are the code's own (recorded); each batch's target and input halves cover the images once per epoch. A
    sign-flipped loss, a dropped lambda term or another optimiser gives other weights and losses."""
    from texad.methods.method_b import domain_adaptation

    extractor = _tiny_extractor()
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    settings = AdaptationSettings(epochs=2, w=3.0, lam=0.5, lr=1e-2, batch_size=4, t_start=50, skip=25, eta=0.0,
                                  seed=0, feature_size=None)  # fmt: skip
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = domain_adaptation.reconstruct

    def spy(eps_model, schedule, x, recon, *, seeds, target):
        x_rec, info = real(eps_model, schedule, x, recon, seeds=seeds, target=target)
        calls.append((x.clone(), target.clone(), x_rec.clone()))
        return x_rec, info

    monkeypatch.setattr(domain_adaptation, "reconstruct", spy)
    summary = adapt_features(lambda x_t, t: 0.1 * x_t, NoiseSchedule.linear(1000, 1e-4, 0.02), extractor, images,
                             settings, _method_b().inference, model_hash="abc123abc123", out_path=tmp_path / "a.pt",
                             ckpt_dir=tmp_path / "ck", progress=False, log=lambda m: None)  # fmt: skip
    assert len(calls) == 4
    for epoch in (calls[:2], calls[2:]):  # every image once per epoch, as target or as input
        used = torch.cat([torch.cat([x, y]) for x, y, _ in epoch]).flatten(1).sum(1)
        assert sorted(used.tolist()) == pytest.approx(sorted(images.flatten(1).sum(1).tolist()))

    hand = extractor.trainable_copy().train()
    params = list(hand.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    lr, wd, b1, b2, eps, lam = settings.lr, 0.01, 0.9, 0.999, 1e-8, settings.lam
    losses = []
    for k, (_, target, x_rec) in enumerate(calls, start=1):
        rec01, target01 = (x_rec + 1) / 2, (target + 1) / 2
        f_rec, f_target = hand(rec01), hand(target01)
        with torch.no_grad():
            f0_target, f0_rec = extractor(target01), extractor(rec01)
        loss = sum(
            _hand_distance(f_rec[layer], f_target[layer])
            + lam * _hand_distance(f_target[layer], f0_target[layer])
            + lam * _hand_distance(f_rec[layer], f0_rec[layer])
            for layer in ADAPTATION_LAYERS
        )
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, m_i, v_i in zip(params, grads, m, v, strict=True):
                m_i.mul_(b1).add_((1 - b1) * g)
                v_i.mul_(b2).add_((1 - b2) * g * g)
                p.mul_(1 - lr * wd)
                p.sub_(lr * (m_i / (1 - b1**k)) / ((v_i / (1 - b2**k)).sqrt() + eps))
        losses.append(float(loss.detach()))
    assert losses[0] > 0.01  # the lambda terms count from the first step: F in train(), F0 in eval()
    assert summary["losses"] == pytest.approx([(losses[0] + losses[1]) / 2, (losses[2] + losses[3]) / 2],
                                              rel=1e-9)  # fmt: skip
    state, _ = load_adapted_state(tmp_path / "a.pt")
    want = hand.state_dict()
    assert state.keys() == want.keys()
    moved = 0.0
    for name, value in want.items():  # parameters and BatchNorm's running statistics
        torch.testing.assert_close(state[name], value, rtol=1e-9, atol=1e-12, msg=name)
        moved = max(moved, float((value.double() - extractor.state_dict()[name].double()).abs().max()))
    assert moved > 0.01
