"""A validation split per class from normal images only (``validation``), and the training view of the rest.

The split (:func:`build_validation_split`, ``texad validation-split``) is a class folder in the MVTec layout, which
:class:`texad.data.mvtec.MVTecDataset` reads as it is, so any method is scored on it by
``texad.methods.run.run_class(..., class_dir=<split>)``::

    results/validation/<dataset>/<class>/
        train/good/<name>                    the training images that remain (symbolic links)
        test/good/<name>                     the held-out normal images (symbolic links)
        test/<kind>/<stem>.png               the same images with a synthetic anomaly of <kind>, once per kind
        ground_truth/<kind>/<stem>_mask.png  its exact mask: 255 exactly where the image differs
        split.json                           the manifest, written last (its existence marks completion)

With ``holdout: 0`` nothing is held out: ``test/good`` and ``train/good`` are every training image, and the
manifest says ``validates_on_training_images: true``. The anomalies come from the generator below the methods
(:func:`texad.data.anomalies.draw_anomaly`, DRAEM's Perlin anomalies and the embedded set's defect kinds).

The training view (:func:`build_training_view`, ``texad training-view``; only with ``holdout`` > 0) is what every
model trains on and every run reads: ``train/good`` links to the images that remain, ``test`` and ``ground_truth``
link to the class's own, and ``view.json`` (written last) lists what was held out.

Everything is a function of the settings, the class name and the file names: which images are held out
(:mod:`texad.data.holdout`), and each anomaly, drawn from ``SeedSequence([seed, crc32(class), crc32(kind),
crc32(name)])``; PNGs are written with a fixed compression level and no metadata (same seed, same bytes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from texad.config.settings import build
from texad.data.download import write_marker
from texad.data.holdout import Holdout, choose_held_out
from texad.data.layout import GOOD, VIEW_INFO, list_samples

__all__ = [
    "SPLIT_FORMAT",
    "VIEW_FORMAT",
    "ValidationSettings",
    "build_training_view",
    "build_validation_split",
    "training_names",
]

SPLIT_FORMAT = "texad.validation/1"
VIEW_FORMAT = "texad.training_view/1"
_PNG_COMPRESS_LEVEL = 6
#: Image modes kept as one channel (the anomalous copy stays grayscale); every other mode is drawn on as RGB.
_GRAY_MODES = ("L", "1", "I", "I;16", "F")


@dataclass(frozen=True)
class ValidationSettings:
    """``validation``, key for key (the schema's defaults filled in)."""

    holdout: float
    min_holdout: int
    anomalies: tuple[str, ...]
    seed: int

    @classmethod
    def from_config(cls, config: Mapping) -> ValidationSettings:
        if "validation" not in config:
            raise ValueError("the settings hold no validation block; pass the config or its validation part")
        return build(cls, config["validation"], class_name=None, where="validation")


# ------------------------------------------------------------------------------------------------- helpers
def training_names(class_dir: Path) -> list[Path]:
    """The training images of a class folder (``train/good``), sorted by file name."""
    return sorted((s.path for s in list_samples(class_dir, "train")), key=lambda p: p.name)


def _rng(seed: int, class_name: str, kind: str, name: str) -> np.random.Generator:
    crc = [zlib.crc32(t.encode("utf-8")) & 0xFFFFFFFF for t in (class_name, kind, name)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *crc]))


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path(target).resolve())


@contextmanager
def _replacing(final: Path) -> Iterator[Path]:
    """A fresh folder to fill, moved to ``final`` in one rename when the block ends (an earlier ``final``, e.g. a
    killed job's, is replaced); nothing is left behind when the block fails."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    try:
        folder = tmp / final.name
        folder.mkdir()
        yield folder
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        os.replace(folder, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stems(names: Sequence[str]) -> dict[str, str]:
    """The stem each image's anomalous copies are written under: its own, ``<stem>__<n>`` where two share one."""
    seen: Counter = Counter()
    out = {}
    for name in sorted(names):
        stem = Path(name).stem
        seen[stem] += 1
        out[name] = stem if seen[stem] == 1 else f"{stem}__{seen[stem]}"
    return out


def _source_name(path: Path) -> str:
    """A source image as the manifest names it: ``<class>/train/good/<file>`` or ``<category>/<file>`` (DTD)."""
    if path.parent.name == GOOD and len(path.parents) > 2:
        return f"{path.parents[2].name}/train/good/{path.name}"
    return f"{path.parent.name}/{path.name}"


def _read(path: Path) -> np.ndarray:
    """An image as uint8: (H, W) for grayscale modes, else (H, W, 3)."""
    from texad.data.mvtec import read_image

    image = read_image(path)
    return np.asarray(image.convert("L" if image.mode in _GRAY_MODES else "RGB"), dtype=np.uint8)


class _Sources(Sequence):
    """The anomaly sources of one image: the bank's images at the image's size, without the image itself."""

    def __init__(self, banks: dict, paths: Sequence[Path], size: tuple[int, int], skip: Path | None):
        from texad.data.anomaly_sources import SourceBank

        if size not in banks:
            banks[size] = SourceBank(paths, size)
        self.bank = banks[size]
        self.index = [i for i, p in enumerate(paths) if skip is None or Path(p).resolve() != skip.resolve()]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self.bank[self.index[int(i)]]

    def path(self, i: int) -> Path:
        return self.bank.paths[self.index[int(i)]]


