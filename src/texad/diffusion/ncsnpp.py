"""NCSN++-style score network (Song et al. 2021; spec ``method_a_score_tscales.md`` §2.4, §3.2), written from its
description.

Layout (the score_sde FFHQ-256 configuration, the ``paper`` preset):

* Noise conditioning: VE -> Gaussian Fourier features of log sigma (``nf`` random frequencies, scale 16, not
  trained); VP -> sinusoidal embedding of the label 999 t. Then Linear -> SiLU -> Linear to ``4 nf``.
* Input: ``2 x - 1`` for data in [0, 1] (``centered=False``, the VE setting), then a 3x3 convolution to ``nf``.
* Encoder: per level ``num_res_blocks`` BigGAN residual blocks (+ self-attention at ``attn_resolutions``); between
  levels a down-sampling residual block with the FIR filter [1, 3, 3, 1]; progressive input ("input_skip"): the
  image is FIR-down-sampled alongside and added through a 1x1 convolution after each down-sampling.
* Middle: residual block, attention, residual block.
* Decoder: ``num_res_blocks + 1`` residual blocks per level fed the U-Net skips, attention, FIR up-sampling
  residual blocks; progressive output ("output_skip"): each level emits GroupNorm -> SiLU -> 3x3 conv to RGB, summed
  with the FIR-up-sampled image of the level below. That RGB pyramid is the output.
* Residual and attention branches are rescaled by 1/sqrt(2) (``skip_rescale``); their last layers, and the RGB
  heads, start at zero, so a fresh network outputs exactly 0.
* VE (``scale_by_sigma``): the output is divided by sigma, so the network learns -z/sigma's numerator (O(1)).

GroupNorm uses min(channels // 4, 32) groups (the nearest divisor of the channels below it where it is not one).
Attention resolutions are feature-map sizes at the preset's ``image_size`` and are rescaled to the requested size
(as in :mod:`texad.diffusion.unet`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .presets import NCSNPP_PRESETS
from .unet import count_parameters, timestep_embedding

__all__ = ["PRESETS", "NCSNpp", "build_ncsnpp", "count_parameters", "fir_downsample", "fir_upsample"]

_FIR = (1.0, 3.0, 3.0, 1.0)
_RSQRT2 = 1.0 / math.sqrt(2.0)


def _fir_2d(kernel: Sequence[float], gain: float) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * gain


def fir_downsample(x: torch.Tensor, kernel: Sequence[float] = _FIR) -> torch.Tensor:
    """Filter with the normalised separable FIR kernel, then keep every second pixel (size H -> H / 2)."""
    c = x.shape[1]
    k = _fir_2d(kernel, 1.0).to(x.device, x.dtype)
    p = k.shape[0] - 2
    x = F.pad(x, ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
    return F.conv2d(x, k.expand(c, 1, *k.shape), stride=2, groups=c)


def fir_upsample(x: torch.Tensor, kernel: Sequence[float] = _FIR) -> torch.Tensor:
    """Insert zeros (x2), then filter with the FIR kernel times 4 (size H -> 2 H); constants stay constant inside."""
    c = x.shape[1]
    k = _fir_2d(kernel, 4.0).to(x.device, x.dtype)
    pad = (k.shape[0] - 2) // 2
    return F.conv_transpose2d(x, k.expand(c, 1, *k.shape), stride=2, padding=pad, groups=c)


def _gn(channels: int) -> nn.GroupNorm:
    """score_sde's min(channels // 4, 32) groups, lowered to the nearest divisor of ``channels`` where it is not
    one (any width nf then builds; widths where it divides are unchanged)."""
    groups = max(1, min(channels // 4, 32))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class FourierEmbedding(nn.Module):
    """[sin(2 pi w x), cos(2 pi w x)] with fixed w ~ N(0, scale^2) (a buffer, saved with the model)."""

    def __init__(self, size: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(size) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x.float()[:, None] * self.w[None, :] * (2.0 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)


class ResBlockBigGAN(nn.Module):
    """GN -> SiLU -> (FIR up/down) -> conv3x3 (+ Dense(temb)) -> GN -> SiLU -> dropout -> conv3x3 (zero init);
    skip: (FIR up/down) -> conv1x1 when the shape changes; output (skip + h) / sqrt(2)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        dropout: float = 0.0,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.up, self.down = up, down
        self.norm1 = _gn(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = _gn(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if (in_ch != out_ch or up or down) else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return fir_upsample(x)
        if self.down:
            return fir_downsample(x)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self._resample(F.silu(self.norm1(x)))
        h = self.conv1(h) + self.emb(F.silu(emb)).to(x.dtype)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        x = self._resample(x)
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) * _RSQRT2


class AttnBlock(nn.Module):
    """Single-head spatial self-attention (DDPM style), residual rescaled by 1/sqrt(2), zero-init output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _gn(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, hh * ww).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        h = h.transpose(-1, -2).reshape(b, c, hh, ww)
        return (x + self.proj(h)) * _RSQRT2


class NCSNpp(nn.Module):
    """The score network (see the module docstring). ``forward(x, label)``: ``label`` (B,) is sigma for
    ``embedding="fourier"`` (VE) and the time label 999 t for ``"positional"`` (VP)."""

    def __init__(
        self,
        nf: int = 64,
        channel_mults: Sequence[int] = (1, 1, 2, 2, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        image_size: int = 256,
        channels: int = 3,
        dropout: float = 0.0,
        embedding: str = "fourier",
        fourier_scale: float = 16.0,
        scale_by_sigma: bool = True,
        centered: bool = False,
    ) -> None:
        super().__init__()
        if embedding not in ("fourier", "positional"):
            raise ValueError(f"embedding must be 'fourier' or 'positional', got {embedding!r}")
        if scale_by_sigma and embedding != "fourier":
            raise ValueError("scale_by_sigma needs a sigma label (embedding='fourier', a VE model)")
        channel_mults = tuple(int(m) for m in channel_mults)
        n_levels = len(channel_mults)
        factor = 2 ** (n_levels - 1)
        if image_size < factor or image_size % factor:
            raise ValueError(f"image_size={image_size} must be a positive multiple of {factor}")
        sizes = [image_size // 2**i for i in range(n_levels)]
        unknown = sorted(set(int(r) for r in attn_resolutions) - set(sizes))
        if unknown:
            raise ValueError(f"attn_resolutions {unknown} match no feature-map size (sizes {sizes})")
        attn_levels = {i for i, s in enumerate(sizes) if s in set(int(r) for r in attn_resolutions)}
        self.nf, self.embedding, self.scale_by_sigma, self.centered = nf, embedding, scale_by_sigma, centered
        self.image_size, self.size_multiple, self.channel_mults = image_size, factor, channel_mults
        self.num_res_blocks, self.attn_levels = num_res_blocks, tuple(sorted(attn_levels))

        emb_dim = 4 * nf
        self.fourier = FourierEmbedding(nf, fourier_scale) if embedding == "fourier" else None
        self.emb = nn.Sequential(
            nn.Linear(2 * nf if self.fourier else nf, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        def res(cin: int, cout: int, **kw: bool) -> ResBlockBigGAN:
            return ResBlockBigGAN(cin, cout, emb_dim, dropout=dropout, **kw)

        self.conv_in = nn.Conv2d(channels, nf, 3, padding=1)
        self.down = nn.ModuleList()  # per level: [res blocks (+attn)], then a down block + pyramid combiner
        skips = [nf]
        ch = nf
        for level, mult in enumerate(channel_mults):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(res(ch, nf * mult))
                ch = nf * mult
                blocks.append(AttnBlock(ch) if level in attn_levels else nn.Identity())
                skips.append(ch)
            level_mod = nn.ModuleDict({"blocks": blocks})
            if level != n_levels - 1:
                level_mod["down"] = res(ch, ch, down=True)
                level_mod["combine"] = nn.Conv2d(channels, ch, 1)  # input_skip, "sum"
                skips.append(ch)
            self.down.append(level_mod)

        self.mid1, self.mid_attn, self.mid2 = res(ch, ch), AttnBlock(ch), res(ch, ch)

        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            out_ch = nf * channel_mults[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(res(ch + skips.pop(), out_ch))
                ch = out_ch
            level_mod = nn.ModuleDict(
                {
                    "blocks": blocks,
                    "attn": AttnBlock(ch) if level in attn_levels else nn.Identity(),
                    "rgb_norm": _gn(ch),
                    "rgb": _zero(nn.Conv2d(ch, channels, 3, padding=1)),  # output_skip head
                }
            )
            if level != 0:
                level_mod["upsample"] = res(ch, ch, up=True)
            self.up.append(level_mod)
        assert not skips

    def forward(self, x: torch.Tensor, label: torch.Tensor | float) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % self.size_multiple or x.shape[-2] % self.size_multiple:
            raise ValueError(
                f"expected (B, C, H, W) with H, W divisible by {self.size_multiple}, got {tuple(x.shape)}"
            )
        b = x.shape[0]
        label = torch.as_tensor(label, device=x.device, dtype=torch.float32)
        if label.ndim == 0:
            label = label.expand(b)
        if label.shape != (b,):
            raise ValueError(f"label must have shape ({b},), got {tuple(label.shape)}")
        if self.fourier is not None:
            temb = self.fourier(torch.log(label))
        else:
            temb = timestep_embedding(label, self.nf)
        temb = self.emb(temb.to(self.emb[0].weight.dtype))

        if not self.centered:
            x = 2.0 * x - 1.0
        pyramid = x
        h = self.conv_in(x)
        hs = [h]
        for level_mod in self.down:
            blocks = level_mod["blocks"]
            for i in range(0, len(blocks), 2):
                h = blocks[i + 1](blocks[i](h, temb))
                hs.append(h)
            if "down" in level_mod:
                h = level_mod["down"](h, temb)
                pyramid = fir_downsample(pyramid)
                h = h + level_mod["combine"](pyramid)
                hs.append(h)

        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)

        out = None
        for level_mod in self.up:
            for block in level_mod["blocks"]:
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
            h = level_mod["attn"](h)
            rgb = level_mod["rgb"](F.silu(level_mod["rgb_norm"](h)))
            out = rgb if out is None else fir_upsample(out) + rgb
            if "upsample" in level_mod:
                h = level_mod["upsample"](h, temb)
        assert out is not None and not hs
        if self.scale_by_sigma:
            out = out / label.to(out.dtype).reshape(b, 1, 1, 1)
        return out


#: Named layouts (:data:`texad.diffusion.presets.NCSNPP_PRESETS`); ``attn_resolutions`` are feature-map sizes at
#: the preset's ``image_size``.
PRESETS = NCSNPP_PRESETS


def build_ncsnpp(preset: str, image_size: int, nf: int, sde_kind: str = "ve", **overrides: Any) -> NCSNpp:
    """The network of ``preset`` at ``image_size`` with width ``nf``, for a ``"ve"`` or ``"vp"`` SDE."""
    if preset not in PRESETS:
        raise ValueError(f"unknown NCSN++ preset {preset!r}; choose from {sorted(PRESETS)}")
    if sde_kind not in ("ve", "vp"):
        raise ValueError(f"sde_kind must be 've' or 'vp', got {sde_kind!r}")
    cfg = dict(PRESETS[preset])
    base = cfg.pop("image_size")
    cfg["attn_resolutions"] = tuple(
        r * image_size // base for r in cfg["attn_resolutions"] if (r * image_size) % base == 0
    )
    ve = sde_kind == "ve"
    cfg.update(embedding="fourier" if ve else "positional", scale_by_sigma=ve, centered=not ve)
    cfg.update(overrides)
    return NCSNpp(nf=nf, image_size=image_size, **cfg)
