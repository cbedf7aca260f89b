"""Tests for texad.data.stage: licence gate, url/archive/path sources, verification, extraction, checks.

Everything runs offline: tiny archives mimicking each catalogue layout (8x8 PNGs / JPEGs) are built in
tmp_path and served from a small HTTP server on 127.0.0.1 that records every request. The catalogue's real
counts and checksums cannot match a tiny archive, so the tests swap in small catalogue entries with
``dataclasses.replace`` (``monkeypatch.setitem(catalog.DATASETS, ...)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from texad.data import catalog, layout
from texad.data.catalog import ClassLayout
from texad.data.download import ChecksumError, DownloadError, read_marker
from texad.data.layout import LayoutError
from texad.data.stage import PROVENANCE_NAME, LicenceNotAccepted, dataset_root, stage_dataset

MVTEC_NAME = "mvtec_anomaly_detection.tar.xz"


# ------------------------------------------------------------------------------- data builders
def _image(mode: str, seed: int, fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    n = size[0] * size[1] * (3 if mode == "RGB" else 1)
    raw = bytes((seed * 37 + i * 11) % 256 for i in range(n))
    buf = io.BytesIO()
    Image.frombytes(mode, size, raw).save(buf, format=fmt)
    return buf.getvalue()


def _class_files(
    cls: str, *, mode: str = "RGB", mask_suffix: str = "_mask", seed: int = 0
) -> dict[str, bytes]:
    """An MVTec-layout class: 2 train/good, 1 test/good, 1 test/color with its mask."""
    return {
        f"{cls}/train/good/000.png": _image(mode, seed + 1),
        f"{cls}/train/good/001.png": _image(mode, seed + 2),
        f"{cls}/test/good/000.png": _image(mode, seed + 3),
        f"{cls}/test/color/000.png": _image(mode, seed + 4),
        f"{cls}/ground_truth/color/000{mask_suffix}.png": _image("L", seed + 5),
    }


def _small(mode: str = "RGB") -> ClassLayout:
    return ClassLayout(train_good=2, test_good=1, defects={"color": 1}, size=(8, 8), mode=mode)


def _mvtec_files(top: str = "mvtec_anomaly_detection/") -> dict[str, bytes]:
    files = {}
    for i, (cls, mode) in enumerate((("carpet", "RGB"), ("grid", "L"), ("tile", "RGB"), ("bottle", "RGB"))):
        files.update(_class_files(cls, mode=mode, seed=10 * i))
    files["license.txt"] = b"CC BY-NC-SA 4.0\n"
    return {(top + k if k != "license.txt" else k): v for k, v in files.items()}


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:xz") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for d in sorted({p.as_posix() for n in files for p in Path(n).parents} - {"."}):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
    return path


def _digests(data: bytes) -> dict[str, str]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}


def _patch(monkeypatch, name: str, **changes) -> catalog.Dataset:
    ds = dataclasses.replace(catalog.DATASETS[name], **changes)
    monkeypatch.setitem(catalog.DATASETS, name, ds)
    return ds


@pytest.fixture
def paths(tmp_path):
    return {
        "root": tmp_path / "data" / "mvtec_ad",
        "cache": tmp_path / "cache",
        "marker": tmp_path / "data" / "mvtec_ad.staged.json",
    }


@pytest.fixture
def mvtec(tmp_path, server, monkeypatch):
    """The catalogue's MVTec entry pointing at a tiny archive served from 127.0.0.1 (pinned digests)."""
    arc = _tar(tmp_path / "src" / MVTEC_NAME, _mvtec_files())
    data = arc.read_bytes()
    url = server.add(MVTEC_NAME, data)
    d = _digests(data)
    _patch(
        monkeypatch,
        "mvtec_ad",
        url=url,
        sha256=d["sha256"],
        md5=d["md5"],
        expected={"carpet": _small(), "grid": _small("L"), "tile": _small(), "leather": _small()},
    )
    return {"url": url, "data": data, **d}


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ url source
def test_url_source_download_verify_extract_and_rerun_offline(mvtec, server, paths, capsys):
    out = stage_dataset("mvtec_ad", classes=["carpet", "grid"], accept_license=True, **paths)

    root = paths["root"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["carpet", "grid"]
    assert _files_under(root / "carpet") == sorted(k.split("/", 1)[1] for k in _class_files("carpet"))
    assert (paths["cache"] / MVTEC_NAME).read_bytes() == mvtec["data"]  # kept (keep_archive default)
    assert not list(root.parent.glob(".mvtec_ad.staging-*"))
    marker = read_marker(paths["marker"])
    assert marker == out
    assert marker["source"] == "url" and marker["url"] == mvtec["url"]
    assert marker["digests"] == {"sha256": mvtec["sha256"], "md5": mvtec["md5"]}
    assert marker["checksum"] == "catalogue"
    assert marker["archive"] == str(paths["cache"] / MVTEC_NAME)
    assert marker["root"] == str(root) and marker["classes"] == ["carpet", "grid"]
    assert marker["layout"]["carpet"]["counts"] == {"test/color": 1, "test/good": 1, "train/good": 2}
    assert marker["layout"]["grid"]["modes"] == {"L": 4}
    assert marker["licence"] == catalog.DATASETS["mvtec_ad"].licence and marker["licence_accepted"] is True
    assert marker["texad_version"] and marker["timestamp"]
    assert len(server.gets()) == 1
    err = capsys.readouterr().err
    assert "downloading" in err and "verifying" in err and "extracting" in err

    n = len(server.requests)
    again = stage_dataset("mvtec_ad", classes=["carpet", "grid"], accept_license=True, **paths)
    assert len(server.requests) == n  # the archive is in the cache: no network
    assert again["digests"] == marker["digests"] and again["layout"] == marker["layout"]
    assert "already holds a verified extraction" in capsys.readouterr().err
    assert dataset_root("mvtec_ad", root=root, path=None) == root


def test_partial_download_in_cache_resumes(mvtec, server, paths):
    part = paths["cache"] / (MVTEC_NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(mvtec["data"][:1000])
    stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, **paths)
    assert [g["range"] for g in server.gets()] == ["bytes=1000-"]
    assert (paths["cache"] / MVTEC_NAME).read_bytes() == mvtec["data"]
    assert not part.exists()


def test_requesting_more_classes_later_adds_them(mvtec, server, paths):
    stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, **paths)
    assert not (paths["root"] / "grid").exists()
    out = stage_dataset("mvtec_ad", classes=["carpet", "grid", "tile"], accept_license=True, **paths)
    assert sorted(out["layout"]) == ["carpet", "grid", "tile"]
    assert (paths["root"] / "tile" / "train" / "good" / "001.png").is_file()
    assert len(server.gets()) == 1


