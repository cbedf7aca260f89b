"""Tests of texad.diffusion.unet: the epsilon-prediction U-Net, its presets and helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from texad.diffusion.unet import (
    PRESETS,
    AttentionBlock,
    UNet,
    build_unet,
    count_parameters,
    group_count,
    timestep_embedding,
)


def _randomise_zero_params(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised parameters small random values so every path carries gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _small_paper(image_size: int) -> UNet:
    return build_unet("paper", image_size, base_channels=16)


# ----------------------------------------------------------------------------------------------------
# shapes, presets, sizes
# ----------------------------------------------------------------------------------------------------
def test_paper_preset_shape_at_small_size():
    torch.manual_seed(0)
    model = _small_paper(64).eval()
    assert model.attention_resolutions == (8, 4, 2)  # factors 8, 16, 32 as at 256 px
    assert model.attention_downsample == (8, 16, 32)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 999]))
    assert out.shape == (2, 3, 64, 64)
    model = _small_paper(32)
    assert model.attention_resolutions == (4, 2, 1)
    assert model(torch.randn(1, 3, 32, 32), torch.zeros(1)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("size", [64, 128])
def test_tiny_preset_shape(size):
    torch.manual_seed(0)
    model = build_unet("tiny", size).eval()
    assert model.attention_downsample == (4,)
    assert model.attention_resolutions == (size // 4,)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size), torch.rand(2) * 999)
    assert out.shape == (2, 3, size, size)


def test_tiny_param_count_and_cost():
    model = build_unet("tiny", 64)
    n = count_parameters(model)
    assert 150_000 <= n <= 900_000, n
    # a forward pass at 64x64, batch 8, is cheap (a few GFLOP; ~0.1-0.2 s on a 2-core CPU)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(torch.randn(1, 3, 64, 64), torch.zeros(1))
    assert 8 * fc.get_total_flops() < 10e9  # FLOPs are linear in the batch size


def test_paper_param_count_on_meta_device():
    with torch.device("meta"):
        model = build_unet("paper", 256)
    n = count_parameters(model)
    print(f"paper U-Net at 256 px: {n:,} parameters")
    assert 10_000_000 < n < 100_000_000
    assert model.attention_resolutions == (32, 16, 8)
    assert model.attention_downsample == (8, 16, 32)
    assert model.base_channels == 64
    assert model.channel_mults == (1, 1, 2, 2, 4, 4)
    assert model.num_res_blocks == 2
    assert model.time_embed[0].out_features == 256  # 4 x base
    assert model.out[-1].out_channels == 3
    assert count_parameters(model, trainable_only=True) == n


def test_paper_preset_values():
    p = PRESETS["paper"]
    assert p["image_size"] == 256
    assert p["base_channels"] == 64
    assert tuple(p["channel_mults"]) == (1, 1, 2, 2, 4, 4)
    assert p["num_res_blocks"] == 2
    assert tuple(p["attention_resolutions"]) == (32, 16, 8)
    assert p["num_heads"] == 4 and p["dropout"] == 0.0 and p["groups"] == 32
    assert p["resblock_updown"] is True


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError) as e:
        build_unet("huge", 64)
    for name in PRESETS:
        assert name in str(e.value)


def test_overrides_are_applied():
    model = build_unet("tiny", 64, base_channels=8, dropout=0.1, attention_resolutions=(32,))
    assert model.base_channels == 8
    assert model.attention_downsample == (2,)
    # fewer levels than the preset's attention factors: unreachable factors are dropped
    model = build_unet("paper", 64, base_channels=16, channel_mults=(1, 2))
    assert model.attention_resolutions == ()
    assert model(torch.randn(1, 3, 64, 64), torch.zeros(1)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("bad", [100, 60, 0])
def test_bad_image_size_raises(bad):
    with pytest.raises(ValueError, match=f"image_size={bad}"):
        UNet(image_size=bad)
    with pytest.raises(ValueError, match=f"image_size={bad}"):
        build_unet("paper", bad)


def test_bad_input_size_and_attention_resolution_raise():
    model = build_unet("tiny", 64)
    with pytest.raises(ValueError, match="66x66"):
        model(torch.randn(1, 3, 66, 66), torch.zeros(1))
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(image_size=64, channel_mults=(1, 2), attention_resolutions=(16,))
    with pytest.raises(ValueError, match=r"t must have shape"):
        model(torch.randn(2, 3, 64, 64), torch.zeros(3))


def test_other_input_sizes_and_timestep_forms():
    model = build_unet("tiny", 64).eval()
    _randomise_zero_params(model)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = model(x, torch.tensor([10, 10]))
        assert out.shape == (2, 3, 32, 48)
        # scalar t broadcasts; long, float and python number agree
        torch.testing.assert_close(model(x, 10), out)
        torch.testing.assert_close(model(x, torch.tensor([10.0, 10.0])), out)
        # non-integer timesteps are accepted
        assert torch.isfinite(model(x, torch.tensor([10.5, 3.25]))).all()


def test_resblock_updown_false_variant():
    model = build_unet("tiny", 64, resblock_updown=False)
    out = model(torch.randn(2, 3, 64, 64), torch.tensor([1, 2]))
    assert out.shape == (2, 3, 64, 64)


# ----------------------------------------------------------------------------------------------------
# initialisation and training behaviour
# ----------------------------------------------------------------------------------------------------
def test_output_is_zero_at_init_and_moves_after_one_step():
    torch.manual_seed(0)
    model = build_unet("tiny", 32)
    x, t = torch.randn(2, 3, 32, 32), torch.randint(0, 1000, (2,))
    out = model(x, t)
    assert torch.count_nonzero(out) == 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = ((out - torch.randn_like(out)) ** 2).sum(dim=(1, 2, 3)).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        assert model(x, t).abs().max() > 0


def test_time_conditioning_matters_after_training():
    torch.manual_seed(0)
    model = build_unet("tiny", 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(4):
        t = torch.randint(0, 1000, (2,))
        eps = torch.randn_like(x)
        loss = ((model(x + eps * t[:, None, None, None] / 1000, t) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x0 = torch.randn(1, 3, 32, 32).repeat(3, 1, 1, 1)
    with torch.no_grad():
        out = model(x0, torch.tensor([5, 5, 900]))
    assert torch.equal(out[0], out[1])
    assert (out[0] - out[2]).abs().max() > 1e-4 * out[0].abs().max()


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_unet("tiny", 32)
    _randomise_zero_params(model)
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([3, 700]))
    ((out - torch.randn_like(out)) ** 2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing, missing


def test_eval_mode_is_deterministic_with_dropout():
    torch.manual_seed(0)
    model = build_unet("tiny", 32, dropout=0.3)
    _randomise_zero_params(model)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([1, 500])
    model.eval()
    with torch.no_grad():
        a, b = model(x, t), model(x, t)
    assert torch.equal(a, b)
    model.train()
    with torch.no_grad():
        c = model(x, t)
    assert not torch.equal(a, c)  # dropout is active in training mode


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = build_unet("tiny", 64).eval()
    _randomise_zero_params(model)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([7, 70])
    with torch.no_grad():
        ref = model(x, t)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [16, 64, 7])
def test_timestep_embedding_closed_form(dim):
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    emb = timestep_embedding(t, dim)
    half = dim // 2
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    for b, tv in enumerate(t.tolist()):
        for i in range(half):
            f = math.exp(-math.log(10000) * i / half)
            assert emb[b, i].item() == pytest.approx(math.sin(tv * f), abs=1e-4)
            assert emb[b, half + i].item() == pytest.approx(math.cos(tv * f), abs=1e-4)
    if dim % 2:
        assert torch.all(emb[:, -1] == 0)
    # max_period and integer / scalar inputs
    e2 = timestep_embedding(torch.tensor([3]), 8, max_period=100)
    expected = [math.sin(3 * 100 ** (-i / 4)) for i in range(4)] + [
        math.cos(3 * 100 ** (-i / 4)) for i in range(4)
    ]
    torch.testing.assert_close(e2[0], torch.tensor(expected))
    assert timestep_embedding(5, 8).shape == (1, 8)


def test_group_count():
    assert group_count(64, 32) == 32
    assert group_count(16, 32) == 16
    assert group_count(48, 32) == 24
    assert group_count(24, 32) == 24
    assert group_count(20, 8) == 5
    assert group_count(7, 4) == 1


def test_attention_block_matches_naive_attention():
    torch.manual_seed(0)
    block = AttentionBlock(16, num_heads=4, groups=4)
    torch.nn.init.normal_(block.proj.weight, std=0.1)
    x = torch.randn(2, 16, 5, 6)
    out = block(x)
    b, c, h, w = x.shape
    qkv = block.qkv(block.norm(x).reshape(b, c, h * w))  # (B, 3C, N)
    q, k, v = qkv.reshape(b, 3, 4, c // 4, h * w).unbind(1)  # (B, heads, d, N) each
    att = torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) / math.sqrt(c // 4), dim=-1)
    o = torch.einsum("bhnm,bhdm->bhdn", att, v).reshape(b, c, h * w)
    torch.testing.assert_close(out, x + block.proj(o).reshape(b, c, h, w), rtol=1e-4, atol=1e-5)
