"""The MVTec folder layout: list samples, pair masks with images, count and check a class.

``<class>/train/good/*``, ``<class>/test/good/*``, ``<class>/test/<defect>/*`` and
``<class>/ground_truth/<defect>/<stem>_mask.png`` (DTD-Synthetic names masks like their image).
Pairing is by file stem, never by sorted order, and any mismatch is an error that names the file.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from texad.data.catalog import DTD_EXPECTED_CATEGORIES, DTD_EXPECTED_IMAGES, ClassLayout

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
#: Written in the view of a user's class folder (:mod:`texad.data.folder`): what the view's layout cannot say.
VIEW_INFO = ".texad_view.json"


class DatasetError(RuntimeError):
    """An image or mask that cannot be used; the message names the file and what to do.

    Defined here, apart from the torch Dataset in :mod:`texad.data.mvtec`, so that the CLI can name it
    without importing torch."""


class LayoutError(RuntimeError):
    """A dataset folder that does not have the expected layout; the message names the files."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 normal, 1 anomalous
    defect: str  # "good" or the defect folder name
    mask: Path | None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_mask(class_dir: Path, defect: str, image: Path) -> Path | None:
    """The mask of a defective test image: ``<stem>_mask.<ext>`` (MVTec) or ``<stem>.<ext>`` (DTD-Synthetic)."""
    folder = class_dir / "ground_truth" / defect
    for stem in (f"{image.stem}_mask", image.stem):
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def image_metrics_only(class_dir: str | Path) -> bool:
    """Whether ``class_dir`` is the view of a user's class that has no masks: its defect images are scored and
    evaluated per image; pixel metrics are not computed. Any other class needs a mask for every defect image."""
    info = Path(class_dir) / VIEW_INFO
    return info.is_file() and bool(json.loads(info.read_text(encoding="utf-8")).get("image_metrics_only"))


def _mask_stem(mask: Path) -> str:
    return mask.stem[: -len("_mask")] if mask.stem.endswith("_mask") else mask.stem


def list_samples(class_dir: str | Path, split: str) -> list[Sample]:
    """Samples of ``split`` ("train" or "test") in a stable order: good first, then defects alphabetically."""
    class_dir = Path(class_dir)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    split_dir = class_dir / split
    good_dir = split_dir / GOOD
    if not good_dir.is_dir():
        raise LayoutError(f"{good_dir} is missing: a class folder needs {split}/good (MVTec layout)")
    samples = [Sample(p, 0, GOOD, None) for p in _images(good_dir)]
    if split == "train":
        if not samples:
            raise LayoutError(f"{good_dir} holds no images: training needs defect-free images there")
        extra = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and d.name != GOOD)
        if extra:
            raise LayoutError(f"{split_dir} must hold only good/, found {', '.join(extra)}")
        return samples
    masks_optional = image_metrics_only(class_dir)
    for defect_dir in sorted(d for d in split_dir.iterdir() if d.is_dir() and d.name != GOOD):
        images = _images(defect_dir)
        paired = set()
        for image in images:
            mask = find_mask(class_dir, defect_dir.name, image)
            if mask is None and masks_optional:
                samples.append(Sample(image, 1, defect_dir.name, None))
                continue
            if mask is None:
                raise LayoutError(
                    f"no mask for {image}: expected {class_dir / 'ground_truth' / defect_dir.name / (image.stem + '_mask.png')}"
                )
            paired.add(mask.resolve())
            samples.append(Sample(image, 1, defect_dir.name, mask))
        mask_dir = class_dir / "ground_truth" / defect_dir.name
        if mask_dir.is_dir():
            orphans = [m for m in _images(mask_dir) if m.resolve() not in paired]
            if orphans:
                raise LayoutError(
                    f"{len(orphans)} mask(s) in {mask_dir} have no test image, e.g. {orphans[0].name} "
                    f"(expected test image {defect_dir / (_mask_stem(orphans[0]) + '.png')})"
                )
    if len(samples) == 0:
        raise LayoutError(f"{split_dir} holds no test images")
    return samples