def test_damaged_extraction_is_extracted_again(mvtec, paths):
    stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, **paths)
    victim = paths["root"] / "carpet" / "train" / "good" / "001.png"
    victim.unlink()
    stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, **paths)
    assert victim.is_file()


def test_keep_archive_false_deletes_download_and_rerun_needs_no_network(mvtec, server, paths):
    out = stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, keep_archive=False, **paths)
    assert not (paths["cache"] / MVTEC_NAME).exists()
    assert out["archive_kept"] is False
    assert (paths["root"] / PROVENANCE_NAME).is_file()
    n = len(server.requests)
    again = stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, keep_archive=False, **paths)
    assert len(server.requests) == n
    assert again["digests"]["sha256"] == mvtec["sha256"] and again["checksum"] == "provenance"
    # A damaged copy without its archive is fetched again.
    (paths["root"] / "carpet" / "test" / "good" / "000.png").unlink()
    stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, keep_archive=False, **paths)
    assert len(server.gets()) == 2
    assert (paths["root"] / "carpet" / "test" / "good" / "000.png").is_file()


# ---------------------------------------------------------------------------------- licence gate
@pytest.mark.parametrize("source", ["url", "archive", "path"])
def test_licence_not_accepted_stops_before_anything(mvtec, server, paths, tmp_path, capsys, source):
    kwargs = {}
    if source == "archive":
        kwargs["archive"] = _tar(tmp_path / "hand" / MVTEC_NAME, _mvtec_files())
    elif source == "path":
        kwargs["path"] = tmp_path / "elsewhere"
        kwargs["path"].mkdir()
    with pytest.raises(LicenceNotAccepted) as ei:
        stage_dataset("mvtec_ad", classes=["carpet"], **paths, **kwargs)
    msg = str(ei.value)
    assert "datasets.mvtec_ad.accept_license" in msg and "true" in msg
    assert "CC BY-NC-SA 4.0" in capsys.readouterr().err
    assert server.requests == []
    assert not paths["marker"].exists()
    assert not paths["root"].exists()
    assert not paths["cache"].exists()


