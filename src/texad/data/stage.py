"""Stage one dataset: licence gate, download (or local archive / extracted copy), verify, extract, check.

One call of :func:`stage_dataset` is what the workflow's ``localrule`` for a dataset does. Its declared
output is the completion ``marker``, written last and atomically, so a killed job is never taken as done.

Procedure (``shared/spec/datasets_and_metrics.md`` §5):

1. **Licence gate**: a dataset whose licence needs acceptance (MVTec AD, DTD-Synthetic) is refused until
   ``datasets.<name>.accept_license`` is true; nothing is downloaded or extracted before that.
2. **Source**: ``path`` (an extracted copy: checked in place), else ``archive`` (a local file fetched by
   hand), else ``url`` / the catalogue URL, downloaded into ``cache`` (a partial download resumes there).
3. **Verify before extracting, every time**: the catalogue's sha256/md5 when the archive is the catalogue's
   file (same file name), otherwise trust-on-first-use: the sha256 of the first archive that stages
   successfully is recorded in ``manifest_dir/<name>.sha256`` and any later change fails.
4. **Extract** with :func:`~texad.data.download.safe_extract` into a temporary folder beside ``root``, find
   the folder holding the class folders (or ``images/`` for DTD), check the requested classes there and move
   only those into ``root/<class>`` (``root/images``). A previous verified extraction (recorded in
   ``root/.texad_stage.json``) is re-checked instead of extracted again.
5. **Layout check**: MVTec classes against the catalogue's counts, DTD against its 47 folders / 5640 jpgs,
   classes without published counts (DTD-Synthetic) against a first-run manifest
   ``manifest_dir/<name>.manifest.json``.
6. The archive is deleted only after the checks pass, only when texad downloaded it and ``keep_archive``
   is false.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import urllib.parse
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from texad.atomic import atomic_write_text
from texad.data import catalog, layout
from texad.data.download import (
    ChecksumError,
    DownloadError,
    download,
    read_marker,
    safe_extract,
    verify_checksum,
    write_marker,
)
from texad.data.layout import LayoutError
from texad.rehearsal.switches import published_counts_checked

__all__ = ["PROVENANCE_NAME", "LicenceNotAccepted", "dataset_root", "stage_dataset"]

#: Written into ``root`` after a verified extraction: which archive (digests) the class folders came from.
PROVENANCE_NAME = ".texad_stage.json"

_HASH_CHUNK = 1 << 20
_SEARCH_DEPTH = 4  # how deep in an archive the folder holding the classes (or images/) may sit
_REPORT_KEYS = ("counts", "sizes", "modes", "n_train", "n_test", "n_defective", "masks")


class LicenceNotAccepted(RuntimeError):
    """The dataset's licence needs an explicit acceptance in the config and it was not given."""


