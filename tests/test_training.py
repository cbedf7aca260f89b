"""Tests of texad.diffusion.training: per-class diffusion training, checkpoints, resume and the model file.

The trainers' settings have no defaults: they are built from a method's config block (the schema's defaults for
every key not given) by ``ddpm_train_settings`` (Method B) and ``score_train_settings`` (Method A), as the jobs
build them; a test varies them with ``dataclasses.replace``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from texad.data.holdout import Holdout
from texad.data.synth import generate_class
from texad.diffusion import training
from texad.diffusion.schedules import NoiseSchedule
from texad.diffusion.sde import VESDE, VPSDE, max_pairwise_distance
from texad.diffusion.training import (
    DiffusionTrainSettings,
    ScoreTrainSettings,
    TrainingStopped,
    build_sde,
    load_diffusion_model,
    load_score_model,
    load_train_images,
    train_diffusion,
)
from texad.methods import make_settings
from texad.methods.method_a.settings import score_train_settings
from texad.methods.method_b.settings import ddpm_train_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_class(root, "woven", image_size=32, n_train=6, n_test_good=1, n_test_per_defect=1, seed=0)
    return root / "woven"


#: Method B's block of the tiny DDPM these tests train (every other key: the schema's default)
DDPM_BLOCK = {"diffusion": {"preset": "tiny"}, "train": {"epochs": {"default": 4}, "batch_size": 4}}


def _settings(**kw) -> DiffusionTrainSettings:
    """The tiny DDPM's trainer settings for synth/woven, seed 0, with the fields ``kw`` replaced."""
    method_b = make_settings("method_b", DDPM_BLOCK, class_name="woven", image_size=32)
    return dataclasses.replace(ddpm_train_settings(method_b, "synth", "woven", 0), **kw)


def _train(class_dir: Path, tmp: Path, name: str, settings: DiffusionTrainSettings, **kw) -> dict:
    kw.setdefault("device", "cpu")
    kw.setdefault("precision", "fp32")
    kw.setdefault("checkpoint_every", 50)
    kw.setdefault("log", _quiet)
    kw.setdefault("progress", False)
    return train_diffusion(class_dir, tmp / f"{name}.pt", tmp / f"{name}_ckpt", settings, **kw)


def _assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------------
# the model file
# ----------------------------------------------------------------------------------------------------
def test_train_writes_model_and_load_returns_ema_weights(class_dir, tmp_path):
    s = _settings(epochs=2, ema=0.9)
    config = {"image_size": 32, "methods": {"method_b": {"inference": {"t_start": 100}}}}  # kept, not read
    summary = _train(class_dir, tmp_path, "m", s, precision="bf16", config=config)
    out = tmp_path / "m.pt"
    assert out.is_file()
    assert (tmp_path / "m_ckpt" / "last.pt").is_file()
    assert not list(tmp_path.glob(".*.tmp"))

    # 6 images, batch 4, drop_last: one step per epoch; CPU forces fp32 and records it
    assert summary["epochs"] == 2 and summary["steps"] == 2
    assert summary["precision"] == "fp32" and summary["device"] == "cpu"
    assert summary["resumed_from_epoch"] is None
    assert summary["images_per_s"] > 0 and summary["seconds"] > 0
    assert summary["final_loss"] == summary["epoch_losses"][-1]

    model, schedule, meta = load_diffusion_model(out)
    assert not model.training
    assert isinstance(schedule, NoiseSchedule) and schedule.num_timesteps == s.timesteps
    assert meta["model_hash"] == s.model_hash()
    assert meta["settings"] == dataclasses.asdict(s)
    assert meta["config"] == config  # the config block the settings came from, for texad predict
    assert meta["n_params"] == sum(p.numel() for p in model.parameters())
    assert meta["train"]["steps"] == 2
    assert meta["schedule"] == {"timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}

    stored = torch.load(out, weights_only=True)
    _assert_state_equal(model.state_dict(), stored["state_dict"])
    assert stored["config"] == config
    ckpt = torch.load(tmp_path / "m_ckpt" / "last.pt", weights_only=True)
    _assert_state_equal(stored["state_dict"], ckpt["ema"])
    # the EMA differs from the raw weights after training
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in ckpt["model"])

    with torch.no_grad():
        y = model(torch.zeros(1, 3, 32, 32), torch.tensor([5]))
    assert y.shape == (1, 3, 32, 32)