def test_licence_gate_only_where_needed(monkeypatch, tmp_path):
    # DTD needs no acceptance: without accept_license it goes on (here: to the missing path).
    with pytest.raises(FileNotFoundError, match=r"datasets\.dtd\.path"):
        stage_dataset(
            "dtd", root=tmp_path / "r", cache=tmp_path / "c", marker=tmp_path / "m", path=tmp_path / "nope"
        )


# ------------------------------------------------------------------------------------ checksums
def test_wrong_checksum_stops_before_extraction(mvtec, monkeypatch, paths):
    _patch(monkeypatch, "mvtec_ad", sha256="0" * 64)
    paths["marker"].parent.mkdir(parents=True, exist_ok=True)
    paths["marker"].write_text('{"stale": true}')  # an old marker must not survive a failed run
    with pytest.raises(ChecksumError) as ei:
        stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, **paths)
    assert mvtec["sha256"] in str(ei.value) and "0" * 64 in str(ei.value)
    assert not paths["marker"].exists()
    assert not (paths["root"] / "carpet").exists()
    assert (paths["cache"] / MVTEC_NAME).read_bytes() == mvtec["data"]  # kept for inspection


def test_archive_on_disk_is_verified_every_time(mvtec, paths):
    cached = paths["cache"] / MVTEC_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(mvtec["data"][:-10] + b"0123456789")  # corrupt copy already in the cache
    with pytest.raises(ChecksumError):
        stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, **paths)
    assert not paths["marker"].exists() and not (paths["root"] / "carpet").exists()


# --------------------------------------------------------------------------------------- layout
def test_layout_mismatch_names_class_and_count(tmp_path, server, monkeypatch, paths):
    files = _mvtec_files()
    del files["mvtec_anomaly_detection/carpet/train/good/001.png"]
    data = _tar(tmp_path / "src" / MVTEC_NAME, files).read_bytes()
    d = _digests(data)
    _patch(
        monkeypatch,
        "mvtec_ad",
        url=server.add(MVTEC_NAME, data),
        sha256=d["sha256"],
        md5=d["md5"],
        expected={"carpet": _small(), "grid": _small("L")},
    )
    with pytest.raises(LayoutError) as ei:
        stage_dataset("mvtec_ad", classes=["carpet", "grid"], accept_license=True, **paths)
    msg = str(ei.value)
    assert "carpet" in msg and "train/good: 1 images, expected 2" in msg
    assert not paths["marker"].exists()
    assert not (paths["root"] / "carpet").exists() and not (paths["root"] / "grid").exists()
    assert (paths["cache"] / MVTEC_NAME).exists()


def test_archive_without_requested_class(tmp_path, monkeypatch, paths, mvtec):
    files = {k: v for k, v in _mvtec_files().items() if "/grid/" not in k}
    arc = _tar(tmp_path / "hand" / "mine.tar.gz", files, "w:gz")
    with pytest.raises(LayoutError, match="grid") as ei:
        stage_dataset("mvtec_ad", classes=["carpet", "grid"], accept_license=True, archive=arc, **paths)
    assert "datasets.mvtec_ad.classes" in str(ei.value)
    assert not paths["marker"].exists()