# --------------------------------------------------------------------------------------------- the split
def build_validation_split(
    class_dir: str | Path,
    out: str | Path,
    settings: ValidationSettings,
    *,
    dataset: str,
    class_name: str,
    marker: str | Path,
    source_paths: Sequence[str | Path] | None = None,
    source_kind: str | None = None,
) -> dict:
    """Write the validation split of the class folder ``class_dir`` to ``out`` and its manifest to ``marker`` (last,
    atomically); returns the manifest.

    ``source_paths``: the Perlin anomalies' source images (DTD's, or the other classes' training images; named by
    ``source_kind``); None takes the class's own training images that remain, never the image drawn on. Too few
    training images for ``validation.holdout`` raise :class:`texad.data.holdout.HoldoutError`."""
    from texad.data.anomalies import draw_anomaly, recipe_for
    from texad.data.anomaly_sources import describe_sources

    class_dir, out, marker = Path(class_dir), Path(out), Path(marker)
    where = f"{dataset}/{class_name}"
    train = training_names(class_dir)
    by_name = {p.name: p for p in train}
    held = choose_held_out(
        list(by_name), settings.holdout, settings.min_holdout, settings.seed, class_name, where
    )
    on_training = not held
    normal = held or sorted(by_name)
    remaining = [n for n in sorted(by_name) if n not in set(held)]
    own = source_paths is None
    if own:
        source_kind = "own_class"
        source_paths = [by_name[n] for n in remaining]
    source_paths = [Path(p) for p in source_paths]
    if "perlin" in settings.anomalies and len(source_paths) - (1 if own and on_training else 0) < 1:
        raise ValueError(
            f"validation.anomalies: perlin needs an anomaly source image for class {where}, and there is none; "
            "enable datasets.dtd or add a class or training images"
        )
    recipe = recipe_for("code", p_anomaly=1.0)
    stems = _stems(normal)
    banks: dict = {}
    images = []
    with _replacing(out) as folder:
        for name in remaining:
            _link(folder / "train" / GOOD / name, by_name[name])
        for name in normal:
            _link(folder / "test" / GOOD / name, by_name[name])
            clean = _read(by_name[name])
            for kind in settings.anomalies:
                sources = None
                if kind == "perlin":
                    skip = by_name[name] if own else None
                    sources = _Sources(banks, source_paths, clean.shape[:2], skip)
                rng = _rng(settings.seed, class_name, kind, name)
                painted, mask, drawn = draw_anomaly(kind, clean, rng, sources=sources or (), recipe=recipe)
                image_file = Path("test") / kind / f"{stems[name]}.png"
                mask_file = Path("ground_truth") / kind / f"{stems[name]}_mask.png"
                _save_png(painted, folder / image_file)
                _save_png(mask.astype(np.uint8) * 255, folder / mask_file)
                entry = {"file": image_file.as_posix(), "mask": mask_file.as_posix(), "kind": kind, "image": name,
                         "area": round(float(mask.mean()), 6)}  # fmt: skip
                if sources is not None:
                    entry.update(source=_source_name(sources.path(drawn["source"])),
                                 opacity=round(drawn["opacity"], 6))  # fmt: skip
                images.append(entry)
    images.sort(key=lambda e: e["file"])
    manifest = {
        "format": SPLIT_FORMAT,
        "dataset": dataset,
        "class": class_name,
        "class_dir": str(class_dir),
        "holdout": settings.holdout,
        "min_holdout": settings.min_holdout,
        "seed": settings.seed,
        "anomalies": list(settings.anomalies),
        "validates_on_training_images": on_training,
        "n_train": len(train),
        "n_trained_on": len(remaining),
        "held_out": held,
        "n_normal": len(normal),
        "n_anomalous": len(images),
        "source": describe_sources(source_kind, source_paths) if "perlin" in settings.anomalies else None,
        "images": images,
    }
    write_marker(marker, manifest)
    return manifest


# ------------------------------------------------------------------------------------------ training view
def build_training_view(
    class_dir: str | Path,
    view: str | Path,
    holdout: Holdout,
    *,
    dataset: str,
    class_name: str,
    marker: str | Path,
) -> dict:
    """Write the training view of ``class_dir`` to ``view``: ``train/good`` without the held-out images, ``test``,
    ``ground_truth`` (and a user class's view information) linked to the class's own; then ``marker`` (last,
    atomically, e.g. ``<view>/view.json``). Returns the marker's content."""
    class_dir, view = Path(class_dir), Path(view)
    where = f"{dataset}/{class_name}"
    train = training_names(class_dir)
    by_name = {p.name: p for p in train}
    held = holdout.choose(list(by_name), class_name, where)
    remaining = [n for n in sorted(by_name) if n not in set(held)]
    with _replacing(view) as folder:
        for name in remaining:
            _link(folder / "train" / GOOD / name, by_name[name])
        for part in ("test", "ground_truth", VIEW_INFO):
            if (class_dir / part).exists():
                _link(folder / part, class_dir / part)
    record = {
        "format": VIEW_FORMAT,
        "dataset": dataset,
        "class": class_name,
        "class_dir": str(class_dir),
        **holdout.identity(),
        "n_train": len(train),
        "held_out": held,
        "trains_on": remaining,
    }
    write_marker(Path(marker), record)
    return record
