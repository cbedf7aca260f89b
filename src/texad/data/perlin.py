"""2-D gradient (Perlin) noise: the shape of the Perlin anomalies (:mod:`texad.data.anomalies`), which DRAEM's
training (spec §2.3 step 4) and the validation split both draw.

One octave on a lattice of ``res[0] x res[1]`` cells with unit gradients at random angles, the quintic
fade 6t^5 - 15t^4 + 10t^3, and the result scaled by sqrt(2) so that its values lie in [-1, 1], as the
official ``rand_perlin_2d_np``. Unlike the official function, the pixel-to-cell map is computed with
integer arithmetic, so any ``shape`` works (not only multiples of ``res``), and the randomness comes
from an explicit :class:`numpy.random.Generator`: the same generator state gives the same array.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fade", "perlin_noise_2d"]


def fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic interpolant: 0 -> 0, 1 -> 1, zero first and second derivative at both ends."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _axis(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell index and fractional position in the cell of each of ``n`` pixels spread over ``cells`` cells."""
    scaled = np.arange(n, dtype=np.int64) * cells
    return scaled // n, (scaled % n).astype(np.float64) / n


def perlin_noise_2d(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Perlin noise of ``shape`` (H, W) with ``res`` (cells along H, cells along W), float64 in [-1, 1].

    Draws exactly ``(res[0] + 1) * (res[1] + 1)`` uniforms from ``rng`` (the gradient angles).
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = int(res[0]), int(res[1])
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    if not (1 <= ry <= h and 1 <= rx <= w):
        raise ValueError(f"res must lie in [1, shape] per axis, got res={res!r} for shape={shape!r}")
    angles = 2.0 * math.pi * rng.random((ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)  # unit gradient (gy, gx) at every lattice corner

    iy, fy = _axis(h, ry)
    ix, fx = _axis(w, rx)
    iy, ix = iy[:, None], ix[None, :]
    fy, fx = fy[:, None], fx[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        # dot(gradient at corner, offset from corner to the pixel)
        return gy[iy + dy, ix + dx] * (fy - dy) + gx[iy + dy, ix + dx] * (fx - dx)

    ty, tx = fade(fy), fade(fx)
    top = corner(0, 0) + tx * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + tx * (corner(1, 1) - corner(1, 0))
    return math.sqrt(2.0) * (top + ty * (bottom - top))