@pytest.mark.parametrize("top", ["mvtec_anomaly_detection/", "", "a/b/"])
def test_top_folder_variants_keep_only_requested_classes(tmp_path, monkeypatch, paths, mvtec, top):
    arc = _zip(tmp_path / "hand" / "mvtec.zip", _mvtec_files(top))
    out = stage_dataset("mvtec_ad", classes=["grid", "tile"], accept_license=True, archive=arc, **paths)
    root = paths["root"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["grid", "tile"]
    assert (root / "grid" / "ground_truth" / "color" / "000_mask.png").is_file()
    assert out["layout"]["tile"]["n_defective"] == 1


# ---------------------------------------------------------------------------- archive / path sources
def test_local_archive_source_is_never_deleted(tmp_path, paths, mvtec, server):
    arc = _tar(tmp_path / "hand" / MVTEC_NAME, _mvtec_files())  # same name: the catalogue digests apply
    out = stage_dataset(
        "mvtec_ad", classes=["carpet"], accept_license=True, archive=arc, keep_archive=False, **paths
    )
    assert out["source"] == "archive" and out["archive"] == str(arc) and out["url"] is None
    assert out["checksum"] == "catalogue" and out["digests"]["sha256"] == mvtec["sha256"]
    assert arc.is_file()
    assert server.requests == []
    assert (paths["root"] / "carpet" / "train" / "good" / "000.png").is_file()


def test_local_archive_of_another_name_uses_trust_on_first_use(tmp_path, paths, mvtec):
    arc = _tar(tmp_path / "hand" / "carpet.tar.xz", {k: v for k, v in _class_files("carpet").items()})
    out = stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, archive=arc, **paths)
    assert out["checksum"] == "trust-on-first-use"
    sha_file = paths["cache"] / "mvtec_ad.sha256"
    assert sha_file.read_text().split()[0] == out["digests"]["sha256"]
    other = _tar(tmp_path / "hand2" / "carpet.tar.xz", _class_files("carpet", seed=99))
    with pytest.raises(ChecksumError, match=re.escape(str(sha_file))):
        stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, archive=other, **paths)


def test_missing_archive_names_config_key(tmp_path, paths, mvtec):
    with pytest.raises(FileNotFoundError, match=r"datasets\.mvtec_ad\.archive"):
        stage_dataset(
            "mvtec_ad", classes=["carpet"], accept_license=True, archive=tmp_path / "none.tar.xz", **paths
        )


def test_path_source(tmp_path, paths, mvtec, server):
    copy = tmp_path / "my_mvtec"
    for name, data in _mvtec_files("").items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    out = stage_dataset("mvtec_ad", classes=["carpet", "grid"], accept_license=True, path=copy, **paths)
    marker = read_marker(paths["marker"])
    assert marker == out
    assert (
        marker["source"] == "path" and marker["root"] == str(copy) and marker["classes"] == ["carpet", "grid"]
    )
    assert marker["layout"]["grid"]["modes"] == {"L": 4}
    assert server.requests == [] and not paths["root"].exists()
    assert dataset_root("mvtec_ad", root=paths["root"], path=copy) == copy

    # A path one level too high is refused with a hint.
    with pytest.raises(LayoutError, match=re.escape(str(copy))):
        stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, path=tmp_path, **paths)
    # A bad copy is refused.
    (copy / "carpet" / "test" / "good" / "000.png").unlink()
    with pytest.raises(LayoutError, match="test/good: 0 images, expected 1"):
        stage_dataset("mvtec_ad", classes=["carpet"], accept_license=True, path=copy, **paths)
    assert not paths["marker"].exists()


