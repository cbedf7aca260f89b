"""The evaluation grid shared by every method.

Every anomaly map is resized to the evaluation grid (default 256 x 256) before any metric is computed,
and the ground-truth masks are brought to the same grid, so that all methods are scored on identical
pixels:

* maps:  bilinear, ``align_corners=False`` (``torch.nn.functional.interpolate``), float32 out;
* masks: area interpolation of the 0/1 mask, then ``>= 0.5`` (a grid pixel is anomalous when at least
  half of the area it covers is).  For integral downscaling factors this is an exact integer box
  count; otherwise ``interpolate(mode="area")``.  Nearest-neighbour resampling is never used;
* optional per-map Gaussian smoothing of the maps (``scipy.ndimage.gaussian_filter``, last two axes).

Inputs may be numpy arrays or torch tensors of shape ``(..., H, W)`` (normally ``(N, H, W)``); the
leading axes are kept.  Outputs are numpy arrays.  When the size already matches, nothing is resampled
and the result may share memory with the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from texad.evaluation.arrays import as_binary, to_numpy

__all__ = ["DEFAULT_GRID", "resize_maps", "resize_masks", "gaussian_smooth"]

DEFAULT_GRID: tuple[int, int] = (256, 256)


def _check_size(size: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (H, W) of positive ints, got {size!r}") from None
    if h <= 0 or w <= 0 or (h, w) != tuple(size):
        raise ValueError(f"size must be a pair (H, W) of positive ints, got {size!r}")
    return h, w


def _check_ndim(shape: tuple[int, ...], what: str) -> None:
    if len(shape) < 2:
        raise ValueError(f"{what} must have shape (..., H, W), got {tuple(shape)}")


def resize_maps(maps: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize anomaly maps ``(..., H, W)`` to ``size`` = (H', W'); float32 result.

    ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing), computed in float32 on
    the tensor's device.  No resampling when the size already matches.
    """
    h, w = _check_size(size)
    if isinstance(maps, torch.Tensor):
        t = maps.detach()
        if t.dtype.is_complex:
            raise ValueError(f"maps must be real-valued, got dtype {t.dtype}")
        shape = tuple(t.shape)
        _check_ndim(shape, "maps")
        if shape[-2:] == (h, w):
            return to_numpy(t).astype(np.float32, copy=False)
    else:
        arr = np.asarray(maps)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"maps must be numeric, got dtype {arr.dtype}")
        shape = arr.shape
        _check_ndim(shape, "maps")
        if shape[-2:] == (h, w):
            return arr.astype(np.float32, copy=False)
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    lead = shape[:-2]
    x = t.to(torch.float32).reshape(-1, 1, shape[-2], shape[-1])
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return y.reshape(*lead, h, w).cpu().numpy()


def resize_masks(masks: Any, size: tuple[int, int]) -> np.ndarray:
    """Resize boolean/0-1 masks ``(..., H, W)`` to ``size`` by area interpolation then ``>= 0.5``.

    Integral downscaling (H % H' == 0 and W % W' == 0): exact box count, a grid pixel is anomalous when
    at least half of its k_h x k_w input pixels are.  Otherwise: ``F.interpolate(mode="area")`` on the
    float64 mask, then ``>= 0.5`` (for upscaling this repeats each input pixel over the output pixels
    it covers).  No resampling when the size already matches.  Returns a bool array.
    """
    h, w = _check_size(size)
    m = as_binary(to_numpy(masks), "masks")
    _check_ndim(m.shape, "masks")
    H, W = m.shape[-2:]
    if (H, W) == (h, w):
        return m
    lead = m.shape[:-2]
    if H % h == 0 and W % w == 0:
        kh, kw = H // h, W // w
        blocks = m.reshape(*lead, h, kh, w, kw)
        counts = blocks.sum(axis=(-3, -1), dtype=np.int64)
        return 2 * counts >= kh * kw
    x = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float64)).reshape(-1, 1, H, W)
    y = F.interpolate(x, size=(h, w), mode="area")
    return (y >= 0.5).reshape(*lead, h, w).numpy()


def gaussian_smooth(maps: Any, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Smooth every map ``(..., H, W)`` with a 2-D Gaussian of std ``sigma`` (pixels); float32 result.

    ``scipy.ndimage.gaussian_filter`` over the last two axes only (no mixing across maps), boundary
    mode ``"reflect"``, kernel radius ``truncate * sigma``.  ``sigma == 0`` returns the maps unchanged.
    """
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    a = to_numpy(maps)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"maps must be numeric, got dtype {a.dtype}")
    _check_ndim(a.shape, "maps")
    a = a.astype(np.float32, copy=False)
    if sigma == 0:
        return a
    sigmas = (0.0,) * (a.ndim - 2) + (sigma, sigma)
    return ndi.gaussian_filter(a, sigma=sigmas, mode="reflect", truncate=float(truncate))
