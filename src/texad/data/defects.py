"""The defect kinds of the embedded generator (``scratch``, ``hole``, ``stain``, ``fold``), drawn onto any image.

Every parameter of a defect comes from the image itself and the Generator passed in: its size (a defect scales with
the side, ``n / 128``), its brightness (a scratch's contrast direction, a hole's backing level, a stain's colour
away from the surface's mean colour) and its channels (grayscale or RGB). ``scratch``: thin Bezier curves,
brighter or darker; ``hole``: an irregular dark blob with a frayed rim, or backing material showing through;
``stain``: a soft irregular colour or intensity change of varying opacity; ``fold``: a local displacement-field
warp plus a shading crease.

Masks are exact (:func:`exact_change`): after quantisation to ``uint8`` the mask is *exactly* the set of pixels
where the defective image differs from the clean one (every painted pixel changes by at least one grey level, every
other pixel is copied bit for bit). The embedded set (:mod:`texad.data.synth`) paints its test defects with these,
and the validation split (:mod:`texad.data.validation`) draws them onto any class's held-out images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

__all__ = [
    "DEFECT_TYPES",
    "MIN_SIDE",
    "draw_defect",
    "exact_change",
    "smooth_noise",
    "smoothstep",
    "to_uint8",
]

DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "fold")
#: The smallest image side a defect is drawn on (the painters' shapes are sized for 32 px and more).
MIN_SIDE = 32


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma, mode: str = "wrap") -> np.ndarray:
    """Gaussian-filtered white noise normalised to zero mean / unit std (float32).

    Large blurs are computed on a coarser grid and upsampled with cubic splines (same look,
    a fraction of the cost)."""
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(shape),))
    factor = int(sig.min() // 3) if len(shape) == 2 else 1
    if factor >= 2:
        low = tuple(int(np.ceil(s / factor)) + 6 for s in shape)
        n = ndi.gaussian_filter(rng.standard_normal(low), sig / factor, mode="wrap")
        grid = np.meshgrid(*[np.arange(s, dtype=np.float64) / factor + 3 for s in shape], indexing="ij")
        n = ndi.map_coordinates(n, grid, order=3, mode="nearest")
    else:
        n = rng.standard_normal(shape)
        if np.any(sig > 0):
            n = ndi.gaussian_filter(n, sig, mode=mode)
    n -= n.mean()
    s = n.std()
    if s > 0:
        n /= s
    return n.astype(np.float32)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _check_defect(defect: str) -> None:
    if defect not in DEFECT_TYPES:
        raise ValueError(f"defect: unknown defect type {defect!r}; choose from {list(DEFECT_TYPES)}")


def _centre(rng: np.random.Generator, n: int, margin: float = 0.22) -> tuple[float, float]:
    return float(rng.uniform(margin, 1 - margin) * n), float(rng.uniform(margin, 1 - margin) * n)


def _frame(n: int, cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated into a frame centred at (cy, cx): (along, across)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _largest_component(region: np.ndarray, prefer: tuple[float, float] | None = None) -> np.ndarray:
    lab, k = ndi.label(region)
    if k <= 1:
        return region
    if prefer is not None:
        py, px = int(round(prefer[0])), int(round(prefer[1]))
        if 0 <= py < lab.shape[0] and 0 <= px < lab.shape[1] and lab[py, px] > 0:
            return lab == lab[py, px]
    sizes = ndi.sum(region, lab, index=np.arange(1, k + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _irregular_blob(n: int, rng: np.random.Generator, r_major: float, aspect: float, rough: float):
    """An irregular blob: ellipse radius perturbed by smooth noise. Returns (field, region, centre).

    ``field`` is 1 - perturbed normalised radius (> 0 inside the blob)."""
    cy, cx = _centre(rng, n)
    a, b = _frame(n, cy, cx, rng.uniform(0, np.pi))
    rr = np.sqrt((a / r_major) ** 2 + (b / (r_major * aspect)) ** 2)
    noise = smooth_noise(rng, (n, n), max(1.0, 0.35 * r_major * aspect), mode="reflect")
    field = 1.0 - rr + rough * noise
    region = _largest_component(field > 0, (cy, cx))
    region = ndi.binary_fill_holes(region)
    return field, region, (cy, cx)


def _luminance(f: np.ndarray) -> np.ndarray:
    return f.mean(-1) if f.shape[-1] == 3 else f[..., 0]


def _defect_scratch(f: np.ndarray, rng: np.random.Generator):
    n = f.shape[0]
    s = n / 128.0
    out = f.copy()
    region = np.zeros((n, n), bool)
    yy, xx = np.mgrid[0:n, 0:n]
    pix = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    n_scratch = 1 if rng.random() < 0.65 else 2
    lum_mean = float(_luminance(f).mean())
    # direction of contrast: mostly opposite to the surface brightness, sometimes the same
    bright = (lum_mean < 140) if rng.random() < 0.75 else (lum_mean >= 140)
    alpha = rng.uniform(0.3, 0.85)
    target = np.full(f.shape[-1], rng.uniform(225, 252) if bright else rng.uniform(8, 40))
    if f.shape[-1] == 3:
        target = target + rng.uniform(-10, 10, 3)
    for _ in range(n_scratch):
        length = rng.uniform(0.3, 0.65) * n
        cy, cx = _centre(rng, n, 0.25)
        ang = rng.uniform(0, np.pi)
        d = np.array([np.sin(ang), np.cos(ang)])
        perp = np.array([d[1], -d[0]])
        p0 = np.array([cy, cx]) - d * length / 2
        p3 = np.array([cy, cx]) + d * length / 2
        p1 = p0 + d * length / 3 + perp * rng.uniform(-0.3, 0.3) * length
        p2 = p0 + 2 * d * length / 3 + perp * rng.uniform(-0.3, 0.3) * length
        t = np.linspace(0, 1, int(length * 4) + 2)[:, None]
        pts = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
        width = rng.uniform(1.0, 3.0) * max(1.0, s)
        half = width / 2
        tree = cKDTree(pts)
        dist, idx = tree.query(pix, k=1, distance_upper_bound=half + 0.5)
        dist = dist.reshape(n, n)
        idx = idx.reshape(n, n)
        near = np.isfinite(dist)
        # make the curve 8-connected even when it runs between pixel centres
        q = np.rint(pts).astype(int)
        ok = (q[:, 0] >= 0) & (q[:, 0] < n) & (q[:, 1] >= 0) & (q[:, 1] < n)
        line = np.zeros((n, n), bool)
        line[q[ok, 0], q[ok, 1]] = True
        near |= line
        if not near.any():
            continue
        # strength varies along the scratch (tapers at the ends, interrupted pressure)
        tt = np.linspace(0, 1, len(pts))
        along = 0.55 + 0.45 * np.sin(np.pi * tt) ** 0.5
        along *= 1 + 0.25 * np.sin(2 * np.pi * (rng.uniform(1, 3) * tt + rng.uniform(0, 1)))
        _, idx_line = tree.query(pix.reshape(n, n, 2)[near], k=1)
        a = np.zeros((n, n), np.float32)
        dn = np.where(np.isfinite(dist), dist, 0.0)[near]
        cover = np.clip(half + 0.5 - dn, 0.25, 1.0)  # anti-aliased edge (those pixels change too: exact mask)
        a[near] = (
            alpha
            * np.clip(along[idx_line], 0.2, 1.2)
            * (1 - 0.3 * np.clip(dn / (half + 0.5), 0, 1) ** 2)
            * cover
        )
        a = np.clip(a, 0, 1)[..., None]
        out = out * (1 - a) + target * a
        region |= near
    if not region.any():  # pragma: no cover - all scratches fell outside (cannot happen: centre is inside)
        return _defect_scratch(f, rng)
    return out, region


def _defect_hole(f: np.ndarray, rng: np.random.Generator):
    n = f.shape[0]
    s = n / 128.0
    r_major = rng.uniform(0.05, 0.11) * n
    field, blob, (cy, cx) = _irregular_blob(n, rng, r_major, rng.uniform(0.5, 1.0), rough=0.28)
    if blob.sum() < 6:
        return _defect_hole(f, rng)
    depth = ndi.distance_transform_edt(blob)
    depth = np.clip(depth / max(depth.max(), 1e-6), 0, 1).astype(np.float32)
    c = f.shape[-1]
    strength = rng.uniform(0.55, 0.97)
    if rng.random() < 0.6:
        # dark cavity with self-shadow on one side
        level = rng.uniform(8, 45)
        a, _ = _frame(n, cy, cx, rng.uniform(0, 2 * np.pi))
        shadow = np.clip(0.5 + a / (2.5 * r_major), 0, 1)
        content = level * (0.6 + 0.6 * shadow + 0.15 * smooth_noise(rng, (n, n), 0.8 * s))
        content = np.repeat(content[..., None], c, -1)
    else:
        # backing material showing through: a different, finer texture and colour
        fine = smooth_noise(rng, (n, n), (0.6 * s, 2.0 * s) if rng.random() < 0.5 else (2.0 * s, 0.6 * s))
        mean = _luminance(f).mean()
        level = mean * rng.uniform(0.3, 0.55)
        col = np.ones(c) if c == 1 else rng.uniform(0.6, 1.4, 3)
        content = (level * (1 + 0.35 * fine))[..., None] * col
    alpha = (strength * (0.75 + 0.25 * np.sqrt(depth)))[..., None]
    out = f * (1 - alpha) + content * alpha
    # frayed rim: a thin ring of lighter (torn fibres) or darker (compressed) material
    rim_w = max(1, int(round(rng.uniform(1, 2.5) * s)))
    rim = ndi.binary_dilation(blob, iterations=rim_w) & ~blob
    fray = smooth_noise(rng, (n, n), 0.7 * s) > -0.6  # broken, irregular rim
    rim &= fray
    rim_alpha = rng.uniform(0.2, 0.5)
    rim_target = 235.0 if rng.random() < 0.5 else 20.0
    out = np.where(rim[..., None], f * (1 - rim_alpha) + rim_target * rim_alpha, out)
    region = blob | rim
    out = np.where(region[..., None], out, f)
    return out, region


_STAIN_COLOURS = np.array(
    [
        [95.0, 60.0, 30.0],  # coffee / rust brown
        [170.0, 80.0, 40.0],  # rust orange
        [60.0, 70.0, 120.0],  # ink blue
        [90.0, 110.0, 60.0],  # greenish grease / mould
        [235.0, 230.0, 215.0],  # bleach / chalky residue
        [40.0, 35.0, 35.0],  # oil, near black
        [150.0, 40.0, 60.0],  # wine red
    ]
)


def _defect_stain(f: np.ndarray, rng: np.random.Generator):
    n = f.shape[0]
    s = n / 128.0
    r_major = rng.uniform(0.08, 0.18) * n
    field, region, _ = _irregular_blob(n, rng, r_major, rng.uniform(0.45, 1.0), rough=0.35)
    if region.sum() < 12:
        return _defect_stain(f, rng)
    inner = np.clip(field, 0, None)
    soft = smoothstep(inner / rng.uniform(0.15, 0.5))
    mottle = 1 + 0.2 * smooth_noise(rng, (n, n), 2.0 * s)
    opacity = rng.uniform(0.3, 0.85)
    # a darker tide-mark near the edge is typical for dried liquid stains
    ring = 0.0
    if rng.random() < 0.5:
        ring = 0.35 * np.exp(-(((inner - 0.06) / 0.05) ** 2))
    alpha = np.clip(opacity * (0.2 + 0.8 * soft) * mottle + opacity * ring, 0, 1) * region
    lum = _luminance(f)
    mean = float(lum.mean())
    if f.shape[-1] == 1:
        if rng.random() < 0.7:
            target = np.array([rng.uniform(5, max(6.0, mean - 70))])  # dark (oil, ink)
        else:
            target = np.array([rng.uniform(min(mean + 70, 250), 252)])  # bleached
        texture = (lum / max(mean, 1.0))[..., None] ** 0.6
    else:
        mean_rgb = f.reshape(-1, 3).mean(0)
        dists = np.linalg.norm(_STAIN_COLOURS - mean_rgb, axis=1)
        choices = np.flatnonzero(dists > 70)
        target = _STAIN_COLOURS[rng.choice(choices)] * rng.uniform(0.85, 1.15, 3)
        texture = (lum / max(mean, 1.0))[..., None] ** 0.6
    stain = np.clip(target * texture, 0, 255)
    a = alpha[..., None]
    out = f * (1 - a) + stain * a
    return out, region


def _defect_fold(f: np.ndarray, rng: np.random.Generator):
    n = f.shape[0]
    half_len = rng.uniform(0.16, 0.32) * n
    half_wid = rng.uniform(0.05, 0.09) * n
    cy, cx = _centre(rng, n, 0.28)
    ang = rng.uniform(0, np.pi)
    a, b = _frame(n, cy, cx, ang)
    rr = np.sqrt((a / half_len) ** 2 + (b / half_wid) ** 2) + 0.12 * smooth_noise(
        rng, (n, n), 0.5 * half_wid, "reflect"
    )
    # 0 outside, 1 in the core; the region starts where the fold is already noticeable
    # (a small step at the boundary, like the edge of a real crease), not at a 1-level fringe
    w = smoothstep((1 - rr) / 0.45)
    region = _largest_component(w > 0.12, (cy, cx))
    w = w * region
    # material pushed together towards the crease (compression across the fold) plus a shear along it
    amp = rng.uniform(0.3, 0.6) * half_wid
    bn = np.clip(b / half_wid, -1.5, 1.5)
    disp_across = amp * w * np.sin(np.pi * bn / 1.5)
    disp_along = rng.uniform(-0.25, 0.25) * half_wid * w * np.exp(-(bn**2) / 0.3)
    c, sn = np.cos(ang), np.sin(ang)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    ys = yy + sn * disp_along + c * disp_across
    xs = xx + c * disp_along - sn * disp_across
    warped = np.stack(
        [ndi.map_coordinates(f[..., k], [ys, xs], order=1, mode="reflect") for k in range(f.shape[-1])], -1
    )
    # shading crease: one flank lit, the other in shadow, dark line in the valley
    sig = rng.uniform(0.25, 0.45) * half_wid
    strength = rng.uniform(0.15, 0.5)
    flank = (b / sig) * np.exp(-0.5 * (b / sig) ** 2) * np.sign(rng.uniform(-1, 1))
    valley = np.exp(-0.5 * (b / (0.45 * sig)) ** 2)
    shade = 1 + strength * w * (0.9 * flank - 0.8 * valley)
    out = warped * shade[..., None]
    return out, region


_DEFECTS = {
    "scratch": _defect_scratch,
    "hole": _defect_hole,
    "stain": _defect_stain,
    "fold": _defect_fold,
}


def exact_change(clean3: np.ndarray, out: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The painted image ``out`` (float, like ``clean3``: H x W x C) made exact: quantised to uint8, every pixel
    outside ``region`` copied from ``clean3`` and every pixel inside moved by one grey level where the change
    rounded away. Returns (image, mask) with mask == region == the pixels that differ from ``clean3``."""
    q = to_uint8(np.where(region[..., None], out, clean3.astype(np.float32)))
    same = region & (q == clean3).all(-1)
    if same.any():
        # the intended change rounded away: move by one grey level in the intended direction
        direction = np.sign((out - clean3).sum(-1))
        direction[direction == 0] = 1
        d = direction[same][:, None].astype(np.int16)
        v = q[same].astype(np.int16)
        moved = v + d
        bad = (moved < 0) | (moved > 255)
        moved[bad] = v[bad] - d.repeat(v.shape[1], 1)[bad]
        q[same] = moved.astype(np.uint8)
    mask = (q != clean3).any(-1)
    return q, mask


