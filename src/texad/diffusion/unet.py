"""Epsilon-prediction U-Net for the conditioned-denoising (DDAD-style) diffusion method.

Architecture (after the description of DDAD's U-Net in the method spec, written from scratch):

* Input convolution ``in_channels -> base_channels``.
* Encoder: one level per entry of ``channel_mults``; each level has ``num_res_blocks`` residual
  blocks (width ``base_channels * mult``), each optionally followed by a self-attention block, and
  every level except the last ends with a BigGAN-style *down-sampling residual block* (2x2 average
  pooling inside the block, on both the residual branch and the skip path) or, with
  ``resblock_updown=False``, a stride-2 convolution.
* Middle: residual block, self-attention, residual block.
* Decoder: mirror of the encoder with ``num_res_blocks + 1`` residual blocks per level, each fed the
  concatenation of the current features and one stored encoder activation (U-Net skip), and
  BigGAN-style *up-sampling residual blocks* (nearest-neighbour x2 inside the block).
* Output: GroupNorm -> SiLU -> 3x3 convolution to ``out_channels`` (the predicted noise epsilon).

Time conditioning: ``timestep_embedding(t, base_channels)`` -> Linear -> SiLU -> Linear gives a
``4 * base_channels`` embedding. Every residual block maps it (SiLU -> Linear) to a per-channel
*scale and shift* and applies ``h = GroupNorm(h) * (1 + scale) + shift`` before its second
convolution (FiLM / "scale-shift norm"). Timesteps may be integer indices or non-integer floats.

Initialisation: the last convolution of every residual branch, the output projection of every
attention block and the final output convolution are zero-initialised, so the freshly built network
is the identity on each residual path and outputs exactly zero.

GroupNorm uses ``groups`` groups when that divides the channel count, otherwise the largest divisor
of the channel count that is ``<= groups`` (relevant for small ``base_channels``).

Attention resolutions: ``UNet(attention_resolutions=...)`` takes *feature-map sizes* (side length
in pixels of the feature map) at the network's ``image_size``; e.g. ``(32, 16, 8)`` at 256 px means
attention at down-sampling factors 8, 16 and 32. Presets store their sizes relative to the preset's
own ``image_size`` and :func:`build_unet` converts them to down-sampling factors, so the attention
stays at the same *depth* of the network when another image size is requested (paper preset at
64 px: attention at feature sizes 8, 4, 2). The network accepts inputs of any size divisible by
``2 ** (len(channel_mults) - 1)``; attention placement is fixed at construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .presets import UNET_PRESETS

__all__ = [
    "PRESETS",
    "UNet",
    "build_unet",
    "count_parameters",
    "group_count",
    "timestep_embedding",
]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor | float, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly non-integer) timesteps.

    With ``half = dim // 2`` and ``f_i = exp(-ln(max_period) * i / half)`` for ``i = 0 .. half-1``,
    returns ``[sin(t * f_0), ..., sin(t * f_{half-1}), cos(t * f_0), ..., cos(t * f_{half-1})]``
    (float32, shape ``(B, dim)``); an odd ``dim`` gets one trailing zero column.
    ``t`` may be a number, a 0-d tensor or a tensor of shape ``(B,)``.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"t must be a scalar or have shape (B,), got shape {tuple(t.shape)}")
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * i / max(half, 1))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=1)
    return emb


def group_count(channels: int, groups: int = 32) -> int:
    """Largest divisor of ``channels`` that is ``<= groups`` (``groups`` itself when it divides)."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels, groups), channels, eps=1e-5)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (works on the ``meta`` device too)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ----------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """Residual block with scale-shift time conditioning and optional BigGAN-style resampling.

    ``h = conv1(resample(SiLU(GN(x))))``; ``h = GN(h) * (1 + scale) + shift`` with
    ``(scale, shift) = Linear(SiLU(emb))``; ``h = conv2(dropout(SiLU(h)))`` (conv2 zero-initialised);
    output ``skip(resample(x)) + h`` where ``skip`` is the identity or a 1x1 convolution.
    ``resample`` is 2x2 average pooling (``down``), nearest x2 (``up``) or nothing.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        dropout: float = 0.0,
        groups: int = 32,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a residual block cannot both up- and down-sample")
        self.up, self.down = up, down
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        h = self.conv1(self._resample(h))
        x = self._resample(x)
        scale, shift = self.emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over spatial positions (pre-GroupNorm, residual, zero-init output)."""

    def __init__(self, channels: int, num_heads: int = 4, groups: int = 32) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        n = hh * ww
        qkv = self.qkv(self.norm(x).reshape(b, c, n))  # (B, 3C, N)
        # (B, 3C, N) -> (3, B, heads, N, C/heads)
        qkv = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, n).permute(1, 0, 2, 4, 3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, C/heads)
        out = out.permute(0, 1, 3, 2).reshape(b, c, n)
        return x + self.proj(out).reshape(b, c, hh, ww)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (used when ``resblock_updown=False``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 convolution (used when ``resblock_updown=False``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.ModuleList):
    """Sequence of blocks; residual blocks receive the time embedding, others only the features."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