def test_ema_zero_keeps_raw_weights(class_dir, tmp_path):
    _train(class_dir, tmp_path, "m", _settings(epochs=1, ema=0.0))
    ckpt = torch.load(tmp_path / "m_ckpt" / "last.pt", weights_only=True)
    _assert_state_equal(ckpt["ema"], ckpt["model"])


def test_log_shows_the_gradient_norm_before_clipping_and_the_decay_term(class_dir, tmp_path):
    """The logged norm is the one before clipping: a first step clipped to 1e-6 logs the same norm as an unclipped
    one (same data, same noise), and the clipped step then changes the weights less, so epoch 2 differs."""
    lines: list[str] = []
    free = _train(class_dir, tmp_path, "free", _settings(epochs=2, grad_clip=0.0), checkpoint_every=1)
    clipped = _train(class_dir, tmp_path, "clip", _settings(epochs=2, grad_clip=1e-6), checkpoint_every=1,
                     log=lines.append)  # fmt: skip
    assert free["epoch_grad_norms"][0] == clipped["epoch_grad_norms"][0] > 1e-3
    assert free["epoch_grad_norms"][1] != clipped["epoch_grad_norms"][1]
    assert clipped["grad_clip"] == 1e-6 and free["grad_clip"] == 0.0
    model, _, _ = load_diffusion_model(tmp_path / "clip.pt")  # ema 0: the raw weights
    theta = torch.nn.utils.get_total_norm([p.detach() for p in model.parameters()])
    last = [line for line in lines if "epoch 2/2" in line][0]
    assert f"grad norm before clipping {clipped['epoch_grad_norms'][1]:.4g}, clipped to 1e-06" in last
    assert f"weight-decay term 0.05 x |theta| = {0.05 * float(theta):.4g}" in last


def test_loss_goes_down_on_tiny_overfit(class_dir, tmp_path):
    summary = _train(class_dir, tmp_path, "m", _settings(epochs=8, lr=1e-3, batch_size=6))
    losses = summary["epoch_losses"]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2


def test_dataset_smaller_than_batch_is_one_batch(class_dir, tmp_path):
    summary = _train(class_dir, tmp_path, "m", _settings(epochs=2, batch_size=32))
    assert summary["steps"] == 2


# ----------------------------------------------------------------------------------------------------
# checkpoints and resume
# ----------------------------------------------------------------------------------------------------
def test_resume_is_bit_identical(class_dir, tmp_path):
    s = _settings(epochs=4, ema=0.5)
    _train(class_dir, tmp_path, "a", s, checkpoint_every=1)

    with pytest.raises(TrainingStopped):
        _train(class_dir, tmp_path, "b", s, checkpoint_every=1, _stop_after_epoch=2)
    assert not (tmp_path / "b.pt").exists()
    assert torch.load(tmp_path / "b_ckpt" / "last.pt", weights_only=True)["epoch"] == 2
    # pollute the global RNG between "processes": the checkpoint must restore it
    torch.manual_seed(1234)
    torch.randn(100)
    lines: list[str] = []
    summary_b = _train(class_dir, tmp_path, "b", s, checkpoint_every=1, log=lines.append)
    assert summary_b["resumed_from_epoch"] == 2
    assert any("resuming" in line for line in lines)

    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    _assert_state_equal(a["state_dict"], b["state_dict"])
    ca = torch.load(tmp_path / "a_ckpt" / "last.pt", weights_only=True)
    cb = torch.load(tmp_path / "b_ckpt" / "last.pt", weights_only=True)
    _assert_state_equal(ca["model"], cb["model"])
    assert a["train"]["epoch_losses"] == b["train"]["epoch_losses"]
    assert a["train"]["steps"] == b["train"]["steps"] == 4
    assert a["model_hash"] == b["model_hash"] == s.model_hash()

    # a finished checkpoint: a rerun only rewrites the model file, with the same weights
    (tmp_path / "b.pt").unlink()
    summary_c = _train(class_dir, tmp_path, "b", s, checkpoint_every=3)
    assert summary_c["resumed_from_epoch"] == 4 and summary_c["steps"] == 4
    c = torch.load(tmp_path / "b.pt", weights_only=True)
    _assert_state_equal(a["state_dict"], c["state_dict"])


