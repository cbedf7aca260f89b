"""Where the Perlin anomalies' source images come from (DRAEM's training, the validation split), and a lazy
in-memory bank of them.

- ``dtd`` (DRAEM's official source): every ``images/<category>/*.jpg`` of DTD (5640 images in r1.0.1).
- ``synthetic`` (DRAEM's offline demo source; the validation split's when DTD is not enabled): the ``train/good``
  images of every OTHER class found beside the class in the dataset's root. A class never serves as DRAEM's own
  source: pasting its own texture through a Perlin mask would teach the discriminator that its own (normal)
  texture is anomalous. Only ``train/good`` images are used, so no test image (and no real defect) ever leaks
  into training or validation.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from texad.data.layout import IMAGE_SUFFIXES, list_samples
from texad.data.mvtec import read_image

__all__ = ["SourceBank", "describe_sources", "dtd_source_paths", "source_paths", "synthetic_source_paths"]


def dtd_source_paths(dtd_root: str | Path) -> list[Path]:
    """Every ``images/<category>/*.jpg`` under ``dtd_root``, sorted (DRAEM's ``anomaly_source_path``)."""
    images = Path(dtd_root) / "images"
    paths = sorted(images.glob("*/*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no DTD images under {images} (expected images/<category>/*.jpg)")
    return paths


def synthetic_source_paths(
    dataset_root: str | Path, class_name: str, classes: Sequence[str] | None = None
) -> list[Path]:
    """``train/good`` images of the other classes in ``dataset_root``, sorted: of ``classes`` when given (the
    workflow passes the configured ones, so a stray folder never changes a model), else every class folder."""
    root = Path(dataset_root)
    if classes is None:
        names = sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "train").is_dir())
    else:
        names = sorted(set(classes))
        missing = [c for c in names if not (root / c / "train").is_dir()]
        if missing:
            raise FileNotFoundError(f"anomaly-source classes {missing} have no train/ folder under {root}")
    others = [root / n for n in names if n != class_name]
    paths = [s.path for d in others for s in list_samples(d, "train")]
    if not paths:
        raise FileNotFoundError(
            f"anomaly_source 'synthetic' needs at least one class other than {class_name!r} in {root} "
            "(its train/good images are the anomaly sources); generate another synthetic class"
        )
    return paths


def source_paths(
    kind: str,
    *,
    class_name: str,
    dtd_root: str | Path | None = None,
    dataset_root: str | Path | None = None,
    classes: Sequence[str] | None = None,
) -> list[Path]:
    """The anomaly-source images for ``anomaly_source`` = ``kind`` (``dtd`` or ``synthetic``)."""
    if kind == "dtd":
        if dtd_root is None:
            raise ValueError("anomaly_source 'dtd' needs dtd_root (the folder holding images/)")
        return dtd_source_paths(dtd_root)
    if kind == "synthetic":
        if dataset_root is None:
            raise ValueError(
                "anomaly_source 'synthetic' needs dataset_root (the folder of the class folders)"
            )
        return synthetic_source_paths(dataset_root, class_name, classes)
    raise ValueError(f"anomaly_source must be 'dtd' or 'synthetic', got {kind!r}")


def describe_sources(kind: str, paths: Sequence[Path]) -> dict:
    """What a model file and a result JSON record about the anomaly sources actually used."""
    paths = [Path(p) for p in paths]
    # classes (synthetic: the class folder above train/good) or categories (DTD: the folder of the image)
    groups = sorted({p.parents[2].name if p.parent.name == "good" else p.parent.name for p in paths})
    listing = "\n".join(f"{p.parent.name}/{p.name}" for p in paths)
    return {
        "kind": kind,
        "n_images": len(paths),
        "groups": groups if len(groups) <= 64 else len(groups),
        "list_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }


class SourceBank(Sequence):
    """Anomaly sources as uint8 (H, W, 3) RGB arrays of ``size`` (N: N x N; or (H, W)), read on first use and kept
    (up to ``cache`` images, least recently used dropped first). Resized with PIL bilinear (the official code: cv2
    bilinear)."""

    def __init__(self, paths: Sequence[str | Path], size: int | tuple[int, int], cache: int = 512):
        self.paths = [Path(p) for p in paths]
        bad = [p for p in self.paths if p.suffix.lower() not in IMAGE_SUFFIXES]
        if bad:
            raise ValueError(f"not image files: {bad[:3]}")
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.cache = int(cache)
        self._store: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        index = int(index)
        hit = self._store.get(index)
        if hit is not None:
            self._store.move_to_end(index)
            return hit
        img = read_image(self.paths[index]).convert("RGB")
        if img.size != (self.size[1], self.size[0]):
            img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arr.setflags(write=False)
        self._store[index] = arr
        if len(self._store) > self.cache:
            self._store.popitem(last=False)
        return arr
