"""Tests of the class contact sheet (texad.report.contact_sheet)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from texad.data.synth import generate_class
from texad.report.contact_sheet import make_contact_sheet

SMALL = {"image_size": 64, "n_train": 5, "n_test_good": 1, "n_test_per_defect": 3, "seed": 2}


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_class(root, "woven", **SMALL)
    generate_class(root, "carpet", **SMALL)
    return root


def _red_pixels(png: Path) -> int:
    arr = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(((arr[..., 0] > 200) & (arr[..., 1] < 60) & (arr[..., 2] < 60)).sum())


@pytest.mark.parametrize("name", ["woven", "carpet"])
def test_sheet_is_written_as_png(classes, tmp_path, name):
    out = tmp_path / "sheets" / f"{name}.png"
    got = make_contact_sheet(classes / name, out, n_normal=4, per_defect=2, title=f"synthetic {name}")
    assert got == out and out.is_file()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        w, h = im.size
    # 5 rows (normal + 4 defects) x 4 columns of ~2 inch panels at 100 dpi
    assert 500 <= w <= 1500 and 700 <= h <= 1800, (w, h)
    assert _red_pixels(out) > 200  # masks are drawn in red
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp files left


def test_rows_follow_defect_types_and_masks_are_optional(classes, tmp_path):
    full = make_contact_sheet(classes / "woven", tmp_path / "full.png")
    only_normals = make_contact_sheet(classes / "woven", tmp_path / "normals.png", per_defect=0)
    with Image.open(full) as a, Image.open(only_normals) as b:
        assert a.size[1] > 2.5 * b.size[1]
    # gray normal-only sheet: no red anywhere
    assert _red_pixels(only_normals) == 0


def test_dtd_style_mask_names_and_deterministic_output(classes, tmp_path):
    dtd = tmp_path / "dtd_class"
    shutil.copytree(classes / "carpet", dtd)
    for m in (dtd / "ground_truth").rglob("*_mask.png"):
        m.rename(m.with_name(m.name.replace("_mask", "")))
    a = make_contact_sheet(dtd, tmp_path / "a.png", per_defect=1)
    b = make_contact_sheet(dtd, tmp_path / "b.png", per_defect=1)
    assert _red_pixels(a) > 100  # masks still found under DTD-Synthetic names
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    # without any masks the sheet is still drawn, just without red overlays
    shutil.rmtree(dtd / "ground_truth")
    c = make_contact_sheet(dtd, tmp_path / "c.png", per_defect=1)
    assert _red_pixels(c) < _red_pixels(a) // 4


def test_overwrites_existing_file_atomically(classes, tmp_path):
    out = tmp_path / "sheet.png"
    out.write_bytes(b"old")
    make_contact_sheet(classes / "carpet", out, n_normal=2, per_defect=1)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]


def test_missing_or_empty_train_folder_raises(tmp_path):
    missing = tmp_path / "no_such_class"
    with pytest.raises(FileNotFoundError, match="no_such_class"):
        make_contact_sheet(missing, tmp_path / "x.png")
    empty = tmp_path / "empty_class"
    (empty / "train" / "good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="empty_class"):
        make_contact_sheet(empty, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
