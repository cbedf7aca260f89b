"""Users' own image folders as benchmark datasets (``datasets.folder``), read in place, never copied.

Two layouts:

- ``mvtec``: ``<class>/train/good``, ``<class>/test/good``, ``<class>/test/<defect>`` and optionally
  ``<class>/ground_truth/<defect>/<stem>[_mask].<ext>``;
- ``folder`` (anomalib's Folder arguments): ``normal_dir``, ``abnormal_dir`` (one or several; each folder's name is
  its defect type), ``mask_dir`` and ``normal_test_dir``, each a folder or a glob relative to the class folder.
  Without ``normal_test_dir`` a seeded share of the normal images is held out for testing; the split is recorded.

Either way :func:`index_class` checks the class (each problem is a :class:`~texad.data.layout.LayoutError` that
names the file and what to do) and builds a *view* of it in the MVTec layout made of symbolic links, which every
method, figure and DRAEM's anomaly source then reads like any other class. Its manifest lists every file of the
class folder with size, mtime and SHA-256, and the report of the check.

Staleness: the workflow passes :func:`fingerprint` (relative path, size and mtime of every file) as a parameter of
the indexing job, so any change of the folder reruns it and makes every job downstream stale. Content hashes are
not part of the fingerprint: Snakemake computes it on every start, and reading a large image collection each time
would cost minutes; the indexing job reads every file anyway (to decode it), so the manifest records each one's
SHA-256 for provenance.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from texad.data.download import file_digest, write_marker
from texad.data.layout import GOOD, IMAGE_SUFFIXES, VIEW_INFO, LayoutError, decode_image

__all__ = [
    "FolderSpec",
    "class_names",
    "fingerprint",
    "index_class",
    "safe_name",
    "split_counts",
]

_SAFE = re.compile(r"[^A-Za-z0-9_]+")
_GLOB_CHARS = set("*?[")
_EXAMPLES = 5  # unused files the report names


@dataclass(frozen=True)
class FolderSpec:
    """One entry of ``datasets.folder`` (defaults filled in by the schema); ``key`` is its config path."""

    name: str
    path: Path
    classes: tuple[str, ...] | None
    layout: str
    normal_dir: str | None
    abnormal_dir: tuple[str, ...]
    mask_dir: str | None
    normal_test_dir: str | None
    normal_test_fraction: float
    split_seed: int
    index: int  # the entry's position in datasets.folder

    @property
    def key(self) -> str:
        """The entry's config path, which messages name."""
        return f"datasets.folder[{self.index}]"

    @classmethod
    def from_config(cls, block: dict, index: int) -> FolderSpec:
        abnormal = block["abnormal_dir"]
        return cls(
            name=block["name"], path=Path(block["path"]).expanduser(),
            classes=tuple(block["classes"]) if block["classes"] is not None else None, layout=block["layout"],
            normal_dir=block["normal_dir"],
            abnormal_dir=(abnormal,) if isinstance(abnormal, str) else tuple(abnormal or ()),
            mask_dir=block["mask_dir"], normal_test_dir=block["normal_test_dir"],
            normal_test_fraction=float(block["normal_test_fraction"]), split_seed=int(block["split_seed"]),
            index=index,
        )  # fmt: skip


def safe_name(name: str) -> str:
    """A class name usable as a Snakemake wildcard and a file name: runs of other characters become ``_``."""
    return _SAFE.sub("_", name).strip("_")


def _is_class_folder(spec: FolderSpec, folder: Path) -> bool:
    if spec.layout == "mvtec":
        return (folder / "train").is_dir()
    assert spec.normal_dir is not None
    return bool(_match(folder, spec.normal_dir, files=False))


