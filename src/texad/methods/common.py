"""Pieces every method's run shares: per-image noise seeds and the compact maps file.

A run writes one result JSON (``texad.results.record``) and one ``.npz`` beside it with the maps on the
evaluation grid (float16), the image scores, labels, image paths and, for reconstruction methods, the
reconstructions (uint8, N x H x W x 3) used by the Figure-1 grids.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np

from texad.atomic import atomic_write

__all__ = ["image_seed", "save_maps"]


def image_seed(seed: int, class_name: str, index: int) -> int:
    """The noise seed of one test image: independent of batch size and order."""
    return zlib.crc32(f"{seed}/{class_name}/{index}".encode()) & 0x7FFFFFFF


def save_maps(path: Path, **arrays: np.ndarray) -> None:
    """Maps (float16), scores, labels and reconstructions, compressed, written atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()), binary=True)