def test_checkpoint_of_another_model_is_refused(class_dir, tmp_path):
    _train(class_dir, tmp_path, "m", _settings(epochs=1))
    other = _settings(epochs=1, seed=1)
    ckpt = tmp_path / "m_ckpt" / "last.pt"
    with pytest.raises(ValueError) as err:
        _train(class_dir, tmp_path, "m", other)
    msg = str(err.value)
    assert str(ckpt) in msg and "delete" in msg
    assert _settings(epochs=1).model_hash() in msg and other.model_hash() in msg


def test_corrupt_checkpoint_is_refused(class_dir, tmp_path):
    ckpt = tmp_path / "m_ckpt" / "last.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"\x80\x02 this is not a torch checkpoint")
    with pytest.raises(ValueError, match="unreadable") as err:
        _train(class_dir, tmp_path, "m", _settings(epochs=1))
    assert str(ckpt) in str(err.value)

    torch.save({"model_hash": "x"}, ckpt)  # readable but not ours
    with pytest.raises(ValueError) as err:
        _train(class_dir, tmp_path, "m", _settings(epochs=1))
    assert str(ckpt) in str(err.value)


# ----------------------------------------------------------------------------------------------------
# failures
# ----------------------------------------------------------------------------------------------------
def test_nan_loss_names_class_and_step(class_dir, tmp_path, monkeypatch):
    real = training.epsilon_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        loss, info = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), info

    monkeypatch.setattr(training, "epsilon_loss", flaky)
    with pytest.raises(RuntimeError, match=r"synth class 'woven' at epoch 3, global step 3"):
        _train(class_dir, tmp_path, "m", _settings(epochs=4))
    assert not (tmp_path / "m.pt").exists()


def test_diverging_lr_raises(class_dir, tmp_path):
    with pytest.raises(RuntimeError, match="woven.*global step"):
        _train(class_dir, tmp_path, "m", _settings(epochs=6, lr=1e30, grad_clip=0.0))