def class_names(spec: FolderSpec) -> dict[str, str]:
    """Safe class name -> the class folder's own name, for the classes of ``spec`` (given, or every class folder
    found under its path). Raises :class:`LayoutError` naming the key when the path or a class is missing or two
    names map to the same safe one."""
    if not spec.path.is_dir():
        raise LayoutError(
            f"{spec.key}.path is {spec.path}, which is not a folder: point it at the folder holding the class folders"
        )
    if spec.classes is not None:
        originals = list(spec.classes)
        missing = [c for c in originals if not (spec.path / c).is_dir()]
        if missing:
            raise LayoutError(
                f"{spec.key}.classes: no class folder {', '.join(repr(c) for c in missing)} in {spec.path}; "
                f"found {', '.join(sorted(d.name for d in spec.path.iterdir() if d.is_dir())) or 'no folders'}"
            )
    else:
        originals = sorted(
            d.name
            for d in spec.path.iterdir()
            if d.is_dir() and not d.name.startswith(".") and _is_class_folder(spec, d)
        )
        if not originals:
            what = "train/" if spec.layout == "mvtec" else f"{spec.normal_dir!r} ({spec.key}.normal_dir)"
            hint = (
                f" {spec.path} itself looks like a class: set {spec.key}.path to its parent and classes to "
                f"[{spec.path.name}]."
                if _is_class_folder(spec, spec.path)
                else ""
            )
            raise LayoutError(f"no class folder under {spec.path} ({spec.key}.path) holds {what}.{hint}")
    names: dict[str, str] = {}
    for original in originals:
        safe = safe_name(original)
        if safe == "mean":  # the tables' dataset-mean row
            safe = "class_mean"
        if not safe:
            raise LayoutError(
                f"{spec.key}: class folder {original!r} has no letter or digit to name it by; rename the folder"
            )
        if safe in names:
            raise LayoutError(
                f"{spec.key}: class folders {names[safe]!r} and {original!r} both map to the safe name {safe!r}; "
                "rename one of them"
            )
        names[safe] = original
    return names


def fingerprint(folder: Path) -> str:
    """SHA-256 of the relative path, size and mtime (ns) of every file under ``folder``: cheap (no file is read),
    and changes whenever a file is added, removed, replaced or edited."""
    return _fingerprint_of(_listing(folder))