# ----------------------------------------------------------------------------------------------------
# U-Net
# ----------------------------------------------------------------------------------------------------
class UNet(nn.Module):
    """Time-conditioned U-Net predicting the noise epsilon (see the module docstring).

    ``forward(x, t)``: ``x`` of shape ``(B, in_channels, H, W)`` with ``H`` and ``W`` divisible by
    ``2 ** (len(channel_mults) - 1)``; ``t`` a float or integer tensor of shape ``(B,)`` (or a
    scalar, broadcast over the batch) of timestep indices, non-integer values allowed. Returns
    ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        image_size: int = 256,
        num_heads: int = 4,
        dropout: float = 0.0,
        groups: int = 32,
        resblock_updown: bool = True,
    ) -> None:
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        if not channel_mults:
            raise ValueError("channel_mults must not be empty")
        factor = 2 ** (len(channel_mults) - 1)
        if image_size < 1 or image_size % factor:
            raise ValueError(
                f"image_size={image_size} must be a positive multiple of {factor} "
                f"(2 ** (len(channel_mults) - 1) for channel_mults={channel_mults})"
            )
        level_sizes = [image_size // 2**i for i in range(len(channel_mults))]
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        unknown = sorted(set(attention_resolutions) - set(level_sizes))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no feature-map size of the network at "
                f"image_size={image_size} (sizes {level_sizes})"
            )
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base_channels = base_channels
        self.channel_mults = channel_mults
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.image_size = image_size
        self.size_multiple = factor
        #: down-sampling factors (1, 2, 4, ...) of the levels that carry self-attention
        self.attention_downsample = tuple(
            2**i for i, s in enumerate(level_sizes) if s in set(attention_resolutions)
        )
        attn_levels = {i for i, s in enumerate(level_sizes) if s in set(attention_resolutions)}

        emb_dim = 4 * base_channels
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        def res(cin: int, cout: int, **kw: bool) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout=dropout, groups=groups, **kw)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, num_heads=num_heads, groups=groups)

        # encoder
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down_stages = nn.ModuleList()
        skip_channels = [base_channels]
        ch = base_channels
        for level, mult in enumerate(channel_mults):
            out_ch = base_channels * mult
            for _ in range(num_res_blocks):
                stage = _Stage([res(ch, out_ch)])
                ch = out_ch
                if level in attn_levels:
                    stage.append(attn(ch))
                self.down_stages.append(stage)
                skip_channels.append(ch)
            if level != len(channel_mults) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch)
                self.down_stages.append(_Stage([down]))
                skip_channels.append(ch)

        # middle
        self.middle = _Stage([res(ch, ch), attn(ch), res(ch, ch)])

        # decoder
        self.up_stages = nn.ModuleList()
        for level in reversed(range(len(channel_mults))):
            out_ch = base_channels * channel_mults[level]
            for i in range(num_res_blocks + 1):
                stage = _Stage([res(ch + skip_channels.pop(), out_ch)])
                ch = out_ch
                if level in attn_levels:
                    stage.append(attn(ch))
                if level != 0 and i == num_res_blocks:
                    stage.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch))
                self.up_stages.append(stage)
        assert not skip_channels

        self.out = nn.Sequential(
            _norm(ch, groups), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        b, _, hh, ww = x.shape
        if hh % self.size_multiple or ww % self.size_multiple:
            raise ValueError(
                f"input size {hh}x{ww} must be divisible by {self.size_multiple} "
                f"(image_size constraint of this U-Net)"
            )
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        first = self.time_embed[0]
        emb = self.time_embed(timestep_embedding(t, self.base_channels).to(first.weight.dtype))

        h = self.input_conv(x)
        skips = [h]
        for stage in self.down_stages:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for stage in self.up_stages:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


# ----------------------------------------------------------------------------------------------------
# presets
# ----------------------------------------------------------------------------------------------------
#: Named configurations (:data:`texad.diffusion.presets.UNET_PRESETS`). ``attention_resolutions`` are feature-map
#: sizes at the preset's ``image_size``; :func:`build_unet` rescales them (as down-sampling factors) to the requested
#: size.
PRESETS = UNET_PRESETS


def build_unet(preset: str, image_size: int, **overrides: Any) -> UNet:
    """Build the U-Net of a named preset for ``image_size``.

    The preset's attention resolutions are converted to down-sampling factors
    (``preset_image_size // size``) and re-expressed as feature sizes at ``image_size``, so the
    attention stays at the same levels. Keyword ``overrides`` replace preset values and are passed
    to :class:`UNet` as given; an overriding ``attention_resolutions`` is read as feature sizes at
    ``image_size`` (not rescaled). Rescaled preset factors that the network does not reach (when
    ``channel_mults`` is overridden with fewer levels) are dropped. Unknown presets raise
    ``ValueError`` listing the available ones.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown U-Net preset {preset!r}; available presets: {sorted(PRESETS)}")
    if "image_size" in overrides:
        raise ValueError("pass image_size as the second argument, not as an override")
    cfg = dict(PRESETS[preset])
    preset_size = cfg.pop("image_size")
    factor = 2 ** (len(tuple(overrides.get("channel_mults", cfg["channel_mults"]))) - 1)
    if image_size < 1 or image_size % factor:
        raise ValueError(
            f"image_size={image_size} must be a positive multiple of {factor} for preset {preset!r}"
        )
    if "attention_resolutions" not in overrides:
        # feature sizes at the preset's size -> down-sampling factors -> feature sizes at image_size;
        # factors deeper than the (possibly overridden) network are dropped.
        level_sizes = {image_size // 2**i for i in range(int(math.log2(factor)) + 1)}
        sizes = (image_size // (preset_size // r) for r in cfg["attention_resolutions"])
        cfg["attention_resolutions"] = tuple(s for s in sizes if s in level_sizes)
    cfg.update(overrides)
    return UNet(image_size=image_size, **cfg)