# ------------------------------------------------------------------------------------------ helpers
def _say(name: str, message: str) -> None:
    print(f"[texad stage {name}] {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version() -> str:
    from texad import __version__

    return __version__


def dataset_root(name: str, *, root: Path, path: Path | None) -> Path:
    """Where downstream jobs find the data of ``name``.

    The folder holding the class folders (``<class>/train/good/...``) for MVTec-layout datasets, or the
    folder holding ``images/`` for DTD: the user's extracted copy (``datasets.<name>.path``) when given,
    else texad's own ``root``.
    """
    catalog.get_dataset(name)  # unknown names fail here with the list of known ones
    return Path(path).expanduser() if path is not None else Path(root)


def _resolve_classes(ds: catalog.Dataset, classes: Sequence[str] | None) -> list[str]:
    if ds.layout == "dtd":
        if classes:
            raise ValueError(f"dataset {ds.name} has no classes (DTD layout), got classes={list(classes)!r}")
        return []
    if classes is None:
        chosen = list(ds.classes)
    elif isinstance(classes, str):
        raise TypeError(f"classes must be a sequence of class names, got the string {classes!r}")
    else:
        chosen = list(dict.fromkeys(classes))
    if not chosen:
        raise ValueError(f"no classes requested for {ds.name}: set datasets.{ds.name}.classes")
    unknown = [c for c in chosen if ds.classes and c not in ds.classes]
    if unknown:
        raise ValueError(
            f"unknown class(es) {', '.join(unknown)} for {ds.name} in datasets.{ds.name}.classes; "
            f"known: {', '.join(ds.classes)}"
        )
    return chosen


def _licence_gate(ds: catalog.Dataset, accept_license: bool) -> None:
    if not ds.licence_needs_acceptance or accept_license is True:
        return
    key = f"datasets.{ds.name}.accept_license"
    print(
        f"\n{ds.title}: licence\n  {ds.licence}\n"
        f"texad fetches and uses this dataset only after you accept it: set {key}: true in the config.\n",
        file=sys.stderr,
        flush=True,
    )
    raise LicenceNotAccepted(
        f"The licence of {ds.name} ({ds.title}) has not been accepted. Read it (printed above):\n  {ds.licence}\n"
        f"If you agree, set {key}: true in the config and run again. Nothing was downloaded or extracted."
    )


def _archive_name(ds: catalog.Dataset, url: str) -> str:
    if url == ds.url and ds.archive_name:
        return ds.archive_name
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name or name in (".", ".."):
        name = f"{ds.name}.archive"
    return name


def _pinned(ds: catalog.Dataset, archive_name: str) -> dict[str, str]:
    """The catalogue digests that apply to an archive of this name (only the catalogue's own file)."""
    if not ds.archive_name or archive_name != ds.archive_name:
        return {}
    return {k: v for k, v in (("sha256", ds.sha256), ("md5", ds.md5)) if v}


def _digests(path: Path) -> dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


# ------------------------------------------------------------------ trust-on-first-use checksum
def _tofu_file(manifest_dir: Path, name: str) -> Path:
    return manifest_dir / f"{name}.sha256"


def _read_tofu(sha_file: Path) -> str | None:
    try:
        text = sha_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    token = text.split()[0].lower() if text else ""
    if len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise ChecksumError(
            f"{sha_file} does not hold a sha256 digest; delete it to record the archive's digest again.",
            path=sha_file,
            algorithm="sha256",
            expected="",
            actual=token,
        )
    return token


def _verify_archive(ds: catalog.Dataset, archive: Path, manifest_dir: Path) -> tuple[dict, str]:
    """Verify ``archive``; return (digests, how) with how = "catalogue" or "trust-on-first-use"."""
    pinned = _pinned(ds, archive.name)
    if pinned:
        digests = verify_checksum(archive, sha256=pinned.get("sha256"), md5=pinned.get("md5"))
        how = "catalogue"
    else:
        digests = _digests(archive)
        how = "trust-on-first-use"
    if "sha256" not in pinned:
        sha_file = _tofu_file(manifest_dir, ds.name)
        recorded = _read_tofu(sha_file)
        if recorded is not None and recorded != digests["sha256"]:
            raise ChecksumError(
                f"Checksum mismatch for {archive}: sha256 {digests['sha256']} differs from {recorded} recorded in "
                f"{sha_file} when {ds.name} was first staged (trust on first use). The archive is corrupt or a "
                f"different release (it was left in place). If the change is intended, delete {sha_file} and "
                "run again.",
                path=archive,
                algorithm="sha256",
                expected=recorded,
                actual=digests["sha256"],
            )
    return digests, how


def _record_tofu(ds: catalog.Dataset, archive: Path, digests: dict, manifest_dir: Path) -> None:
    if "sha256" in _pinned(ds, archive.name):
        return
    sha_file = _tofu_file(manifest_dir, ds.name)
    if _read_tofu(sha_file) is None:
        atomic_write_text(sha_file, f"{digests['sha256']}  {archive.name}\n")


# ---------------------------------------------------------------------------------- layout checks
def _manifest_file(manifest_dir: Path, name: str) -> Path:
    return manifest_dir / f"{name}.manifest.json"


def _read_manifest(manifest: Path) -> dict:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"layout manifest {manifest} is corrupt ({exc}); delete it and run again") from exc
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, dict):
        raise LayoutError(f"layout manifest {manifest} has no 'classes' object; delete it and run again")
    return classes


