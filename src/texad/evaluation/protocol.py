"""texad's one evaluation protocol, shared by every method (spec README, decision 2), and the official codes'
own evaluations, which only labelled ``official`` variants run.

texad's protocol: each method produces maps at its own input size; they are resized bilinearly to the evaluation
grid (N x N, or the masks' native size), masks come onto the same grid by area interpolation and ``>= 0.5``, and
all metrics are computed there. Image scores are the method's own (passed in).

The official protocols (:class:`Geometry`, chosen by a method's settings) evaluate at the maps' own size, with the
official code's mask rule:

* ``ddad`` (DDAD's ``dataset.py`` / ``ddad.py`` / ``metrics.py``): masks resized like the images (PIL bilinear) to
  the maps' 256 px, maps and masks centre-cropped to 224, a mask pixel anomalous when above 0, the image score the
  maximum of the cropped map;
* ``draem`` (DRAEM's ``test_DRAEM.py``): masks resized with cv2's bilinear to the maps' 256 px and only pixels of
  exactly 1 anomalous.

The metrics themselves stay texad's (exact AUPRO etc.), computed on these masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from texad.evaluation.arrays import to_numpy
from texad.evaluation.grid import resize_maps
from texad.evaluation.metrics import evaluate


def grid_size(resolution: int | str, native_hw: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the evaluation grid: ``resolution`` x ``resolution``, or the masks' own size for ``native``."""
    if resolution == "native":
        return (int(native_hw[0]), int(native_hw[1]))
    return (int(resolution), int(resolution))


def evaluate_on_grid(
    maps: Any,
    image_scores: Any,
    masks_on_grid: np.ndarray,
    labels: Any,
    *,
    fpr_limit: float = 0.3,
    pixel_metrics: bool = True,
) -> tuple[dict, np.ndarray]:
    """Resize ``maps`` (N, h, w) to the masks' grid and compute every metric; returns (metrics, maps on grid).

    ``labels`` come from the dataset (a defect folder), not from the resized masks, so a tiny defect that
    vanishes on a coarse grid still counts as an anomalous image.
    """
    masks_on_grid = np.asarray(masks_on_grid, dtype=bool)
    on_grid = resize_maps(maps, tuple(masks_on_grid.shape[-2:]))
    metrics = evaluate(
        image_scores, on_grid, masks_on_grid, labels=labels, fpr_limit=fpr_limit, pixel_metrics=pixel_metrics
    )
    return metrics, on_grid


def center_crop(x, size: tuple[int, int]):
    """Crop the last two axes of a tensor to ``size`` around the centre (offsets rounded as torchvision's
    ``CenterCrop``)."""
    h, w = x.shape[-2:]
    ch, cw = size
    if ch > h or cw > w:
        raise ValueError(f"cannot centre-crop {h}x{w} to {ch}x{cw}")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top : top + ch, left : left + cw]


def mask_geometry(
    resolution: int | str, native_hw: tuple[int, int], keep: float = 1.0
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size the masks are loaded at, evaluation grid after a centre crop that keeps the fraction ``keep`` of each
    side). Without a crop both are :func:`grid_size`; with one (SimpleNet's official resize-then-crop) the masks
    are loaded at a grid that many times larger and cropped the same way, so the evaluation covers exactly the
    cropped field of view while keeping the mask rule (area interpolation, >= 0.5)."""
    if keep == 1.0:
        grid = grid_size(resolution, native_hw)
        return grid, grid
    if resolution == "native":
        load = (int(native_hw[0]), int(native_hw[1]))
        return load, (int(round(load[0] * keep)), int(round(load[1] * keep)))
    side = int(resolution)
    load_side = int(round(side / keep))
    return (load_side, load_side), (side, side)


# --------------------------------------------------------------------------------- the official protocols
#: texad's one protocol, and the official codes' own evaluations that a labelled ``official`` variant can run.
PROTOCOLS = ("texad", "ddad", "draem")
#: DDAD's centre crop: 224 of the 256 px maps and masks (``transforms.CenterCrop(224)``).
DDAD_CROP = (224, 256)

_MASK_RULES = {
    "texad": "area interpolation to the grid, >= 0.5",
    "ddad": "PIL bilinear (antialiased) resize to the map's size, > 0 (DDAD's .bool(): dilated)",
    "draem": "bilinear resize without antialiasing (cv2 INTER_LINEAR) to the map's size, 8-bit, == 255 "
    "(DRAEM's astype(uint8) of mask / 255: eroded)",
}


def ddad_crop_side(size: int) -> int:
    """DDAD's crop side for maps of side ``size``: 224 at 256, the same fraction at other sizes."""
    return int(round(size * DDAD_CROP[0] / DDAD_CROP[1]))


def _mask_u8(mask: np.ndarray) -> np.ndarray:
    """A native 0/1 mask as the 0/255 8-bit image the official loaders read."""
    return np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8)