def _listing(folder: Path) -> list[dict]:
    """Relative path, size and mtime (ns) of every file under ``folder``, in walk order."""
    listing = []
    for entry in _walk(folder):
        st = entry.stat()
        listing.append(
            {"path": entry.relative_to(folder).as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        )
    return listing


def _fingerprint_of(listing: list[dict]) -> str:
    digest = hashlib.sha256()
    for f in listing:
        digest.update(f"{f['path']}\0{f['size']}\0{f['mtime_ns']}\n".encode())
    return digest.hexdigest()


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return files


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _match(class_dir: Path, pattern: str, *, files: bool = True) -> list[Path]:
    """The files a ``*_dir`` value names: every file in a folder, or the files a glob matches (relative to
    the class folder)."""
    if _GLOB_CHARS & set(pattern):
        found = [Path(p) for p in globlib.glob(str(class_dir / pattern), recursive=True)]
        return sorted(p for p in found if p.is_file()) if files else found
    folder = class_dir / pattern
    if not folder.is_dir():
        return []
    return (
        sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if files
        else [folder]
    )


# ----------------------------------------------------------------------------------------------- collection
@dataclass
class _Entry:
    split: str  # train | test
    defect: str  # "good" or the defect type
    image: Path
    mask: Path | None = None


def _mask_key(mask: Path) -> str:
    return mask.stem[: -len("_mask")] if mask.stem.endswith("_mask") else mask.stem


def _pair_masks(entries: list[_Entry], masks: dict[str, list[Path]], where: str) -> None:
    """Pair each defect image with the mask named ``<stem>`` or ``<stem>_mask``; a mask left over is an error."""
    by_defect: dict[str, dict[str, Path]] = {}
    for defect, files in masks.items():
        table = by_defect.setdefault(defect, {})
        for m in files:
            table.setdefault(_mask_key(m), m)
    used = set()
    for e in entries:
        if e.defect == GOOD:
            continue
        m = by_defect.get(e.defect, {}).get(e.image.stem)
        if m is None:
            raise LayoutError(
                f"defect image {e.image} has no mask: expected {e.image.stem}_mask.png or {e.image.stem}.png in "
                f"{where}; add it, or remove the image"
            )
        e.mask = m
        used.add(m)
    for files in masks.values():
        orphans = [m for m in files if m not in used]
        if orphans:
            raise LayoutError(
                f"mask {orphans[0]} has no defect image named {_mask_key(orphans[0])}.* "
                f"({len(orphans)} such mask(s)); add the image or remove the mask"
            )


def _collect_mvtec(class_dir: Path) -> tuple[list[_Entry], bool]:
    def images(folder: Path) -> list[Path]:
        out = []
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                if _is_image(p):
                    out.append(p)
        return out

    entries = []
    train_good = class_dir / "train" / GOOD
    if not train_good.is_dir():
        raise LayoutError(
            f"{train_good} is missing: the class needs defect-free training images there (mvtec layout)"
        )
    entries += [_Entry("train", GOOD, p) for p in images(train_good)]
    test = class_dir / "test"
    for d in sorted(test.iterdir()) if test.is_dir() else []:
        if d.is_dir():
            entries += [_Entry("test", d.name, p) for p in images(d)]
    gt = class_dir / "ground_truth"
    masks = {d.name: images(d) for d in sorted(gt.iterdir()) if d.is_dir()} if gt.is_dir() else {}
    has_masks = any(masks.values())
    if has_masks:
        _pair_masks(entries, masks, f"{gt}/<defect>/")
    return entries, has_masks


def _split_normals(
    normals: list[Path], fraction: float, seed: int, key: str
) -> tuple[list[Path], list[Path]]:
    """(train, test): a seeded random share ``fraction`` of ``normals`` (at least one, leaving at least one) for
    testing. The draw depends on the file names only, not on how the folder was listed."""
    if len(normals) < 2:
        raise LayoutError(
            f"{len(normals)} normal image(s): holding normal test images out of them needs at least 2; add normal "
            f"images, or give {key}.normal_test_dir"
        )
    ordered = sorted(normals, key=lambda p: p.name)
    n_test = min(max(1, round(fraction * len(ordered))), len(ordered) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(ordered))[:n_test].tolist())
    train = [p for i, p in enumerate(ordered) if i not in chosen]
    test = [p for i, p in enumerate(ordered) if i in chosen]
    return train, test


def _collect_folder(spec: FolderSpec, class_dir: Path) -> tuple[list[_Entry], bool, dict]:
    def images(pattern: str) -> list[Path]:
        out = []
        for p in _match(class_dir, pattern):
            if _is_image(p):
                out.append(p)
        return out

    assert spec.normal_dir is not None
    normals = images(spec.normal_dir)
    split: dict = {}
    if spec.normal_test_dir is not None:
        train, test_good = normals, images(spec.normal_test_dir)
        split = {"rule": "normal_test_dir", "normal_test_dir": spec.normal_test_dir}
    else:
        train, test_good = _split_normals(normals, spec.normal_test_fraction, spec.split_seed, spec.key)
        split = {
            "rule": "held out", "fraction": spec.normal_test_fraction, "seed": spec.split_seed,
            "test_good": sorted(p.relative_to(class_dir).as_posix() for p in test_good),
        }  # fmt: skip
    entries = [_Entry("train", GOOD, p) for p in train] + [_Entry("test", GOOD, p) for p in test_good]
    for pattern in spec.abnormal_dir:
        defect = safe_name(Path(pattern.split("*")[0].rstrip("/")).name or "abnormal") or "abnormal"
        if defect == GOOD:
            raise LayoutError(
                f"{spec.key}.abnormal_dir {pattern!r}: a defect type cannot be named 'good'; rename it"
            )
        entries += [_Entry("test", defect, p) for p in images(pattern)]
    has_masks = spec.mask_dir is not None
    if has_masks:
        defects = sorted({e.defect for e in entries if e.defect != GOOD})
        mask_files = images(spec.mask_dir)
        # One mask folder for every defect type (anomalib's mask_dir): pair by name across all of them.
        stems = {_mask_key(m): m for m in mask_files}
        per_defect: dict[str, list[Path]] = {d: [] for d in defects}
        for e in entries:
            if e.defect != GOOD and e.image.stem in stems:
                per_defect[e.defect].append(stems.pop(e.image.stem))
        if stems:
            orphan = sorted(stems.values())[0]
            raise LayoutError(
                f"mask {orphan} has no defect image named {_mask_key(orphan)}.* in {spec.key}.abnormal_dir "
                f"({len(stems)} such mask(s)); add the image or remove the mask"
            )
        _pair_masks(entries, per_defect, f"{class_dir / spec.mask_dir}")
    return entries, has_masks, split


