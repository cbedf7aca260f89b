"""SimpleNet's view of a class: images at its input size, optionally the official resize-then-centre-crop.

Without ``center_crop`` (texad's protocol) the whole image is resized to ``image_size`` and masks come
onto the evaluation grid directly. With it, images are resized to ``resize`` and centre-cropped to
``image_size`` as the official code; masks are brought to a grid that many times larger and cropped the
same way, so the evaluation covers exactly the cropped field of view (the official evaluation geometry)
while keeping texad's mask rule (area interpolation, >= 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from texad.data.mvtec import MVTecDataset
from texad.evaluation.protocol import grid_size

from .settings import SimpleNetSettings

__all__ = ["TestSet", "center_crop", "load_images", "load_test_set", "mask_geometry"]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two axes to ``size`` around the centre (offsets rounded as torchvision's CenterCrop)."""
    h, w = x.shape[-2:]
    ch, cw = size
    if ch > h or cw > w:
        raise ValueError(f"cannot centre-crop {h}x{w} to {ch}x{cw}")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top : top + ch, left : left + cw]


def mask_geometry(
    settings: SimpleNetSettings, resolution: int | str, native_hw: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size the masks are loaded at, evaluation grid after the optional crop)."""
    if not settings.center_crop:
        grid = grid_size(resolution, native_hw)
        return grid, grid
    keep = settings.image_size / settings.resize  # fraction of each side that survives the crop
    if resolution == "native":
        load = (int(native_hw[0]), int(native_hw[1]))
        return load, (int(round(load[0] * keep)), int(round(load[1] * keep)))
    side = int(resolution)
    load_side = int(round(side / keep))
    return (load_side, load_side), (side, side)


def load_images(class_dir: Path, split: str, settings: SimpleNetSettings) -> torch.Tensor:
    """All images of ``split`` as float32 (N, 3, image_size, image_size) in [0, 1]."""
    data = MVTecDataset(class_dir, split, image_size=settings.load_size)
    if len(data) == 0:
        raise ValueError(f"{class_dir}: split {split!r} holds no images")
    images = torch.stack([data[i]["image"] for i in range(len(data))])
    if settings.center_crop:
        images = center_crop(images, (settings.image_size, settings.image_size)).contiguous()
    return images


@dataclass(frozen=True)
class TestSet:
    """A class's test split held in memory: images at the input size, masks on the evaluation grid."""

    images: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    masks: np.ndarray  # (N, gh, gw) bool
    labels: np.ndarray  # (N,) int64
    paths: list[str]
    grid: tuple[int, int]


def load_test_set(class_dir: Path, settings: SimpleNetSettings, resolution: int | str) -> TestSet:
    probe = MVTecDataset(class_dir, "test", image_size=settings.load_size, mask_size="native")
    if len(probe) == 0:
        raise ValueError(f"{class_dir}: the test split holds no images")
    native_hw = tuple(probe[0]["mask"].shape[-2:])
    load_hw, grid = mask_geometry(settings, resolution, native_hw)
    data = MVTecDataset(class_dir, "test", image_size=settings.load_size, mask_size=load_hw)
    items = [data[i] for i in range(len(data))]
    images = torch.stack([it["image"] for it in items])
    masks = torch.stack([it["mask"][0] for it in items])
    if settings.center_crop:
        images = center_crop(images, (settings.image_size, settings.image_size)).contiguous()
        masks = center_crop(masks, grid)
    return TestSet(
        images=images,
        masks=masks.bool().numpy(),
        labels=np.array([int(it["label"]) for it in items], dtype=np.int64),
        paths=[str(s.path) for s in data.samples],
        grid=tuple(int(v) for v in grid),
    )