def ddad_masks(masks: Any, size: int) -> np.ndarray:
    """DDAD's ground truth from native masks (N, H, W): PIL bilinear resize to ``size`` x ``size`` (antialiased
    when shrinking, as torchvision's ``Resize`` on a PIL image), centre crop :func:`ddad_crop_side`, and every
    pixel above 0 anomalous (``.type(torch.bool)``), so the soft edge of the resize dilates each defect."""
    side = ddad_crop_side(size)
    out = []
    for m in to_numpy(masks):
        soft = np.asarray(Image.fromarray(_mask_u8(m)).resize((size, size), Image.BILINEAR))
        out.append(center_crop(soft, (side, side)) > 0)
    return np.stack(out) if out else np.zeros((0, side, side), dtype=bool)


def draem_masks(masks: Any, size: int) -> np.ndarray:
    """DRAEM's ground truth from native masks (N, H, W): the 0/255 mask resized bilinearly without antialiasing
    (cv2 ``INTER_LINEAR``: half-pixel centres, the two nearest source pixels per axis), rounded to 8 bits, and
    only pixels of exactly 255 anomalous (``astype(np.uint8)`` of mask / 255), so the resize erodes each defect."""
    m = torch.from_numpy(np.ascontiguousarray(_mask_u8(to_numpy(masks)), dtype=np.float32))
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {tuple(m.shape)}")
    soft = F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return (torch.round(soft[:, 0]) >= 255).numpy()


@dataclass(frozen=True)
class Geometry:
    """How one run is evaluated: which protocol, the size the test masks are loaded at (``native`` for the
    official rules, which resample the masks themselves), the evaluation grid, and the centre crop taken of the
    maps and masks (``crop``: (side before, side after), None without a crop)."""

    protocol: str
    mask_load: tuple[int, int] | str
    grid: tuple[int, int]
    crop: tuple[int, int] | None
    map_size: int | None  # the maps' side, which the official protocols evaluate on (None: texad's grid)

    def masks(self, batch: Any) -> np.ndarray:
        """The batch's masks (N, H, W) as loaded -> bool masks on the grid."""
        m = to_numpy(batch)
        if self.protocol == "ddad":
            return ddad_masks(m, self.map_size)
        if self.protocol == "draem":
            return draem_masks(m, self.map_size)
        m = np.asarray(m, dtype=bool)
        return m if self.crop is None else center_crop(m, self.grid)

    def maps_and_scores(self, maps: Any, scores: Any) -> tuple[Any, Any]:
        """DDAD's protocol crops the maps and scores each image by the maximum of its cropped map; the other
        protocols keep the method's maps and scores (a detector with a crop has cropped its input already)."""
        if self.protocol != "ddad":
            return maps, scores
        maps = to_numpy(maps)
        if maps.shape[-2:] != (self.map_size, self.map_size):
            raise ValueError(f"DDAD's protocol needs maps of {self.map_size} px, got {maps.shape[-2:]}")
        cropped = np.ascontiguousarray(center_crop(maps, self.grid))
        return cropped, cropped.reshape(cropped.shape[0], -1).max(axis=1).astype(np.float64)

    def record(self) -> dict:
        """What the result JSON records (``evaluation.protocol``)."""
        crop = None if self.crop is None else {"from": self.crop[0], "to": self.crop[1]}
        rule = _MASK_RULES[self.protocol]
        if self.protocol == "texad" and self.crop is not None:
            rule = f"area interpolation to {self.mask_load[0]} px, >= 0.5, then the centre crop"
        return {"name": self.protocol, "masks": rule, "crop": crop}


def geometry(
    protocol: str,
    resolution: int | str,
    native_hw: tuple[int, int],
    *,
    map_size: int,
    crop: int | None,
    load: int,
) -> Geometry:
    """The :class:`Geometry` of a run. ``texad``: the grid of ``resolution`` (with a detector's centre crop of
    ``crop`` from ``load``, SimpleNet's official input, the masks cropped alike). ``ddad``: the maps (side
    ``map_size``) and masks cropped to :func:`ddad_crop_side`. ``draem``: the maps' own grid. The official
    protocols evaluate at the maps' size whatever ``evaluation.resolution`` says."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if protocol != "texad" and crop is not None:
        raise ValueError(
            f"the {protocol} protocol evaluates uncropped input; the detector crops it to {crop}"
        )
    if protocol == "ddad":
        side = ddad_crop_side(map_size)
        return Geometry("ddad", "native", (side, side), (map_size, side), map_size)
    if protocol == "draem":
        return Geometry("draem", "native", (map_size, map_size), None, map_size)
    keep = 1.0 if crop is None else crop / load
    mask_load, grid = mask_geometry(resolution, native_hw, keep)
    return Geometry("texad", mask_load, grid, None if crop is None else (load, crop), None)
