"""One torch Dataset for every MVTec-layout class (MVTec AD, DTD-Synthetic, the synthetic set).

Images come back as float RGB tensors in [0, 1] (grayscale repeated to 3 channels), resized bilinearly
with antialiasing; masks are resampled onto their grid by area interpolation and ``>= 0.5`` (the
evaluation-grid rule), and normal test images get empty masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from texad.data.layout import DatasetError, Sample, list_samples
from texad.evaluation.grid import resize_masks


def read_image(path: Path) -> Image.Image:
    """Open and fully decode an image, so a truncated or corrupt file fails here, naming itself."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot read image {path}: {exc}. Re-download the dataset or remove the file."
        ) from exc


def to_float_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float32 (3, H, W) tensor in [0, 1] (torchvision's ``pil_to_tensor`` + ``to_dtype``
    with ``scale=True``; plain torch, so evaluation jobs do not pay torchvision's import time)."""
    return (
        torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32).mul_(1.0 / 255)
    )


def resize_bilinear(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing of a (C, H, W) float tensor: what torchvision's ``resize`` does on float
    tensors (``F.interpolate``, ``align_corners=False``, ``antialias=True``)."""
    return F.interpolate(tensor[None], size=list(size), mode="bilinear", align_corners=False, antialias=True)[
        0
    ]


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class MVTecDataset(torch.utils.data.Dataset):
    """Samples of one class and split.

    ``image_size``: (H, W) or N of the returned image; ``mask_size``: grid of the returned mask
    (defaults to ``image_size``; ``None`` after construction is not allowed, use ``"native"`` to keep
    the mask's own size, which then varies only if the images do).
    """

    def __init__(
        self,
        class_dir: str | Path,
        split: str,
        image_size: int | tuple[int, int] = 256,
        mask_size: int | tuple[int, int] | str | None = None,
    ):
        self.class_dir = Path(class_dir)
        self.split = split
        self.samples: list[Sample] = list_samples(self.class_dir, split)
        self.image_size = _as_size(image_size)
        self.mask_size = self.image_size if mask_size is None else mask_size
        if self.mask_size != "native":
            self.mask_size = _as_size(self.mask_size)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def _mask(self, sample: Sample, image_hw: tuple[int, int]) -> torch.Tensor:
        if sample.mask is None:
            mask = np.zeros(image_hw, dtype=bool)
        else:
            mask = np.asarray(read_image(sample.mask).convert("L")) > 0
            if mask.shape != image_hw:
                raise DatasetError(
                    f"mask {sample.mask} is {mask.shape[1]}x{mask.shape[0]} but its image {sample.path} is "
                    f"{image_hw[1]}x{image_hw[0]}; masks must match their image"
                )
        if self.mask_size != "native":
            mask = resize_masks(mask[None], self.mask_size)[0]
        return torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float()

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = read_image(sample.path).convert("RGB")
        image_hw = (image.height, image.width)
        tensor = to_float_tensor(image)
        if tuple(tensor.shape[-2:]) != self.image_size:
            tensor = resize_bilinear(tensor, self.image_size).clamp_(0.0, 1.0)
        return {
            "image": tensor,
            "mask": self._mask(sample, image_hw),
            "label": sample.label,
            "defect": sample.defect,
            "path": str(sample.path),
            "index": index,
        }