def split_counts(spec: FolderSpec, original: str) -> tuple[int, int]:
    """(training images, test images) of a class, from its listing alone (no file is read): what the cost model
    needs before anything runs."""
    class_dir = spec.path / original
    entries = _collect_mvtec(class_dir)[0] if spec.layout == "mvtec" else _collect_folder(spec, class_dir)[0]
    n_train = sum(e.split == "train" for e in entries)
    return n_train, len(entries) - n_train


# ------------------------------------------------------------------------------------------------- checks
def _decode(path: Path) -> Image.Image:
    return decode_image(path, "re-export it or remove it from the folder")


def _check_mask(mask: Path, image: Path, image_size: tuple[int, int]) -> None:
    m = _decode(mask)
    if m.size != image_size:
        raise LayoutError(
            f"mask {mask} is {m.size[0]}x{m.size[1]} but its image {image} is {image_size[0]}x{image_size[1]}; "
            "save the mask at its image's size"
        )
    values = np.unique(np.asarray(m.convert("L")))
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        raise LayoutError(
            f"mask {mask} is not binary: it holds {values.size} grey levels ({', '.join(map(str, values[:6]))}"
            f"{' ...' if values.size > 6 else ''}); save it as a PNG with 0 for normal and one value (e.g. 255) for "
            "defect pixels (JPEG compression makes masks non-binary)"
        )


# --------------------------------------------------------------------------------------------------- view
def _view_names(entries: list[_Entry]) -> list[str]:
    """The file name of each entry in the view: its own, with ``__<n>`` added where two of one folder collide."""
    seen: Counter = Counter()
    names = []
    for e in entries:
        folder = (e.split, e.defect)
        stem, suffix = e.image.stem, e.image.suffix
        seen[(folder, stem)] += 1
        n = seen[(folder, stem)]
        names.append(f"{stem}__{n}{suffix}" if n > 1 else f"{stem}{suffix}")
    return names


