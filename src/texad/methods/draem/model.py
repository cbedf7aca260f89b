"""DRAEM's two sub-networks (spec §2.1), with the official widths as multiples of a base width.

Every conv is 3x3 with padding 1 and (except the last) followed by BatchNorm and ReLU; down-sampling is
2x2 max-pooling, up-sampling bilinear x2 with ``align_corners=True`` followed by a conv.

- Reconstructive: encoder blocks of widths w, 2w, 4w, 8w, 8w (4 pools), decoder WITHOUT skips
  8w -> 4w -> 2w -> w -> w, final conv to 3 channels, no output activation (w = 128 officially).
- Discriminative: input = concat(reconstruction, image) (6 channels); encoder blocks w, 2w, 4w, 8w, 8w,
  8w (5 pools); U-Net decoder with skips, widths 8w, 4w, 2w, w, w; final conv to 2 logits (w = 64).

The input side must therefore be a multiple of 32. Initialisation as the official ``weights_init``:
conv weights N(0, 0.02) (conv biases keep PyTorch's default), BatchNorm weights N(1, 0.02), biases 0.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "DiscriminativeNet",
    "ReconstructiveNet",
    "build_networks",
    "count_parameters",
    "init_weights",
]


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _double(c_in: int, c_mid: int, c_out: int | None = None) -> nn.Sequential:
    """Two conv-BN-ReLU layers: c_in -> c_mid -> c_out (c_out defaults to c_mid)."""
    return nn.Sequential(
        *_conv_bn_relu(c_in, c_mid), *_conv_bn_relu(c_mid, c_mid if c_out is None else c_out)
    )


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv_bn_relu(c_in, c_out)
    )


class ReconstructiveNet(nn.Module):
    """Encoder-decoder without skip connections; (N, 3, H, W) -> (N, 3, H, W)."""

    def __init__(self, base_width: int = 128, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        w = int(base_width)
        widths = (w, 2 * w, 4 * w, 8 * w, 8 * w)
        self.encoder = nn.ModuleList()
        c = in_channels
        for width in widths:
            self.encoder.append(_double(c, width))
            c = width
        self.pool = nn.MaxPool2d(2)
        # (up-conv width, width after the two convs) per decoder stage
        stages = ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w), (w, w))
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for up_width, out_width in stages:
            self.ups.append(_up(c, up_width))
            self.decoder.append(_double(up_width, up_width, out_width))
            c = out_width
        self.head = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
        for up, block in zip(self.ups, self.decoder, strict=True):
            x = block(up(x))
        return self.head(x)


class DiscriminativeNet(nn.Module):
    """U-Net with skips; (N, 6, H, W) -> (N, 2, H, W) logits (softmax channel 1 = anomaly)."""

    def __init__(self, base_width: int = 64, in_channels: int = 6, out_channels: int = 2):
        super().__init__()
        w = int(base_width)
        widths = (w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w)
        self.encoder = nn.ModuleList()
        c = in_channels
        for width in widths:
            self.encoder.append(_double(c, width))
            c = width
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        # decoder stage k joins the up-sampled features with encoder block 4 - k (b5, b4, b3, b2, b1)
        for up_width, skip in zip((8 * w, 4 * w, 2 * w, w, w), reversed(widths[:-1]), strict=True):
            self.ups.append(_up(c, up_width))
            self.decoder.append(_double(up_width + skip, up_width))
            c = up_width
        self.head = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.ups, self.decoder, strict=True):
            x = block(torch.cat((up(x), skips.pop()), dim=1))
        return self.head(x)


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """The official initialisation, applied with ``module.apply``."""
    if isinstance(module, nn.Conv2d):
        module.weight.normal_(0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        module.weight.normal_(1.0, 0.02)
        module.bias.zero_()


def build_networks(
    recon_base_width: int, disc_base_width: int
) -> tuple[ReconstructiveNet, DiscriminativeNet]:
    """Both sub-networks, initialised from the current torch RNG as the official code."""
    recon = ReconstructiveNet(recon_base_width)
    recon.apply(init_weights)
    disc = DiscriminativeNet(disc_base_width)
    disc.apply(init_weights)
    return recon, disc


def count_parameters(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