def _manifest_diff(got: dict, want: dict) -> list[str]:
    problems = []
    for key in _REPORT_KEYS:
        a, b = got.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    problems.append(f"{key} {k}: {a.get(k, 0)}, the manifest has {b.get(k, 0)}")
        elif a != b:
            problems.append(f"{key}: {a}, the manifest has {b}")
    return problems


def _check_classes(
    ds: catalog.Dataset, data_dir: Path, classes: list[str], manifest_dir: Path
) -> tuple[dict, dict]:
    """Check ``data_dir/<class>`` for each class; return (reports, new manifest entries).

    Classes with catalogue counts are checked with :func:`layout.check_class`; the others against the
    first-run manifest (a class missing from it is returned as a new entry, recorded after success).
    """
    reports, new_entries = {}, {}
    manifest = _manifest_file(manifest_dir, ds.name)
    recorded = None
    for cls in classes:
        class_dir = data_dir / cls
        if cls in ds.expected and published_counts_checked():
            reports[cls] = layout.check_class(class_dir, ds.expected[cls])
            continue
        report = layout.scan_class(class_dir)
        if recorded is None:
            recorded = _read_manifest(manifest)
        if cls in recorded:
            problems = _manifest_diff(report, recorded[cls])
            if problems:
                listing = "\n  ".join(problems)
                raise LayoutError(
                    f"{class_dir} (class {cls}) differs from the layout recorded in {manifest} on the first "
                    f"successful run:\n  {listing}\nThe copy is incomplete or a different release: re-download "
                    f"it. If the change is intended, delete {manifest} and run again."
                )
        else:
            new_entries[cls] = report
        reports[cls] = report
    return reports, new_entries


def _check_layout(
    ds: catalog.Dataset, data_dir: Path, classes: list[str], manifest_dir: Path
) -> tuple[dict, dict]:
    if ds.layout == "dtd":
        return {
            "images": layout.check_dtd(data_dir) if published_counts_checked() else layout.scan_dtd(data_dir)
        }, {}
    return _check_classes(ds, data_dir, classes, manifest_dir)


def _record_manifest(ds: catalog.Dataset, manifest_dir: Path, new_entries: dict) -> None:
    if not new_entries:
        return
    manifest = _manifest_file(manifest_dir, ds.name)
    classes = _read_manifest(manifest)
    for cls, report in new_entries.items():
        classes[cls] = {k: report[k] for k in ("class", *_REPORT_KEYS) if k in report}
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_marker(
        manifest,
        {
            "dataset": ds.name,
            "note": "First-run layout of each class (trust on first use); delete this file if a change is intended.",
            "updated": _now(),
            "classes": dict(sorted(classes.items())),
        },
    )


# ------------------------------------------------------------------------------- archive layout
def _find_data_dir(top: Path, ds: catalog.Dataset, classes: list[str]) -> Path | None:
    """The shallowest folder under ``top`` that holds all ``classes`` (or ``images/`` for DTD)."""
    wanted = ["images"] if ds.layout == "dtd" else classes
    level = [top]
    for _ in range(_SEARCH_DEPTH + 1):
        for folder in level:
            if all((folder / w).is_dir() for w in wanted):
                return folder
        level = [
            d
            for folder in level
            for d in sorted(folder.iterdir())
            if d.is_dir() and not d.name.startswith((".", "__MACOSX"))
        ]
        if not level:
            break
    return None


def _describe(top: Path, depth: int = 3) -> str:
    """A short listing of the folders in the first ``depth`` levels under ``top`` (for error messages)."""
    lines = []
    level = [top]
    for _ in range(depth):
        nxt = []
        for folder in level:
            subs = sorted(d for d in folder.iterdir() if d.is_dir())
            if subs:
                names = ", ".join(d.name for d in subs[:20]) + (" ..." if len(subs) > 20 else "")
                lines.append(f"{folder.relative_to(top).as_posix()}/: {names}")
            nxt.extend(subs[:20])
        level = nxt
    return "; ".join(lines[:10]) or "(no folders)"


