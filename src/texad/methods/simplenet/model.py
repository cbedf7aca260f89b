"""SimpleNet's torch modules (spec ``baselines_simplenet_draem.md`` §1.1).

* :class:`FeatureAggregator`: the frozen backbone's maps of ``layers`` -> one feature per location of the
  first (finest) layer's grid. Each map is unfolded into p x p neighbourhoods (stride 1, zero padding
  (p - 1) // 2; PatchCore-style local aggregation, not a convolution), deeper maps are resized bilinearly
  to the reference grid, every layer's C*p*p vector (flattened in (C, p, p) order) is reduced to
  ``pretrain_embed_dim`` by 1-D adaptive average pooling, and the stacked layer vectors are pooled once
  more to ``target_embed_dim``.
* :func:`build_adaptor`: the feature adaptor, one ``Linear(D, D)`` (official ``pre_proj 1``).
* :class:`Discriminator`: ``dsc_layers - 1`` blocks of Linear -> BatchNorm1d -> LeakyReLU(0.2), then a
  bias-free ``Linear(., 1)``.

Linear weights use Xavier-normal initialisation, biases keep PyTorch's default, as the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Discriminator",
    "FeatureAggregator",
    "SimpleNet",
    "aggregate_features",
    "build_adaptor",
    "local_patches",
    "pool_to_dim",
]


def local_patches(feature: torch.Tensor, patchsize: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C*p*p, h', w'): each location's p x p neighbourhood in (C, p, p) order.

    Stride 1 with zero padding (p - 1) // 2, so h' = h for odd p (h - 1 for even p, as the official code).
    """
    if patchsize < 1:
        raise ValueError(f"patchsize must be >= 1, got {patchsize}")
    b, c, h, w = feature.shape
    pad = (patchsize - 1) // 2
    out_h, out_w = h + 2 * pad - patchsize + 1, w + 2 * pad - patchsize + 1
    cols = F.unfold(feature, kernel_size=patchsize, stride=1, padding=pad)  # (B, C*p*p, h'*w'), C major
    return cols.reshape(b, c * patchsize * patchsize, out_h, out_w)


def pool_to_dim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """1-D adaptive average pooling of the last axis of (N, D) to (N, dim) (bins as ``adaptive_avg_pool1d``)."""
    return F.adaptive_avg_pool1d(x.unsqueeze(1), dim).squeeze(1)


def aggregate_features(
    maps: Sequence[torch.Tensor], patchsize: int, pretrain_embed_dim: int, target_embed_dim: int
) -> torch.Tensor:
    """Layer maps (finest first) -> (B, H, W, target_embed_dim) on the first map's patch grid."""
    patches = [local_patches(m, patchsize) for m in maps]
    b, _, h, w = patches[0].shape
    per_layer = []
    for p in patches:
        if p.shape[-2:] != (h, w):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        vec = p.permute(0, 2, 3, 1).reshape(b * h * w, -1)  # one (C, p, p)-ordered vector per location
        per_layer.append(pool_to_dim(vec, pretrain_embed_dim))
    stacked = torch.stack(per_layer, dim=1).reshape(b * h * w, -1)  # layer-major, as the official stack
    return pool_to_dim(stacked, target_embed_dim).reshape(b, h, w, target_embed_dim)


class FeatureAggregator(nn.Module):
    """A frozen :class:`texad.backbones.features.FeatureExtractor` plus the local aggregation.

    ``forward(images)`` takes RGB in [0, 1] (B, 3, S, S) and returns (B, H, W, target_embed_dim), where
    (H, W) is the patch grid of the first of ``layers`` (S/8 for layer2). No gradients.
    """

    def __init__(
        self,
        extractor: nn.Module,
        layers: Sequence[str],
        patchsize: int,
        pretrain_embed_dim: int,
        target_embed_dim: int,
    ):
        super().__init__()
        self.extractor = extractor
        self.layers = tuple(layers)
        self.patchsize = int(patchsize)
        self.pretrain_embed_dim = int(pretrain_embed_dim)
        self.target_embed_dim = int(target_embed_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.extractor(images)
        maps = [out[layer] for layer in self.layers]
        return aggregate_features(maps, self.patchsize, self.pretrain_embed_dim, self.target_embed_dim)


def _xavier_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_normal_(layer.weight)
    return layer


def build_adaptor(dim: int) -> nn.Linear:
    """The feature adaptor: ``Linear(dim, dim)``, no activation (official ``pre_proj 1``, layer type 0)."""
    return _xavier_linear(dim, dim)


class Discriminator(nn.Module):
    """MLP scoring a feature as normal (high) or anomalous (low): (N, D) -> (N,).

    ``n_layers - 1`` hidden blocks of width ``hidden``; with ``n_layers == 1`` it is the bias-free linear
    tail on the input (the official code would size that tail ``hidden`` and fail).
    """

    def __init__(self, in_dim: int, n_layers: int = 2, hidden: int = 1024):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"dsc_layers must be >= 1, got {n_layers}")
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(n_layers - 1):
            blocks.append(
                nn.Sequential(_xavier_linear(width, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
            )
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.tail = _xavier_linear(width, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x)).squeeze(-1)


class SimpleNet(nn.Module):
    """Aggregator (frozen) + adaptor + discriminator; :meth:`patch_scores` is the method's output."""

    def __init__(self, aggregator: FeatureAggregator, adaptor: nn.Module, discriminator: Discriminator):
        super().__init__()
        self.aggregator = aggregator
        self.adaptor = adaptor
        self.discriminator = discriminator

    @torch.no_grad()
    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> (B, H, W) anomaly scores -D(adaptor(feature)), higher = anomalous.

        Call :meth:`eval` first: the discriminator's BatchNorm must use its running statistics.
        """
        feats = self.aggregator(images)
        b, h, w, d = feats.shape
        return -self.discriminator(self.adaptor(feats.reshape(-1, d))).reshape(b, h, w)