def test_bad_arguments(class_dir, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        _train(class_dir, tmp_path, "m", _settings(), precision="fp8")
    with pytest.raises(ValueError, match="checkpoint_every"):
        _train(class_dir, tmp_path, "m", _settings(), checkpoint_every=0)
    with pytest.raises(TypeError, match="device"):  # no default device: the caller's runtime says where
        train_diffusion(class_dir, tmp_path / "m.pt", tmp_path / "ck", _settings(), precision="fp32",
                        checkpoint_every=1)  # fmt: skip
    with pytest.raises(TypeError):  # no defaults: every field is given (by the config's schema defaults)
        DiffusionTrainSettings(dataset="synth", class_name="woven")
    with pytest.raises(ValueError, match="optimizer"):
        _settings(optimizer="sgd")
    with pytest.raises(ValueError, match="ema"):
        _settings(ema=1.0)


def test_load_rejects_non_model_file(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"foo": 1}, path)
    with pytest.raises(ValueError, match="not a texad diffusion model"):
        load_diffusion_model(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        load_diffusion_model(path)


# ----------------------------------------------------------------------------------------------------
# identity
# ----------------------------------------------------------------------------------------------------
def test_model_hash_tracks_shaping_settings():
    s = _settings()
    h = s.model_hash()
    assert h == _settings().model_hash()
    assert s.identity()["format"] == training.FORMAT
    changes = dict(
        preset="paper_small",
        image_size=64,
        seed=1,
        epochs=5,
        timesteps=500,
        beta_end=0.03,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        optimizer="adamw",
        ema=0.99,
        grad_clip=1.0,
        dataset="mvtec",
        class_name="grid",
        t_max=300,
    )
    for name, value in changes.items():
        assert dataclasses.replace(s, **{name: value}).model_hash() != h, name
    # every field is in the identity; t_max and holdout only when set (full-range models on all of train/good kept
    # their names)
    fields = {f.name for f in dataclasses.fields(s)}
    assert set(s.identity()) == fields - {"t_max", "holdout"} | {"format"}
    assert set(dataclasses.replace(s, t_max=300).identity()) == fields - {"holdout"} | {"format"}
    held = dataclasses.replace(s, holdout=Holdout(0.2, 5, 0))
    assert held.identity()["holdout"] == {"holdout": 0.2, "min_holdout": 5, "seed": 0}
    assert held.model_hash() != h
    assert DiffusionTrainSettings.from_record(dataclasses.asdict(held)) == held


def test_model_hash_ignores_run_options(class_dir, tmp_path):
    s = _settings(epochs=1)
    _train(class_dir, tmp_path, "a", s, checkpoint_every=1, precision="fp32")
    _train(class_dir, tmp_path, "b", s, checkpoint_every=7, precision="fp16", device="cpu")
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["model_hash"] == b["model_hash"] == s.model_hash()
    _assert_state_equal(a["state_dict"], b["state_dict"])


def test_t_max_restricts_the_training_levels_and_guards_their_use(class_dir, tmp_path, monkeypatch):
    """train.t_max: every training step draws t < t_max; the model file records it, and a later use of the model
    above that level is refused (while full-range models accept any level)."""
    from texad.diffusion import losses
    from texad.diffusion.training import require_trained_level

    g = torch.Generator().manual_seed(0)
    t = losses.sample_timesteps(NoiseSchedule.linear(), 20000, "cpu", g, t_max=300)
    assert int(t.min()) == 0 and int(t.max()) == 299
    with pytest.raises(ValueError, match="t_max"):
        losses.sample_timesteps(NoiseSchedule.linear(), 4, "cpu", g, t_max=1001)
    with pytest.raises(ValueError, match="t_max"):
        _settings(t_max=0)

    seen: list[torch.Tensor] = []
    real = losses.sample_timesteps

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(losses, "sample_timesteps", spy)
    _train(class_dir, tmp_path, "m", _settings(epochs=3, t_max=40))
    assert seen and int(torch.cat(seen).max()) < 40
    _, _, meta = load_diffusion_model(tmp_path / "m.pt")
    assert meta["settings"]["t_max"] == 40
    require_trained_level(meta, 39, "a test")
    with pytest.raises(ValueError, match=r"t = 40.*t < 40 only.*t_max"):
        require_trained_level(meta, 40, "a test")
    require_trained_level({"settings": {"t_max": None}, "model_hash": "x"}, 999, "a test")


def test_ema_decay_warms_up_to_the_configured_value():
    from texad.diffusion.training import ema_decay

    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.999, 100000) == 0.999
    assert ema_decay(0.0, 5) == 0.0


