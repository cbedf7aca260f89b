"""Method B anomaly maps (DDAD's, spec §1.3 / §3.3): pixel + feature distance, fused and smoothed.

- D_p: mean over RGB of |x_rec - x| in [-1, 1] space.
- D_f: both images mapped to [0, 1] and passed through a frozen feature extractor (it normalises
  itself); each requested layer is 3x3 / stride-1 / zero-padded mean-aggregated, compared with
  1 - cosine similarity over channels, upsampled bilinearly (align_corners=True) to the image size, and the
  layer maps are summed.
- A = D_f + v * (max D_f / max D_p) * D_p. ``fusion_norm``: ``train`` (the default protocol) takes the maxima over
  the distances of the training images that the run fits on, a fixed scale, so a test image's map needs no other
  test image; ``test_set`` (over the whole test set) and ``batch16`` (over consecutive chunks of 16 maps, DDAD's
  test batches) are transductive and belong to the labelled ``official`` variant (``batch16``) only.
- ``map_terms`` (spec §3.5's "map terms" ablation): ``both`` is that fusion; ``feature`` the map D_f alone (the
  fusion at v = 0); ``pixel`` the map D_p alone (no fusion scale). What follows applies to every choice alike.
- ``normalise="train_stats"`` (CHOSEN, not in DDAD; default "none"): the fused maps are standardised per pixel
  by the maps of normal *training* images made of the same terms (:mod:`texad.evaluation.train_stats`, Method A's
  step), fused at the test maps' scale (the training images' own) so that both are the same function of D_p and
  D_f (:func:`train_map_statistics`). It removes the score
  that normal texture gets anyway, and the reconstruction's weaker borders, where a small model's maps otherwise
  peak on normal images.
- The fused maps are smoothed with a Gaussian (``texad.evaluation.grid.gaussian_smooth``); the image score
  is the maximum of the smoothed map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from texad.evaluation.grid import gaussian_smooth
from texad.evaluation.train_stats import TrainStats, normalise_maps, train_statistics

if TYPE_CHECKING:
    from .settings import Inference

__all__ = [
    "FUSION_NORMS",
    "MAP_TERMS",
    "pixel_distance",
    "aggregate_3x3",
    "feature_distance",
    "resize_for_extractor",
    "fusion_scale",
    "fuse",
    "fusion_v",
    "term_maps",
    "train_map_statistics",
    "anomaly_maps",
]

#: ``train``: a fixed scale from the training images (:func:`fusion_scale` of their distances, passed as ``scale``);
#: ``test_set``, ``batch16``: the scale of the set of maps itself (transductive: the official variant's only).
FUSION_NORMS = ("train", "test_set", "batch16")
#: What a map is made of (``inference.map_terms``): the fusion of both distances, D_p alone, or D_f alone.
MAP_TERMS = ("both", "pixel", "feature")
_DDAD_BATCH = 16

Extractor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def _check_pair(x: torch.Tensor, x_rec: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape != x_rec.shape:
        raise ValueError(
            f"expected two (N, C, H, W) tensors of equal shape, got {tuple(x.shape)}, {tuple(x_rec.shape)}"
        )


def pixel_distance(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """Mean over channels of |x_rec - x| (images in [-1, 1]); shape (N, H, W)."""
    _check_pair(x, x_rec)
    return (x_rec - x).abs().mean(dim=1)


def aggregate_3x3(f: torch.Tensor) -> torch.Tensor:
    """3x3, stride-1 neighbourhood mean with zero padding (border sums are divided by 9)."""
    return F.avg_pool2d(f, kernel_size=3, stride=1, padding=1, count_include_pad=True)


def resize_for_extractor(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """``x`` resized bilinearly to ``size`` x ``size`` (unchanged when ``size`` is None or already met): the
    side at which the feature extractor compares images, the same in the anomaly maps and the adaptation."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def feature_distance(
    extractor: Extractor,
    x: torch.Tensor,
    x_rec: torch.Tensor,
    layers: Sequence[str],
    out_size: tuple[int, int],
    input_size: int | None = None,
) -> torch.Tensor:
    """Sum over ``layers`` of the upsampled 1 - cos(agg(F_l(x)), agg(F_l(x_rec))) maps; shape (N, H', W')
    with (H', W') = ``out_size``. ``x`` and ``x_rec`` are in [-1, 1]; the extractor gets them in [0, 1],
    both resized bilinearly to ``input_size`` x ``input_size`` first when it is given."""
    _check_pair(x, x_rec)
    x, x_rec = resize_for_extractor(x, input_size), resize_for_extractor(x_rec, input_size)
    if isinstance(layers, str) or not layers:
        raise ValueError(f"layers must be a non-empty sequence of layer names, got {layers!r}")
    out_size = (int(out_size[0]), int(out_size[1]))
    with torch.no_grad():
        fx = extractor((x + 1.0) / 2.0)
        fr = extractor((x_rec + 1.0) / 2.0)
        total = None
        for layer in layers:
            if layer not in fx or layer not in fr:
                raise KeyError(f"the extractor returned no {layer!r} (has {sorted(fx)})")
            a, b = aggregate_3x3(fx[layer]), aggregate_3x3(fr[layer])
            d = 1.0 - F.cosine_similarity(a, b, dim=1)  # (N, h, w)
            d = F.interpolate(d.unsqueeze(1), size=out_size, mode="bilinear", align_corners=True)[:, 0]
            total = d if total is None else total + d
    assert total is not None
    return total


def _as_tensor(a: Any) -> torch.Tensor:
    t = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t