def _build_view(entries: list[_Entry], names: list[str], final: Path) -> None:
    """Create the MVTec-layout view of symbolic links at ``final``, replacing an earlier one in one rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.indexing-", dir=final.parent))
    try:
        view = tmp / final.name
        for e, name in zip(entries, names, strict=True):
            link = view / e.split / e.defect / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(e.image.resolve())
            if e.mask is not None:
                mask_link = view / "ground_truth" / e.defect / f"{Path(name).stem}_mask{e.mask.suffix}"
                mask_link.parent.mkdir(parents=True, exist_ok=True)
                mask_link.symlink_to(e.mask.resolve())
        (view / "test" / GOOD).mkdir(parents=True, exist_ok=True)
        has_masks = any(e.mask is not None for e in entries)
        (view / VIEW_INFO).write_text(
            json.dumps({"image_metrics_only": not has_masks}) + "\n", encoding="utf-8"
        )
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        os.replace(view, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- index
def index_class(spec: FolderSpec, safe: str, original: str, *, view: Path, marker: Path) -> dict:
    """Check the class folder ``spec.path/original``, build its view at ``view`` and write the manifest ``marker``
    (last, atomically). Returns the manifest."""
    class_dir = spec.path / original
    if not class_dir.is_dir():
        raise LayoutError(f"class folder {class_dir} ({spec.key}) does not exist")
    split: dict = {"rule": "mvtec layout (train/good, test/good)"}
    if spec.layout == "mvtec":
        entries, has_masks = _collect_mvtec(class_dir)
    else:
        entries, has_masks, split = _collect_folder(spec, class_dir)
    if not entries:
        raise LayoutError(f"class {original!r} in {class_dir} holds no images; add images or drop the class")
    train = [e for e in entries if e.split == "train"]
    test_good = [e for e in entries if e.split == "test" and e.defect == GOOD]
    defective = [e for e in entries if e.split == "test" and e.defect != GOOD]
    where = spec.normal_dir if spec.layout == "folder" else "train/good"
    if not train:
        raise LayoutError(
            f"class {original!r} has no normal training images in {class_dir / where}; add some there"
        )
    if not test_good:
        where = spec.normal_test_dir if spec.layout == "folder" else "test/good"
        raise LayoutError(
            f"class {original!r} has no normal test images in {class_dir / str(where)}: every metric compares normal "
            "with defect images; add some there"
        )
    if not defective:
        raise LayoutError(
            f"class {original!r} has no defect test images (in {class_dir / 'test'} or abnormal_dir): AUROC, AP and "
            "AUPRO compare defect with normal images; add defect images"
        )

    sizes, modes = Counter(), Counter()
    for e in entries:
        im = _decode(e.image)
        sizes[f"{im.size[0]}x{im.size[1]}"] += 1
        modes[im.mode] += 1
        if e.mask is not None:
            _check_mask(e.mask, e.image, im.size)
    listed = {p.relative_to(class_dir).as_posix() for e in entries for p in (e.image, e.mask) if p}
    files = _listing(class_dir)
    for f in files:
        f["sha256"], f["used"] = file_digest(class_dir / f["path"]), f["path"] in listed

    names = _view_names(entries)
    _build_view(entries, names, view)
    counts = Counter(f"{e.split}/{e.defect}" for e in entries)
    notes = []
    if len(sizes) > 1 or len(modes) > 1:
        notes.append(
            f"mixed image sizes ({', '.join(sorted(sizes))}) or modes ({', '.join(sorted(modes))}): every method "
            "resizes each image to its input size and converts it to RGB"
        )
    if not has_masks:
        notes.append("no masks: image metrics only (pixel AUROC, AP and AUPRO are not computed)")
    unused = [Path(f["path"]) for f in files if not f["used"]]
    non_image = [p for p in unused if not _is_image(p)]
    if unused:
        notes.append(
            f"{len(unused)} file(s) of the class folder not used ({len(non_image)} not images), e.g. {unused[0]}"
        )
    report = {
        "dataset": spec.name, "class": safe, "class_name": original, "layout": spec.layout,
        "source": str(class_dir.resolve()), "counts": dict(sorted(counts.items())),
        "n_train": len(train), "n_test": len(test_good) + len(defective), "n_defective": len(defective),
        "masks": sum(e.mask is not None for e in entries), "image_metrics_only": not has_masks,
        "sizes": dict(sizes), "modes": dict(modes), "split": split,
        "skipped": {"n": len(unused), "non_image": len(non_image),
                    "examples": [p.as_posix() for p in unused[:_EXAMPLES]]},
        "notes": notes,
    }  # fmt: skip
    manifest = {
        "report": report,
        "fingerprint": _fingerprint_of(files),
        "view": {  # each link of the view -> the file it points to, relative to the class folder
            f"{e.split}/{e.defect}/{name}": e.image.relative_to(class_dir).as_posix()
            for e, name in zip(entries, names, strict=True)
        },
        "files": files,
    }  # fmt: skip
    write_marker(marker, manifest)
    return manifest
