"""Contact sheet of an MVTec-layout class folder: normal images, then defects with their masks.

Works for the embedded synthetic set, real MVTec AD (``ground_truth/<defect>/<stem>_mask.png``)
and DTD-Synthetic (``ground_truth/<defect>/<stem>.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from texad.atomic import atomic_write
from texad.data.layout import IMAGE_SUFFIXES, find_mask

__all__ = ["make_contact_sheet"]

_MAX_TILE = 256  # images are downscaled to at most this many pixels per side for the sheet


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _evenly(items: list, k: int) -> list:
    """``k`` items evenly spaced over ``items`` (deterministic; all of them if there are fewer)."""
    if k <= 0 or not items:
        return []
    if len(items) <= k:
        return list(items)
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in idx]


def _load(path: Path) -> tuple[np.ndarray, bool]:
    """Image as uint8 array (downscaled if large) and whether it is grayscale."""
    with Image.open(path) as im:
        gray = im.mode in ("L", "I", "I;16", "1", "F")
        im = im.convert("L" if gray else "RGB")
        if max(im.size) > _MAX_TILE:
            scale = _MAX_TILE / max(im.size)
            im = im.resize(
                (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR
            )
        return np.asarray(im), gray


def _load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("L")
        if im.size != (shape[1], shape[0]):
            im = im.resize((shape[1], shape[0]), Image.NEAREST)
        return np.asarray(im) > 127


def make_contact_sheet(
    class_dir: Path,
    out_png: Path,
    *,
    n_normal: int = 4,
    per_defect: int = 2,
    title: str | None = None,
    normals: str = "train",
) -> Path:
    """Write a contact sheet PNG for one class folder and return its path.

    Row 1: ``n_normal`` normal images of ``normals`` (``train/good``, or ``test/good``: a validation split's held-out
    images, which its defect rows show again with anomalies). Then one row per defect type
    (``test/<defect>``, sorted, ``good`` excluded) with ``per_defect`` defective images, each
    shown plain and with its ground-truth mask overlaid in red (outline + translucent fill).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    class_dir = Path(class_dir)
    out_png = Path(out_png)
    if normals not in ("train", "test"):
        raise ValueError(f"normals must be 'train' or 'test', got {normals!r}")
    normal_split = normals
    normals = _images(class_dir / normal_split / "good")
    if not normals:
        raise FileNotFoundError(f"no normal images in {class_dir / normal_split / 'good'}")
    if n_normal < 1 or per_defect < 0:
        raise ValueError(f"n_normal must be >= 1 and per_defect >= 0, got {n_normal}, {per_defect}")

    test_dir = class_dir / "test"
    defects = []
    if test_dir.is_dir():
        defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name != "good" and _images(p))
    rows: list[tuple[str, list[tuple[Path, str]]]] = [
        (f"{normal_split}/good", [(p, "") for p in _evenly(normals, n_normal)])
    ]
    if per_defect:
        for d in defects:
            rows.append((d, [(p, d) for p in _evenly(_images(test_dir / d), per_defect)]))

    # each defective image takes two panels: the image and the image with its mask overlay
    ncols = max(n_normal, 2 * per_defect if defects else 0, 1)
    nrows = len(rows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.05 * nrows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (label, items) in enumerate(rows):
        col = 0
        for path, defect in items:
            img, gray = _load(path)
            cmap = "gray" if gray else None
            kw = {"cmap": cmap, "vmin": 0, "vmax": 255} if gray else {}
            ax = axes[r, col]
            ax.imshow(img, interpolation="nearest", **kw)
            ax.set_title(f"{label}/{path.stem}" if not defect else f"{defect}/{path.stem}", fontsize=7)
            col += 1
            if defect:
                ax = axes[r, col]
                ax.imshow(img, interpolation="nearest", **kw)
                mpath = find_mask(class_dir, defect, path)
                if mpath is not None:
                    mask = _load_mask(mpath, img.shape[:2])
                    overlay = np.zeros((*mask.shape, 4), np.float32)
                    overlay[mask] = (1.0, 0.0, 0.0, 0.30)
                    ax.imshow(overlay, interpolation="nearest")
                    if mask.any() and not mask.all():
                        ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
                    ax.set_title(f"mask ({100 * mask.mean():.1f}%)", fontsize=7)
                else:
                    ax.set_title("mask: none", fontsize=7)
                col += 1
    fig.suptitle(title if title is not None else class_dir.name, fontsize=10)
    fig.tight_layout()

    try:
        atomic_write(out_png, lambda fh: fig.savefig(fh, format="png", dpi=100), binary=True)
    finally:
        plt.close(fig)
    return out_png