def decode_image(path: Path, fix: str = "re-download the dataset or remove the file") -> Image.Image:
    """An image decoded fully, so that a truncated or corrupt file is caught here: a LayoutError naming it and
    ``fix``, what to do about it."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise LayoutError(f"cannot read image {path} ({exc}); {fix}") from exc


def _decode(path: Path) -> tuple[tuple[int, int], str]:
    """Size and mode of an image (fully decoded)."""
    im = decode_image(path)
    return im.size, im.mode


def scan_class(class_dir: str | Path) -> dict:
    """Counts, image sizes and modes of one class; checks each mask has its image's size."""
    class_dir = Path(class_dir)
    if not class_dir.is_dir():
        raise LayoutError(f"class folder {class_dir} does not exist")
    train = list_samples(class_dir, "train")
    test = list_samples(class_dir, "test")
    counts = Counter(f"{s.path.parent.parent.name}/{s.defect}" for s in train + test)
    sizes, modes = Counter(), Counter()
    for sample in train + test:
        size, mode = _decode(sample.path)
        sizes[f"{size[0]}x{size[1]}"] += 1
        modes[mode] += 1
        if sample.mask is not None:
            mask_size, _ = _decode(sample.mask)
            if mask_size != size:
                raise LayoutError(
                    f"mask {sample.mask} is {mask_size[0]}x{mask_size[1]} but its image {sample.path} is "
                    f"{size[0]}x{size[1]}; masks must match their image"
                )
    return {
        "class": class_dir.name,
        "counts": dict(sorted(counts.items())),
        "n_train": len(train),
        "n_test": len(test),
        "n_defective": sum(s.label for s in test),
        "masks": sum(s.mask is not None for s in test),
        "sizes": dict(sizes),
        "modes": dict(modes),
    }


def expected_counts(layout: ClassLayout) -> dict[str, int]:
    counts = {"train/good": layout.train_good, "test/good": layout.test_good}
    counts.update({f"test/{d}": n for d, n in layout.defects.items()})
    return dict(sorted(counts.items()))


def compare(report: dict, expected: dict) -> list[str]:
    """Differences between a scan and what is expected (``counts``, optional ``sizes``/``modes``)."""
    problems = []
    for key in sorted(set(report["counts"]) | set(expected["counts"])):
        got, want = report["counts"].get(key, 0), expected["counts"].get(key, 0)
        if got != want:
            problems.append(f"{key}: {got} images, expected {want}")
    for key in ("sizes", "modes"):
        if key in expected and set(report[key]) != set(expected[key]):
            problems.append(f"image {key}: found {sorted(report[key])}, expected {sorted(expected[key])}")
    return problems


def check_class(class_dir: str | Path, expected: ClassLayout | dict) -> dict:
    """Scan a class and raise LayoutError listing every difference from ``expected``."""
    report = scan_class(class_dir)
    if isinstance(expected, ClassLayout):
        want = {
            "counts": expected_counts(expected),
            "sizes": {f"{expected.size[0]}x{expected.size[1]}": None},
            "modes": {expected.mode: None},
        }
    else:
        want = expected
    problems = compare(report, want)
    if problems:
        raise LayoutError(
            f"{class_dir} does not match the expected layout:\n  "
            + "\n  ".join(problems)
            + "\nThe copy is incomplete or a different release: re-download it, or fix datasets.<name>.path."
        )
    return report


def scan_dtd(root: str | Path) -> dict:
    """Check the DTD layout (``images/<category>/*.jpg``) DRAEM reads its anomaly source from."""
    images_dir = Path(root) / "images"
    if not images_dir.is_dir():
        raise LayoutError(f"{images_dir} is missing: DTD must hold images/<category>/*.jpg")
    categories = sorted(d for d in images_dir.iterdir() if d.is_dir())
    counts = {d.name: sum(1 for p in d.glob("*.jpg")) for d in categories}
    return {"categories": len(counts), "images": sum(counts.values()), "per_category": counts}


def check_dtd(
    root: str | Path, *, expected_categories: int | None = None, expected_images: int | None = None
) -> dict:
    """Scan DTD and raise LayoutError unless it holds the expected numbers of folders and jpgs.

    The expected numbers default to DTD r1.0.1's (``DTD_EXPECTED_CATEGORIES``/``DTD_EXPECTED_IMAGES``).
    """
    want_categories = DTD_EXPECTED_CATEGORIES if expected_categories is None else expected_categories
    want_images = DTD_EXPECTED_IMAGES if expected_images is None else expected_images
    report = scan_dtd(root)
    if report["categories"] != want_categories or report["images"] != want_images:
        raise LayoutError(
            f"{Path(root) / 'images'} holds {report['images']} jpgs in {report['categories']} folders, "
            f"expected {want_images} in {want_categories}: re-download DTD r1.0.1"
        )
    return report