def _missing_classes_error(
    where: str, top: Path, ds: catalog.Dataset, classes: list[str], hint: str
) -> LayoutError:
    if ds.layout == "dtd":
        what = "an images/ folder (DTD layout images/<category>/*.jpg)"
    else:
        what = f"a folder holding the class folder(s) {', '.join(classes)}"
    return LayoutError(f"{where} does not contain {what}. Found: {_describe(top)}. {hint}")


# ---------------------------------------------------------------------------------- provenance
def _read_provenance(root: Path) -> dict | None:
    try:
        return read_marker(root / PROVENANCE_NAME)
    except DownloadError:
        return None


def _provenance_trusted(ds: catalog.Dataset, prov: dict, manifest_dir: Path) -> dict | None:
    """The provenance digests if they match what texad trusts for ``ds`` (catalogue or TOFU), else None."""
    digests = prov.get("digests") or {}
    name = Path(str(prov.get("archive_name") or "")).name
    pinned = _pinned(ds, name)
    if pinned:
        return digests if all(digests.get(k) == v.lower() for k, v in pinned.items()) else None
    recorded = _read_tofu(_tofu_file(manifest_dir, ds.name))
    return digests if recorded is not None and digests.get("sha256") == recorded else None


def _reusable(
    ds: catalog.Dataset, root: Path, classes: list[str], manifest_dir: Path, sha256: str | None
) -> tuple[dict, dict] | None:
    """Reports of a previous verified extraction in ``root`` from the same archive, or None."""
    prov = _read_provenance(root)
    if not prov or prov.get("dataset") != ds.name:
        return None
    if sha256 is not None and (prov.get("digests") or {}).get("sha256") != sha256:
        return None
    have = set(prov.get("classes") or [])
    if ds.layout == "dtd":
        if not (root / "images").is_dir():
            return None
    elif not set(classes) <= have or not all((root / c).is_dir() for c in classes):
        return None
    try:
        return _check_layout(ds, root, classes, manifest_dir)
    except LayoutError as exc:
        _say(ds.name, f"the previous extraction in {root} fails its check ({exc}); extracting again")
        return None