def test_path_that_does_not_exist(tmp_path, paths, mvtec):
    missing = tmp_path / "not_here"
    with pytest.raises(FileNotFoundError) as ei:
        stage_dataset("mvtec_ad", accept_license=True, path=missing, **paths)
    assert str(missing) in str(ei.value) and "datasets.mvtec_ad.path" in str(ei.value)
    assert not paths["marker"].exists()


def test_bad_arguments(paths, mvtec):
    with pytest.raises(ValueError, match="unknown dataset"):
        stage_dataset("nope", accept_license=True, **paths)
    with pytest.raises(ValueError, match=r"datasets\.mvtec_ad\.classes"):
        stage_dataset("mvtec_ad", classes=["bottle"], accept_license=True, **paths)


# -------------------------------------------------------------------------------- DTD-Synthetic
def _dtd_synthetic_files(seed: int = 0) -> dict[str, bytes]:
    files = {}
    for i, cls in enumerate(("Blotchy_099", "Mesh_114", "Woven_001")):
        for k, v in _class_files(cls, mask_suffix="", seed=seed + 10 * i).items():
            files[f"DTD-Synthetic/{k}"] = v
    return files


def test_dtd_synthetic_trust_on_first_use(tmp_path):
    kw = {
        "root": tmp_path / "data" / "dtd_synthetic",
        "cache": tmp_path / "cache",
        "marker": tmp_path / "data" / "dtd_synthetic.staged.json",
        "manifest_dir": tmp_path / "manifests",
        "classes": ["Blotchy_099", "Mesh_114"],
        "accept_license": True,
    }
    # No direct URL and no archive: the error says what to do.
    with pytest.raises(DownloadError) as ei:
        stage_dataset("dtd_synthetic", **kw)
    assert "datasets.dtd_synthetic.archive" in str(ei.value) and "datasets.dtd_synthetic.path" in str(
        ei.value
    )

    arc = _zip(tmp_path / "dl" / "DTD-Synthetic.zip", _dtd_synthetic_files())
    out = stage_dataset("dtd_synthetic", archive=arc, **kw)
    sha_file = kw["manifest_dir"] / "dtd_synthetic.sha256"
    manifest = kw["manifest_dir"] / "dtd_synthetic.manifest.json"
    assert sha_file.read_text().split()[0] == out["digests"]["sha256"]
    recorded = json.loads(manifest.read_text())["classes"]
    assert sorted(recorded) == ["Blotchy_099", "Mesh_114"]
    assert recorded["Mesh_114"]["counts"] == out["layout"]["Mesh_114"]["counts"]
    assert sorted(p.name for p in kw["root"].iterdir() if not p.name.startswith(".")) == [
        "Blotchy_099",
        "Mesh_114",
    ]
    assert out["checksum"] == "trust-on-first-use"

    # Same archive again: fine.
    stage_dataset("dtd_synthetic", archive=arc, **kw)

    # A changed archive fails on the recorded sha256 and names the file.
    changed = _dtd_synthetic_files()
    changed["DTD-Synthetic/Mesh_114/train/good/002.png"] = _image("RGB", 77)
    arc2 = _zip(tmp_path / "dl2" / "DTD-Synthetic.zip", changed)
    with pytest.raises(ChecksumError) as ei:
        stage_dataset("dtd_synthetic", archive=arc2, **kw)
    assert str(sha_file) in str(ei.value) and "delete" in str(ei.value)
    assert not kw["marker"].exists()

    # Even with the sha256 record deleted, the layout manifest catches the change.
    sha_file.unlink()
    with pytest.raises(LayoutError) as ei:
        stage_dataset("dtd_synthetic", archive=arc2, **kw)
    msg = str(ei.value)
    assert str(manifest) in msg and "Mesh_114" in msg and "train/good" in msg and "delete" in msg
    assert not kw["marker"].exists()
    assert len(_files_under(kw["root"] / "Mesh_114" / "train" / "good")) == 2  # the old copy is untouched

    # A class requested later is added to the manifest.
    sha_file.unlink(missing_ok=True)
    stage_dataset("dtd_synthetic", archive=arc, **{**kw, "classes": ["Blotchy_099", "Woven_001"]})
    assert sorted(json.loads(manifest.read_text())["classes"]) == ["Blotchy_099", "Mesh_114", "Woven_001"]


