"""SimpleNet's view of a class: images at its input size, optionally the official resize-then-centre-crop.

Without ``center_crop`` (texad's protocol) the whole image is resized to ``image_size``. With it, images are
resized to ``resize`` and centre-cropped to ``image_size`` as the official code, and the evaluation covers exactly
the cropped field of view (:func:`texad.evaluation.protocol.mask_geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from texad.data.mvtec import MVTecDataset
from texad.evaluation.protocol import center_crop, mask_geometry

from .settings import SimpleNetSettings

__all__ = ["TestSet", "crop_fraction", "load_images", "load_test_set"]


def crop_fraction(settings: SimpleNetSettings) -> float:
    """The fraction of each side that the optional centre crop keeps (1 without it)."""
    return settings.image_size / settings.resize if settings.center_crop else 1.0


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
    """A class's test split held in memory: images at the input size, masks on the evaluation grid (what the
    official epoch selection scores the model on)."""

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
    load_hw, grid = mask_geometry(resolution, native_hw, crop_fraction(settings))
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