def _install(
    ds: catalog.Dataset,
    archive: Path,
    root: Path,
    classes: list[str],
    manifest_dir: Path,
    digests: dict,
) -> tuple[dict, dict]:
    """Extract ``archive`` beside ``root``, check the requested classes there and move them into ``root``."""
    root.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_staging(root)
    staging = root.parent / f".{root.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        extracted = safe_extract(archive, staging / "x")
        data_dir = _find_data_dir(extracted, ds, classes)
        if data_dir is None:
            raise _missing_classes_error(
                f"The archive {archive}",
                extracted,
                ds,
                classes,
                f"It is not the {ds.title} archive, or lacks these classes: check datasets.{ds.name}.classes "
                "and the archive.",
            )
        try:
            reports, new_entries = _check_layout(ds, data_dir, classes, manifest_dir)
        except LayoutError as exc:
            # Name files as archive members, not by the temporary folder they were checked in.
            detail = str(exc).replace(f"{extracted}{os.sep}", f"{archive.name}:")
            raise LayoutError(
                f"The archive {archive} does not hold a valid copy of {ds.name}: {detail}"
            ) from exc

        root.mkdir(parents=True, exist_ok=True)
        prev = _read_provenance(root) or {}
        same_archive = (prev.get("digests") or {}).get("sha256") == digests["sha256"]
        kept_classes = set(prev.get("classes") or []) if same_archive else set()
        with contextlib.suppress(FileNotFoundError):
            (root / PROVENANCE_NAME).unlink()
        names = ["images"] if ds.layout == "dtd" else classes
        trash = staging / "old"
        trash.mkdir()
        for entry in names:
            dest = root / entry
            if dest.exists() or dest.is_symlink():
                os.replace(dest, trash / entry)
            os.replace(data_dir / entry, dest)
        write_marker(
            root / PROVENANCE_NAME,
            {
                "dataset": ds.name,
                "archive_name": archive.name,
                "digests": digests,
                "classes": sorted(set(classes) | kept_classes) if ds.layout != "dtd" else [],
                "extracted": _now(),
            },
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return reports, new_entries


def _clean_stale_staging(root: Path) -> None:
    """Remove staging folders left by killed runs (their process is gone)."""
    for d in root.parent.glob(f".{root.name}.staging-*"):
        try:
            pid = int(d.name.rsplit(".staging-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


# ------------------------------------------------------------------------------------- main entry
def stage_dataset(
    name: str,
    *,
    root: Path,
    cache: Path,
    marker: Path,
    classes: Sequence[str] | None = None,
    url: str | None = None,
    archive: Path | None = None,
    path: Path | None = None,
    accept_license: bool = False,
    keep_archive: bool = True,
    manifest_dir: Path | None = None,
    progress: bool | None = None,
) -> dict:
    """Stage dataset ``name`` and write the completion ``marker`` (last, atomically); return its payload.

    ``root``: where texad keeps the extracted data (``root/<class>`` or ``root/images``); ``cache``: where
    downloads (and their partial ``.part`` files) live; ``manifest_dir`` (default ``cache``): where the
    trust-on-first-use ``<name>.sha256`` and ``<name>.manifest.json`` are kept. ``path`` (an extracted copy)
    wins over ``archive`` (a local archive), which wins over ``url`` (default: the catalogue URL).

    Raises :class:`LicenceNotAccepted` before anything is fetched when the licence needs acceptance and
    ``accept_license`` is false, :class:`~texad.data.download.ChecksumError` when the archive does not
    match, :class:`~texad.data.layout.LayoutError` when the data does not have the expected layout,
    :class:`~texad.data.download.DownloadError` when there is no source or the download fails, and
    FileNotFoundError for a missing ``path``/``archive``. On any error no marker exists afterwards.
    """
    ds = catalog.get_dataset(name)
    chosen = _resolve_classes(ds, classes)
    root, cache, marker = Path(root), Path(cache), Path(marker)
    manifest_dir = Path(manifest_dir) if manifest_dir is not None else cache
    # A marker from an earlier run no longer vouches for anything once this run starts.
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()

    _licence_gate(ds, accept_license)

    base = {
        "dataset": name,
        "title": ds.title,
        "classes": chosen,
        "licence": ds.licence,
        "licence_needs_acceptance": ds.licence_needs_acceptance,
        "licence_accepted": bool(accept_license),
        "citation": ds.citation,
        "texad_version": _version(),
    }

    # ---- 1. an extracted copy supplied by the user
    if path is not None:
        data_dir = Path(path).expanduser()
        if not data_dir.exists():
            raise FileNotFoundError(
                f"datasets.{name}.path is {data_dir}, which does not exist: fix datasets.{name}.path in the "
                f"config, or set it to null to let texad fetch {ds.title}."
            )
        if not data_dir.is_dir():
            raise NotADirectoryError(f"datasets.{name}.path is {data_dir}, which is not a folder")
        wanted = ["images"] if ds.layout == "dtd" else chosen
        if not all((data_dir / w).is_dir() for w in wanted):
            inner = _find_data_dir(data_dir, ds, chosen)
            hint = (
                f"Set datasets.{name}.path to {inner}."
                if inner is not None
                else f"Point datasets.{name}.path at the folder holding "
                + ("images/." if ds.layout == "dtd" else "the class folders.")
            )
            raise _missing_classes_error(f"datasets.{name}.path ({data_dir})", data_dir, ds, chosen, hint)
        _say(name, f"checking the extracted copy in {data_dir}")
        reports, new_entries = _check_layout(ds, data_dir, chosen, manifest_dir)
        _record_manifest(ds, manifest_dir, new_entries)
        payload = {
            **base,
            "source": "path",
            "url": None,
            "archive": None,
            "digests": None,
            "checksum": None,
            "root": str(data_dir),
            "layout": reports,
            "archive_kept": None,
            "timestamp": _now(),
        }
        write_marker(marker, payload)
        _say(name, f"ready in {data_dir}")
        return payload

    # ---- 2. the archive: a local file, or downloaded into the cache
    if archive is not None:
        archive_path = Path(archive).expanduser()
        if not archive_path.is_file():
            raise FileNotFoundError(
                f"datasets.{name}.archive is {archive_path}, which is not a file: fix datasets.{name}.archive "
                "in the config (the archive you downloaded by hand), or set it to null."
            )
        source, src_url = "archive", None
    else:
        src_url = url or ds.url
        if not src_url:
            raise DownloadError(
                f"{ds.title} has no direct download URL: download the archive by hand and set "
                f"datasets.{name}.archive to its path, or extract it and set datasets.{name}.path to the folder "
                f"holding the class folders (or give a direct URL in datasets.{name}.url)."
            )
        archive_path = cache / _archive_name(ds, src_url)
        source = "url"

    # ---- a previous verified extraction whose archive was deleted (keep_archive: false)
    if source == "url" and not archive_path.exists():
        prov = _read_provenance(root)
        if prov and Path(str(prov.get("archive_name") or "")).name == archive_path.name:
            trusted = _provenance_trusted(ds, prov, manifest_dir)
            if trusted is not None:
                _say(name, f"re-checking the previous extraction in {root} (its archive was deleted)")
                reused = _reusable(ds, root, chosen, manifest_dir, trusted.get("sha256"))
                if reused is not None:
                    reports, new_entries = reused
                    _record_manifest(ds, manifest_dir, new_entries)
                    return _finish(
                        marker,
                        base,
                        source,
                        src_url,
                        archive_path,
                        trusted,
                        "provenance",
                        root,
                        reports,
                        False,
                    )

    if source == "url":
        if archive_path.exists():
            _say(name, f"using the archive already in the cache: {archive_path}")
        else:
            _say(name, f"downloading {src_url} -> {archive_path}")
            cache.mkdir(parents=True, exist_ok=True)
            download(src_url, archive_path, progress=progress)

    # ---- 3. verify, every time
    _say(name, f"verifying {archive_path}")
    digests, how = _verify_archive(ds, archive_path, manifest_dir)
    _say(name, f"sha256 {digests['sha256']} ({how})")

    # ---- 4./5. extract (or re-check a previous extraction of this archive) and check the layout
    reused = _reusable(ds, root, chosen, manifest_dir, digests["sha256"])
    if reused is not None:
        _say(name, f"{root} already holds a verified extraction of this archive; re-checked it")
        reports, new_entries = reused
    else:
        _say(name, f"extracting {archive_path} into {root}")
        reports, new_entries = _install(ds, archive_path, root, chosen, manifest_dir, digests)

    _record_tofu(ds, archive_path, digests, manifest_dir)
    _record_manifest(ds, manifest_dir, new_entries)

    # ---- 6. the archive goes only after every check passed, and only texad's own download
    kept = True
    if source == "url" and not keep_archive:
        _say(name, f"deleting {archive_path} (keep_archive: false)")
        with contextlib.suppress(FileNotFoundError):
            archive_path.unlink()
        kept = False
    return _finish(marker, base, source, src_url, archive_path, digests, how, root, reports, kept)


def _finish(
    marker: Path,
    base: dict,
    source: str,
    src_url: str | None,
    archive_path: Path,
    digests: dict,
    how: str,
    root: Path,
    reports: dict,
    kept: bool,
) -> dict:
    payload = {
        **base,
        "source": source,
        "url": src_url,
        "archive": str(archive_path),
        "digests": {k: digests[k] for k in ("sha256", "md5") if digests.get(k)},
        "checksum": how,
        "root": str(root),
        "layout": reports,
        "archive_kept": kept,
        "timestamp": _now(),
    }
    write_marker(marker, payload)
    _say(base["dataset"], f"ready in {root}")
    return payload