def fusion_scale(d_pixel: torch.Tensor, d_feature: torch.Tensor, v: float) -> torch.Tensor | None:
    """max D_f / max D_p of a set of maps (a 0-d tensor), or None when the pixel term vanishes (v = 0 or
    D_p zero everywhere)."""
    pmax = d_pixel.max()
    if float(pmax) == 0.0 or v == 0:
        return None
    return d_feature.max() / pmax


def fuse(
    d_pixel: Any, d_feature: Any, v: float, norm: str, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """A = D_f + v * (max D_f / max D_p) * D_p for maps (N, H, W) (tensors or arrays); returns a tensor.

    ``scale``: a fixed max D_f / max D_p for all maps (``norm="train"``: the training images', which it needs
    unless v = 0). Without one, ``norm="test_set"`` takes the maxima over all N maps and ``"batch16"`` over
    consecutive chunks of 16 (the last chunk may be shorter); a chunk whose D_p is zero everywhere contributes
    no pixel term.
    """
    if norm not in FUSION_NORMS:
        raise ValueError(f"norm must be one of {FUSION_NORMS}, got {norm!r}")
    dp, df = _as_tensor(d_pixel), _as_tensor(d_feature)
    if dp.shape != df.shape or dp.ndim < 1:
        raise ValueError(f"d_pixel {tuple(dp.shape)} and d_feature {tuple(df.shape)} must have equal shapes")
    dp = dp.to(df.dtype)
    if scale is not None:
        return df + v * scale * dp
    if norm == "train":
        if v == 0:  # no pixel term: no scale to fix
            return df.clone()
        raise ValueError("fusion_norm train fuses at the training images' scale: pass it (scale=), fit first")
    chunk = dp.shape[0] if norm == "test_set" else _DDAD_BATCH
    out = []
    for i in range(0, dp.shape[0], max(chunk, 1)):
        p, f = dp[i : i + chunk], df[i : i + chunk]
        s = fusion_scale(p, f, v)
        out.append(f.clone() if s is None else f + v * s * p)
    return torch.cat(out, dim=0) if out else df.clone()


def fusion_v(settings: Inference) -> float:
    """The weight of the pixel term in the fusion: ``v`` with both terms; 0 with one term alone (``feature`` is the
    fusion at v = 0, and ``pixel`` fuses nothing), so that no fusion scale is taken for a single term."""
    return settings.v if settings.map_terms == "both" else 0.0


def term_maps(
    d_pixel: Any,
    d_feature: Any,
    terms: str,
    v: float,
    norm: str,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The maps of ``terms`` (N, H, W): ``both`` :func:`fuse` (D_f + v (max D_f / max D_p) D_p), ``feature`` D_f
    (the fusion at v = 0), ``pixel`` D_p; ``v``, ``norm`` and ``scale`` matter to ``both`` only."""
    if terms not in MAP_TERMS:
        raise ValueError(f"map terms must be one of {MAP_TERMS}, got {terms!r}")
    if terms == "pixel":
        dp, df = _as_tensor(d_pixel), _as_tensor(d_feature)
        if dp.shape != df.shape or dp.ndim < 1:
            raise ValueError(
                f"d_pixel {tuple(dp.shape)} and d_feature {tuple(df.shape)} must have equal shapes"
            )
        return dp.clone()
    return fuse(d_pixel, d_feature, v if terms == "both" else 0.0, norm, scale)


def train_map_statistics(
    d_pixel: Any, d_feature: Any, settings: Inference, scale: torch.Tensor
) -> TrainStats:
    """The ``train_stats`` statistics: per pixel, of the training images' maps made of the run's terms and fused at
    ``scale``, the one every map of the run is fused at."""
    return train_statistics(
        term_maps(d_pixel, d_feature, settings.map_terms, fusion_v(settings), "test_set", scale)
    )


def anomaly_maps(
    d_pixel_all: Any,
    d_feature_all: Any,
    settings: Inference,
    scale: torch.Tensor | None = None,
    train: tuple[Any, Any] | None = None,
    stats: TrainStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused (or single-term), (normalised,) smoothed maps (N, H, W) float32 and image scores (N,) = max of each
    smoothed map.

    ``settings``: the maps' keys of Method B's inference (``map_terms``, ``v``, ``fusion_norm``, ``normalise``,
    ``smoothing_sigma``); ``scale``: see :func:`fuse`; ``normalise="train_stats"`` needs ``stats``
    (:func:`train_map_statistics`) or ``train``, (D_p, D_f) of the normal training images to compute them from."""
    terms, v = settings.map_terms, fusion_v(settings)
    if settings.fusion_norm == "train" and scale is None and v != 0:
        raise ValueError("fusion_norm train fuses at the training images' scale: pass it (scale=), fit first")
    if settings.normalise != "train_stats":
        stats = None
    elif stats is None:
        if train is None:
            raise ValueError(
                "normalise: train_stats needs the training images' distances (train=) or statistics"
            )
        if (
            scale is None
        ):  # the set's own (transductive), fixed so that the training maps are fused with it too
            scale = fusion_scale(_as_tensor(d_pixel_all), _as_tensor(d_feature_all), v)
            scale = torch.zeros(()) if scale is None else scale  # no pixel term: the maps are D_f
        stats = train_map_statistics(train[0], train[1], settings, scale)
    fused = term_maps(d_pixel_all, d_feature_all, terms, v, settings.fusion_norm, scale)
    if stats is not None:
        fused = normalise_maps(fused, stats)
    maps = gaussian_smooth(fused, settings.smoothing_sigma)
    scores = maps.reshape(maps.shape[0], -1).max(axis=1) if maps.shape[0] else np.zeros(0, np.float32)
    return maps, scores