def test_dtd_synthetic_path_source_checks_manifest(tmp_path):
    copy = tmp_path / "DTD-Synthetic"
    for name, data in _dtd_synthetic_files().items():
        dest = tmp_path / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    kw = {
        "root": tmp_path / "r",
        "cache": tmp_path / "c",
        "marker": tmp_path / "m.json",
        "classes": ["Woven_001"],
        "accept_license": True,
        "path": copy,
    }
    stage_dataset("dtd_synthetic", **kw)
    assert (tmp_path / "c" / "dtd_synthetic.manifest.json").is_file()
    (copy / "Woven_001" / "test" / "good" / "000.png").unlink()
    with pytest.raises(LayoutError, match="dtd_synthetic.manifest.json"):
        stage_dataset("dtd_synthetic", **kw)


# ------------------------------------------------------------------------------------------- DTD
def test_dtd_layout(tmp_path, server, monkeypatch):
    files = {
        f"dtd/images/{cat}/{cat}_{i:04d}.jpg": _image("RGB", i, "JPEG")
        for cat in ("banded", "woven")
        for i in range(3)
    }
    files["dtd/labels/labels_joint_anno.txt"] = b"banded/banded_0000.jpg banded\n"
    data = _tar(tmp_path / "src" / "dtd-r1.0.1.tar.gz", files, "w:gz").read_bytes()
    ds = _patch(monkeypatch, "dtd", url=server.add("dtd-r1.0.1.tar.gz", data), md5=_digests(data)["md5"])
    monkeypatch.setattr(layout, "DTD_EXPECTED_CATEGORIES", 2)
    monkeypatch.setattr(layout, "DTD_EXPECTED_IMAGES", 6)
    kw = {"root": tmp_path / "data" / "dtd", "cache": tmp_path / "cache", "marker": tmp_path / "dtd.json"}

    out = stage_dataset("dtd", keep_archive=False, **kw)  # no licence acceptance needed
    assert out["url"] == ds.url and out["checksum"] == "catalogue" and out["classes"] == []
    assert out["layout"]["images"]["categories"] == 2 and out["layout"]["images"]["images"] == 6
    assert sorted(p.name for p in kw["root"].iterdir() if not p.name.startswith(".")) == ["images"]
    assert len(list((kw["root"] / "images" / "woven").glob("*.jpg"))) == 3
    assert not (kw["cache"] / "dtd-r1.0.1.tar.gz").exists()
    # md5 is the catalogue's pin; the sha256 is recorded on first success.
    assert (kw["cache"] / "dtd.sha256").read_text().split()[0] == out["digests"]["sha256"]
    assert dataset_root("dtd", root=kw["root"], path=None) == kw["root"]

    # Rerun without the archive: the previous extraction is re-checked, nothing is fetched.
    stage_dataset("dtd", keep_archive=False, **kw)
    assert len(server.gets()) == 1

    # A count mismatch is reported.
    monkeypatch.setattr(layout, "DTD_EXPECTED_IMAGES", 7)
    with pytest.raises(LayoutError, match="6 jpgs in 2 folders, expected 7"):
        stage_dataset("dtd", keep_archive=False, **kw)
    assert not kw["marker"].exists()


def test_check_dtd_expected_counts_parameters(tmp_path):
    for i in range(2):
        (tmp_path / "images" / "c").mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / "c" / f"{i}.jpg").write_bytes(_image("RGB", i, "JPEG"))
    assert layout.check_dtd(tmp_path, expected_categories=1, expected_images=2)["images"] == 2
    with pytest.raises(LayoutError, match="expected 5640 in 47"):
        layout.check_dtd(tmp_path)