def _ema_closed_form(decay: float, weights: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The EMA after K steps in closed form, from the raw weights p_0 (before the first step) .. p_K (after step
    k): ema_K = (prod_k d_k) p_0 + sum_k (1 - d_k) (prod_{j>k} d_j) p_k, with the warmed-up decay
    d_k = min(decay, (1 + k) / (10 + k)) of (1-based) step k (0 when decay is 0: the raw weights), in float64."""
    K = len(weights) - 1
    d = [None] + [0.0 if decay == 0 else min(decay, (1.0 + k) / (10.0 + k)) for k in range(1, K + 1)]
    after = [math.prod(d[k + 1 :]) for k in range(K + 1)]  # prod_{j>k} d_j (1 for k = K)
    coef = [after[0]] + [(1.0 - d[k]) * after[k] for k in range(1, K + 1)]
    assert sum(coef) == pytest.approx(1.0, abs=1e-12)  # an average of the raw weights
    pairs = list(zip(coef, weights, strict=True))
    return {name: sum(c * w[name].double() for c, w in pairs) for name in weights[0]}


@pytest.mark.parametrize("decay", [0.1, 0.9, 0.0])
def test_update_ema_equals_the_closed_form(decay):
    """``_update_ema`` with ``ema_decay``'s schedule, applied after each of 6 steps of made-up raw weights, gives
    the closed-form average (0.1: the fixed decay from step 1, as (1 + k) / (10 + k) > 0.1; 0.9: every step in the
    warm-up; 0: the raw weights); the buffers (BatchNorm's running statistics) are the raw model's latest ones."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).double()
    ema = copy.deepcopy(model)
    weights = [{k: v.detach().clone() for k, v in model.named_parameters()}]
    for step in range(1, 7):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            model.train()(torch.randn(5, 3, generator=g, dtype=torch.float64))  # moves the running statistics
        weights.append({k: v.detach().clone() for k, v in model.named_parameters()})
        training._update_ema(ema, model, training.ema_decay(decay, step))
    want = _ema_closed_form(decay, weights)
    for name, value in ema.named_parameters():
        torch.testing.assert_close(value, want[name], rtol=1e-12, atol=1e-12, msg=name)
        assert decay == 0 or (value - weights[-1][name]).abs().max() > 0.01, name  # not the raw weights
    for (name, value), raw in zip(ema.named_buffers(), model.buffers(), strict=True):
        assert torch.equal(value, raw), name
    assert float(model[1].running_mean.abs().max()) > 0  # the buffers did move


@pytest.mark.parametrize("kind", ["ddpm", "score"])
def test_training_saves_the_closed_form_ema_of_its_raw_weights(class_dir, tmp_path, kind):
    """Through the real training loop of both trainers (Method B's DDPM, Method A's score model): the raw weights
    are recorded before the first optimiser step and after each step (global optimiser hooks, outside the code
    under test); the checkpoint's EMA and the model file's weights equal the closed form of those weights, with
    the warmed-up decay of each global step, and the buffers equal the raw model's."""
    if kind == "ddpm":  # 6 images, batch 4, drop_last: one step per epoch
        s = _settings(epochs=5, ema=0.9, lr=1e-2)
        names = [n for n, _ in training.build_unet(s.preset, s.image_size).named_parameters()]
    else:
        s = _score_settings(iterations=5, ema=0.9, lr=1e-2, warmup=0, sigma_max=40.0)
        net = training.build_ncsnpp(s.preset, s.image_size, s.nf, s.sde)
        names = [n for n, _ in net.named_parameters()]
    weights: list[dict[str, torch.Tensor]] = []

    def record(optimizer, args, kwargs) -> None:
        params = optimizer.param_groups[0]["params"]
        assert len(optimizer.param_groups) == 1 and len(params) == len(names)
        weights.append({n: p.detach().clone() for n, p in zip(names, params, strict=True)})

    pre = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: None if weights else record(opt, args, kwargs)  # p_0: before step 1
    )
    post = register_optimizer_step_post_hook(record)
    try:
        summary = _train(class_dir, tmp_path, "m", s)
    finally:
        pre.remove()
        post.remove()
    assert summary["steps"] == 5 and len(weights) == 6
    ckpt = torch.load(tmp_path / "m_ckpt" / "last.pt", weights_only=True)
    stored = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    want = _ema_closed_form(0.9, weights)
    for name in names:
        assert torch.equal(ckpt["model"][name], weights[-1][name]), name  # the hooks saw the real weights
        torch.testing.assert_close(ckpt["ema"][name].double(), want[name], rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(stored[name], ckpt["ema"][name]), name
    moved = max(float((want[n] - weights[-1][n].double()).abs().max()) for n in names)
    assert moved > 1e-3  # far from the raw weights beyond the tolerance: the comparison can fail
    for name in set(ckpt["model"]) - set(names):  # buffers: copied from the raw model
        assert torch.equal(ckpt["ema"][name], ckpt["model"][name]), name


# ----------------------------------------------------------------------------------------------------
# the second objective: a score model on an SDE (Method A)
# ----------------------------------------------------------------------------------------------------
def test_ddpm_model_hash_is_pinned():
    """Neither the score objective nor the schema's defaults (they were the dataclass's) rename existing DDPM
    models (values from before those changes). The defaults became DDAD's regime (no EMA, no clipping): a model
    trained with the earlier defaults (EMA 0.999, clipping at 1.0, now given explicitly) keeps its name."""
    earlier = {"train": {"ema": 0.999, "grad_clip": 1.0}}
    defaults = make_settings("method_b", earlier, class_name="woven")  # image_size 256
    assert ddpm_train_settings(defaults, "synthetic", "woven", 0).model_hash() == "bc52b9e5332f"
    ddad = make_settings("method_b", class_name="woven")
    assert ddpm_train_settings(ddad, "synthetic", "woven", 0).model_hash() != "bc52b9e5332f"
    block = {
        "diffusion": {"preset": "tiny"},
        "train": {"epochs": {"default": 60}, "batch_size": 8, **earlier["train"]},
    }
    s = ddpm_train_settings(
        make_settings("method_b", block, class_name="carpet", image_size=64), "mvtec", "carpet", 0
    )
    assert s.model_hash() == "b813932f8cfe"


def _score_settings(**kw) -> ScoreTrainSettings:
    """A tiny score model's trainer settings (16 px: below the config's smallest image_size, so replaced)."""
    block = {
        "network": {"preset": "tiny", "nf": 8},
        "train": {"batch_size": 4, "iterations": 5, "warmup": 10},
    }
    base = score_train_settings(make_settings("method_a", block, image_size=32), "synth", "woven", 0)
    return dataclasses.replace(base, **{"image_size": 16, **kw})


def test_score_model_trains_by_iterations_resumes_bit_identically_and_loads(class_dir, tmp_path):
    s = _score_settings(iterations=5, ema=0.5)
    lines: list[str] = []
    summary = _train(class_dir, tmp_path, "a", s, checkpoint_every=1, log=lines.append)
    # 6 images, batch 4, drop_last: one step per epoch -> 5 epochs for 5 iterations
    assert summary["steps"] == 5 and summary["epochs"] == 5
    assert any("sigma_max auto" in line for line in lines)

    with pytest.raises(TrainingStopped):
        _train(class_dir, tmp_path, "b", s, checkpoint_every=1, _stop_after_epoch=2)
    torch.manual_seed(99)
    summary_b = _train(class_dir, tmp_path, "b", s, checkpoint_every=1)
    assert summary_b["resumed_from_epoch"] == 2
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    _assert_state_equal(a["state_dict"], b["state_dict"])
    assert a["train"]["epoch_losses"] == b["train"]["epoch_losses"]

    net, sde, meta = load_score_model(tmp_path / "a.pt", n_steps=123)
    assert isinstance(sde, VESDE) and sde.N == 123 and sde.sigma_min == 0.01
    images = (load_train_images(class_dir, 16) + 1) / 2
    assert sde.sigma_max == pytest.approx(max_pairwise_distance(images), rel=1e-9)
    assert meta["kind"] == "score_sde" and meta["model_hash"] == s.model_hash()
    assert meta["sde"] == sde.describe() | {"N": 1000}
    assert meta["n_params"] == sum(p.numel() for p in net.parameters())
    assert not net.training
    _assert_state_equal(net.state_dict(), a["state_dict"])
    with pytest.raises(ValueError, match="score model"):
        load_diffusion_model(tmp_path / "a.pt")
    _train(class_dir, tmp_path, "ddpm", _settings(epochs=1))
    with pytest.raises(ValueError, match="not a texad score model"):
        load_score_model(tmp_path / "ddpm.pt")


def test_score_model_last_epoch_stops_at_the_iteration_count_and_lr_warms_up(class_dir, tmp_path):
    s = _score_settings(batch_size=2, iterations=7, warmup=10, lr=1e-3, sigma_max=40.0)
    summary = _train(class_dir, tmp_path, "m", s)
    assert summary["steps"] == 7 and summary["epochs"] == 3  # 3 steps per epoch: 3 + 3 + 1
    ckpt = torch.load(tmp_path / "m_ckpt" / "last.pt", weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 7 / 10)
    _, sde, meta = load_score_model(tmp_path / "m.pt")
    assert sde.sigma_max == 40.0 and meta["sde"]["sigma_max"] == 40.0


@pytest.mark.parametrize("hflip", [True, False])
def test_score_model_hflip_augments_the_batches(class_dir, tmp_path, monkeypatch, hflip):
    seen: list[torch.Tensor] = []
    real = training.dsm_loss

    def spy(score_fn, sde, x0, **kw):
        seen.append(x0.detach().clone())
        return real(score_fn, sde, x0, **kw)

    monkeypatch.setattr(training, "dsm_loss", spy)
    _train(class_dir, tmp_path, "m", _score_settings(iterations=6, batch_size=6, hflip=hflip, sigma_max=40.0))
    images = (load_train_images(class_dir, 16) + 1) / 2
    flipped = 0
    for batch in seen:
        assert float(batch.min()) >= 0 and float(batch.max()) <= 1  # VE data in [0, 1]
        for x in batch:
            direct = any(torch.allclose(x, im) for im in images)
            mirrored = any(torch.allclose(x, im.flip(-1)) for im in images)
            assert direct or mirrored
            flipped += int(mirrored and not direct)
    assert (flipped > 5) if hflip else (flipped == 0)


def test_score_model_nan_names_class_and_step(class_dir, tmp_path, monkeypatch):
    real = training.dsm_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        loss, info = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 2 else loss), info

    monkeypatch.setattr(training, "dsm_loss", flaky)
    with pytest.raises(RuntimeError, match=r"synth class 'woven' at epoch 2, global step 2"):
        _train(class_dir, tmp_path, "m", _score_settings(sigma_max=40.0))


def test_score_model_hash_tracks_shaping_settings():
    s = _score_settings()
    h = s.model_hash()
    ident = s.identity()
    assert ident["kind"] == "score_sde" and ident["format"] == training.SCORE_FORMAT
    assert set(ident) == {f.name for f in dataclasses.fields(s)} - {"holdout"} | {"format", "kind"}
    changes = dict(
        sde="vp", sigma_min=0.02, sigma_max=50.0, preset="paper", nf=16, image_size=32, batch_size=8,
        iterations=6, lr=1e-3, warmup=0, grad_clip=0.0, ema=0.99, hflip=False, seed=1, class_name="grid",
        holdout=Holdout(0.2, 5, 0),
    )  # fmt: skip
    for name, value in changes.items():
        assert dataclasses.replace(s, **{name: value}).model_hash() != h, name
    vp = _score_settings(sde="vp")
    assert "sigma_max" not in vp.identity()
    assert dataclasses.replace(vp, sigma_max=77.0).model_hash() == vp.model_hash()  # unused by VP
    assert isinstance(build_sde(vp), VPSDE) and build_sde(vp, n_steps=7).N == 7
    with pytest.raises(ValueError, match="resolved"):
        build_sde(s)
    ve = build_sde(s, sigma_max=3.0, n_steps=11)
    assert isinstance(ve, VESDE) and (ve.sigma_min, ve.sigma_max, ve.N) == (0.01, 3.0, 11)
    assert build_sde(_score_settings(sigma_max=40.0), sigma_max=3.0).sigma_max == 40.0  # a set value wins
    with pytest.raises(ValueError, match="sigma_max"):
        _score_settings(sigma_max="big")
    with pytest.raises(ValueError, match="sigma_max"):
        _score_settings(sigma_max=0.005)  # below sigma_min
    assert _score_settings(sigma_max="40").sigma_max == 40.0  # command-line text
    assert _score_settings(sigma_max=40).model_hash() == _score_settings(sigma_max=40.0).model_hash()
    with pytest.raises(ValueError, match="sde"):
        _score_settings(sde="subvp")


def test_vp_score_model_sees_centred_data_and_loads(class_dir, tmp_path, monkeypatch):
    seen: list[torch.Tensor] = []
    real = training.dsm_loss

    def spy(score_fn, sde, x0, **kw):
        seen.append(x0.detach().clone())
        return real(score_fn, sde, x0, **kw)

    monkeypatch.setattr(training, "dsm_loss", spy)
    s = _score_settings(sde="vp", iterations=2, batch_size=6)
    _train(class_dir, tmp_path, "vp", s)
    centred = load_train_images(class_dir, 16)  # [-1, 1], score_sde's centred VP data
    for x in torch.cat(seen):
        assert any(torch.allclose(x, im) or torch.allclose(x, im.flip(-1)) for im in centred)
    net, sde, meta = load_score_model(tmp_path / "vp.pt", n_steps=50)
    assert isinstance(sde, VPSDE) and sde.N == 50 and meta["sde"]["type"] == "vp"
    assert net.embedding == "positional" and net.centered