def draw_defect(image: np.ndarray, defect: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``defect`` onto a uint8 image, grayscale (H, W) or RGB (H, W, 3); returns (the defective image, its
    mask bool (H, W)). The mask is exactly ``defective != image`` (any channel) and not empty.

    A square image is painted whole (the embedded set's defects); a non-square one inside a square window of side
    ``min(H, W)`` whose position is drawn from ``rng`` first."""
    _check_defect(defect)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"image: expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    side = min(h, w)
    if side < MIN_SIDE:
        raise ValueError(
            f"image: a {defect} needs an image of at least {MIN_SIDE} x {MIN_SIDE} pixels, got {w} x {h}"
        )
    y0 = x0 = 0
    if h != w:
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    clean3 = image[..., None] if image.ndim == 2 else image
    window = clean3[y0 : y0 + side, x0 : x0 + side]
    out, region = _DEFECTS[defect](window.astype(np.float32), rng)
    painted, changed = exact_change(window, out, region)
    if not changed.any():  # pragma: no cover - every defect paints a non-empty region
        raise RuntimeError(f"{defect} produced an empty mask")
    result = clean3.copy()
    result[y0 : y0 + side, x0 : x0 + side] = painted
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + side, x0 : x0 + side] = changed
    return (result[..., 0] if image.ndim == 2 else result), mask
