"""Download, verify and safely extract dataset archives.

Generic primitives used by the dataset-fetching rules of the workflow:

* :func:`download` streams a URL into ``dest`` through a sibling ``dest.part`` file, resumes an
  interrupted transfer with an HTTP ``Range`` request, retries with exponential back-off and only
  renames the part to ``dest`` (atomically) once the transfer is complete.
* :func:`file_digest` / :func:`verify_checksum` hash a file in 1 MiB chunks.
* :func:`safe_extract` checks every member of a tar/zip archive before extracting anything, extracts
  into a temporary sibling folder and renames it into place, so a killed extraction never leaves a
  half-written target.
* :func:`write_marker` / :func:`read_marker` manage an atomic JSON completion marker.

Only the standard library (plus :mod:`tqdm` for the progress bar) is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import ssl
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from texad.atomic import atomic_write_text, fsync_dir

__all__ = [
    "DEFAULT_USER_AGENT",
    "ChecksumError",
    "DownloadError",
    "MarkerError",
    "UnsafeArchiveError",
    "download",
    "file_digest",
    "read_marker",
    "safe_extract",
    "verify_checksum",
    "write_marker",
]

log = logging.getLogger(__name__)

#: Sent with every request: some dataset hosts refuse clients that look like scripts.
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
)

_HASH_CHUNK = 1 << 20
_ALLOWED_SCHEMES = ("http", "https", "file")
_MANUAL_HINT = (
    "If the host keeps refusing, download the archive by hand (e.g. in a browser), "
    "and set datasets.<name>.archive in the config to its path (or place it at {dest})."
)
# HTTP statuses worth retrying: the server or a proxy may recover.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# A part file is restarted from zero at most this many times per call (guards against loops).
_MAX_RESTARTS = 3


# --------------------------------------------------------------------------------------- errors
class DownloadError(RuntimeError):
    """A download, verification or extraction step failed; the message says what to do.

    ``url`` and ``status`` (the HTTP status, when there was one) are kept as attributes.
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class ChecksumError(DownloadError):
    """The file's digest differs from the expected one. The file is left on disk."""

    def __init__(self, message: str, *, path: Path, algorithm: str, expected: str, actual: str):
        super().__init__(message)
        self.path = path
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(DownloadError):
    """The archive has a member that would escape the extraction root (or is a device/FIFO)."""

    def __init__(self, message: str, *, archive: Path | None = None, member: str | None = None):
        super().__init__(message)
        self.archive = archive
        self.member = member


class MarkerError(DownloadError):
    """A completion marker exists but cannot be read as a JSON object."""


# ------------------------------------------------------------------------------------- download
class _Retryable(Exception):
    """Internal: a transient failure; the attempt may be retried (resuming from the part file)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Restart(Exception):
    """Internal: the part file cannot be resumed; delete it and request the whole file."""


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _hint(dest: Path) -> str:
    return _MANUAL_HINT.format(dest=dest)


def _content_length(resp: Any) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if n >= 0 else None


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.IGNORECASE)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None] | None:
    """Parse ``bytes a-b/total`` or ``bytes */total``; return (start, end, total) or None."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    start = int(m.group(1)) if m.group(1) is not None else None
    end = int(m.group(2)) if m.group(2) is not None else None
    total = int(m.group(3)) if m.group(3) not in (None, "*") else None
    return start, end, total


def _request(url: str, headers: dict[str, str], method: str = "GET") -> urllib.request.Request:
    return urllib.request.Request(url, headers=headers, method=method)


def _remote_size(url: str, headers: dict[str, str], timeout_s: float) -> int | None:
    """Total size announced by a HEAD request, or None when unknown/unavailable."""
    head_headers = {k: v for k, v in headers.items() if k.lower() != "range"}
    try:
        with urllib.request.urlopen(_request(url, head_headers, "HEAD"), timeout=timeout_s) as resp:
            return _content_length(resp)
    except (OSError, http.client.HTTPException, ValueError):
        return None


def _fatal_http(url: str, dest: Path, err: urllib.error.HTTPError) -> DownloadError:
    code = err.code
    reason = err.reason or http.client.responses.get(code, "")
    if code == 404:
        what = "the file is not there (the URL is wrong or the release moved): check the URL."
    elif code in (401, 403):
        what = "the server refused access (it may need a login, a licence click-through or a browser)."
    else:
        what = "the server rejected the request."
    msg = f"Download of {url} failed: HTTP {code} {reason}; {what} {_hint(dest)}"
    return DownloadError(msg, url=url, status=code)


def _check_url(url: str) -> urllib.parse.ParseResult:
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        raise DownloadError(
            f"Cannot download {url!r}: only {', '.join(_ALLOWED_SCHEMES)} URLs are supported "
            f"(got scheme {parsed.scheme!r}). Fix the URL in the config, or download the file by hand "
            "and set datasets.<name>.archive.",
            url=url,
        )
    if scheme in ("http", "https") and not parsed.netloc:
        raise DownloadError(
            f"Cannot download {url!r}: the URL has no host. Fix the URL in the config.", url=url
        )
    return parsed


def _progress_bar(total: int | None, initial: int, desc: str, progress: bool | None) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        miniters=1,
        mininterval=0.5,
        file=sys.stderr,
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )


def _fsync_replace(part: Path, dest: Path) -> None:
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    fsync_dir(dest.parent)


def _copy_local(
    url: str, parsed: urllib.parse.ParseResult, dest: Path, chunk_size: int, progress: bool | None
) -> Path:
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"Cannot download {url!r}: file URLs must point to this machine.", url=url)
    src = Path(urllib.request.url2pathname(parsed.path))
    if not src.is_file():
        raise DownloadError(
            f"Download of {url} failed: {src} does not exist or is not a file. Check the path, "
            f"or set datasets.<name>.archive to the archive's location.",
            url=url,
        )
    part = _part_path(dest)
    try:
        with (
            open(src, "rb") as fin,
            open(part, "wb") as fout,
            _progress_bar(src.stat().st_size, 0, dest.name, progress) as bar,
        ):
            while chunk := fin.read(chunk_size):
                fout.write(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        raise DownloadError(f"Copying {src} to {dest} failed: {exc}", url=url) from exc
    _fsync_replace(part, dest)
    return dest


def _attempt(
    url: str,
    dest: Path,
    part: Path,
    base_headers: dict[str, str],
    *,
    timeout_s: float,
    chunk_size: int,
    progress: bool | None,
) -> None:
    """One transfer attempt; returns once ``part`` holds the complete file.

    Raises _Retryable for transient failures (the part file is kept for resuming), DownloadError for
    fatal ones.
    """
    restarts = 0
    use_range = True
    while True:
        try:
            _transfer_once(
                url,
                dest,
                part,
                base_headers,
                use_range=use_range,
                timeout_s=timeout_s,
                chunk_size=chunk_size,
                progress=progress,
            )
            return
        except _Restart as why:
            restarts += 1
            log.info("Restarting %s from zero: %s", url, why)
            part.unlink(missing_ok=True)
            use_range = False
            if restarts > _MAX_RESTARTS:
                raise DownloadError(
                    f"Download of {url} failed: the server keeps sending inconsistent ranges ({why}). "
                    f"{_hint(dest)}",
                    url=url,
                ) from None


def _transfer_once(
    url: str,
    dest: Path,
    part: Path,
    base_headers: dict[str, str],
    *,
    use_range: bool,
    timeout_s: float,
    chunk_size: int,
    progress: bool | None,
) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = dict(base_headers)
    if use_range and offset > 0:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(_request(url, headers), timeout=timeout_s)
    except urllib.error.HTTPError as err:
        with contextlib.closing(err):
            if err.code == 416 and "Range" in headers:
                cr = _parse_content_range(err.headers.get("Content-Range") if err.headers else None)
                total = cr[2] if cr else None
                if total is None:
                    total = _remote_size(url, base_headers, timeout_s)
                if total is not None and total == offset:
                    log.info("%s: the part file is already complete (%d bytes)", url, offset)
                    return
                raise _Restart(f"HTTP 416 for a part of {offset} bytes (remote size {total})") from None
            if err.code in _RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {err.code} {err.reason}", status=err.code) from err
            raise _fatal_http(url, dest, err) from None

    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        length = _content_length(resp)
        if status == 206 and "Range" in headers:
            cr = _parse_content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] is None:
                raise _Restart(
                    f"HTTP 206 without a usable Content-Range ({resp.headers.get('Content-Range')!r})"
                )
            start, _end, total = cr
            if start != offset:
                raise _Restart(f"asked for bytes from {offset}, the server sent bytes from {start}")
            expected = total if total is not None else (offset + length if length is not None else None)
            mode = "ab"
        elif status == 200 or status is None:
            if offset and "Range" in headers:
                log.info("%s: the server ignored the Range request; downloading from zero", url)
            offset = 0
            expected = length
            mode = "wb"
        else:
            raise _Retryable(f"unexpected HTTP status {status}", status=status)

        written = offset
        with open(part, mode) as fh, _progress_bar(expected, offset, dest.name, progress) as bar:
            while True:
                chunk = resp.read(chunk_size)
                if not chunk:
                    break
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
            fh.flush()

    if expected is not None and written != expected:
        if written > expected:
            raise _Restart(f"received {written} bytes, more than the announced {expected}")
        raise _Retryable(f"connection closed after {written} of {expected} bytes")


def download(
    url: str,
    dest: Path,
    *,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: bool | None = None,
    headers: dict | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    If ``dest`` exists it is returned at once (no network access). Otherwise the body is streamed into
    ``dest.part`` and renamed to ``dest`` with :func:`os.replace` once it is complete (Content-Length
    matched when the server announced one). An existing ``dest.part`` is resumed with a
    ``Range: bytes=N-`` request; a server that ignores the range (HTTP 200) makes it restart from zero,
    and HTTP 416 is resolved by comparing the part's size with the remote size.

    Connection errors, timeouts, truncated bodies and HTTP 408/429/5xx are retried up to ``retries``
    times, sleeping ``backoff_s * 2**k`` seconds before retry ``k`` and resuming each time. Other HTTP
    errors (404, 403, ...) fail at once. Every failure raises :class:`DownloadError` naming the URL, the
    HTTP status if any, and what to do; a partial ``.part`` is kept so the next call resumes.

    ``progress``: ``None`` shows a tqdm bar on stderr only when it is a terminal; True/False force it.
    ``headers`` are added to (and may override) the default browser-like User-Agent.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    parsed = _check_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)

    if parsed.scheme.lower() == "file":
        return _copy_local(url, parsed, dest, chunk_size, progress)

    base_headers = {"User-Agent": DEFAULT_USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
    for key, value in (headers or {}).items():
        # Replace case-insensitively so a caller's "user-agent" overrides ours.
        for existing in [k for k in base_headers if k.lower() == str(key).lower()]:
            del base_headers[existing]
        base_headers[str(key)] = str(value)

    part = _part_path(dest)
    last: BaseException | None = None
    last_status: int | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * (2 ** (attempt - 1))
            log.warning(
                "Download of %s failed (%s); retry %d/%d in %.1f s", url, last, attempt, retries, delay
            )
            if delay > 0:
                time.sleep(delay)
        try:
            _attempt(
                url, dest, part, base_headers, timeout_s=timeout_s, chunk_size=chunk_size, progress=progress
            )
        except _Retryable as exc:
            last, last_status = exc, exc.status
            continue
        except urllib.error.HTTPError as exc:  # pragma: no cover - HTTPError is handled in _transfer_once
            raise _fatal_http(url, dest, exc) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise DownloadError(
                    f"Download of {url} failed: TLS certificate verification failed ({exc.reason}). "
                    f"Check the system's CA certificates or the URL. {_hint(dest)}",
                    url=url,
                ) from exc
            last, last_status = exc, None
            continue
        except (OSError, http.client.HTTPException) as exc:  # resets, timeouts, IncompleteRead, ...
            last, last_status = exc, None
            continue
        _fsync_replace(part, dest)
        return dest

    status_txt = f"HTTP {last_status}" if last_status is not None else "no HTTP status"
    kept = (
        f" The {part.stat().st_size} bytes received so far are kept in {part}; running again resumes."
        if part.exists() and part.stat().st_size
        else ""
    )
    raise DownloadError(
        f"Download of {url} failed after {retries + 1} attempt(s) ({status_txt}): {last}.{kept} "
        f"Check the network connection. {_hint(dest)}",
        url=url,
        status=last_status,
    ) from last


# ------------------------------------------------------------------------------------ checksums
def _iter_chunks(path: Path, chunk_size: int = _HASH_CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def _new_hash(algorithm: str) -> Any:
    name = algorithm.lower()
    try:
        if name == "md5":
            return hashlib.new(name, usedforsecurity=False)  # integrity check, not security
        return hashlib.new(name)
    except ValueError as exc:
        raise ValueError(f"unknown hash algorithm {algorithm!r}") from exc


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest (lower case) of the file at ``path``, read in 1 MiB chunks."""
    h = _new_hash(algorithm)
    for chunk in _iter_chunks(Path(path)):
        h.update(chunk)
    return h.hexdigest()


_HEX_LEN = {"sha256": 64, "md5": 32}


def _normalise_expected(algorithm: str, value: str) -> str:
    v = str(value).strip().lower()
    if len(v) != _HEX_LEN[algorithm] or any(c not in "0123456789abcdef" for c in v):
        raise ValueError(
            f"expected {algorithm} {value!r} is not a {_HEX_LEN[algorithm]}-character hex digest; "
            "fix the checksum in the config"
        )
    return v


def verify_checksum(path: Path, *, sha256: str | None = None, md5: str | None = None) -> dict:
    """Check ``path`` against the expected digests (case-insensitive hex) in a single read.

    Returns ``{"sha256": ..., "md5": ...}``: both digests are always computed (one pass over the file)
    so that the caller can record them. Raises :class:`ChecksumError` on a mismatch without touching the
    file, and ``ValueError`` if neither digest is given.
    """
    if sha256 is None and md5 is None:
        raise ValueError("verify_checksum needs at least one of sha256= or md5=")
    path = Path(path)
    expected = {}
    if sha256 is not None:
        expected["sha256"] = _normalise_expected("sha256", sha256)
    if md5 is not None:
        expected["md5"] = _normalise_expected("md5", md5)
    if not path.is_file():
        raise FileNotFoundError(f"cannot verify {path}: no such file")

    hashes = {"sha256": _new_hash("sha256"), "md5": _new_hash("md5")}
    for chunk in _iter_chunks(path):
        for h in hashes.values():
            h.update(chunk)
    actual = {name: h.hexdigest() for name, h in hashes.items()}

    for algorithm, want in expected.items():
        got = actual[algorithm]
        if got != want:
            raise ChecksumError(
                f"Checksum mismatch for {path}: {algorithm} expected {want}, got {got}. "
                "The file is corrupt or a different release: delete it and run again, or check the URL "
                "(the file was left in place).",
                path=path,
                algorithm=algorithm,
                expected=want,
                actual=got,
            )
    return actual


# ----------------------------------------------------------------------------------- extraction
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:")


def _unsafe(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"Refusing to extract {archive}: member {member!r} {why}. Nothing was extracted; the archive is "
        "corrupt, tampered with or not the expected file: delete it and download it again.",
        archive=archive,
        member=member,
    )


def _inside(root: str, relpath: str) -> bool:
    """True if ``root/relpath`` (lexically normalised) stays within ``root``."""
    full = os.path.normpath(os.path.join(root, relpath))
    return full == root or full.startswith(root + os.sep)


def _check_name(archive: Path, name: str, root: str, *, backslash_is_sep: bool) -> None:
    if not name:
        raise _unsafe(archive, name, "has an empty name")
    if "\x00" in name:
        raise _unsafe(archive, name, "has a NUL byte in its name")
    candidates = [name, name.replace("\\", "/")] if backslash_is_sep else [name]
    for n in candidates:
        if n.startswith("/") or _WINDOWS_ABS.match(n) or os.path.isabs(n):
            raise _unsafe(archive, name, "has an absolute path")
        if ".." in n.split("/"):
            raise _unsafe(archive, name, "contains a '..' component")
        if not _inside(root, n):
            raise _unsafe(archive, name, "resolves outside the extraction root")


def _check_tar_members(archive: Path, members: list[tarfile.TarInfo], root: str) -> None:
    for m in members:
        _check_name(archive, m.name, root, backslash_is_sep=False)
        if m.ischr() or m.isblk():
            raise _unsafe(archive, m.name, "is a device file")
        if m.isfifo():
            raise _unsafe(archive, m.name, "is a FIFO")
        if m.issym():
            target = m.linkname
            if not target or target.startswith("/") or os.path.isabs(target):
                raise _unsafe(archive, m.name, f"is a symlink to an absolute path ({target!r})")
            # A symlink's target is relative to the directory holding the link.
            if not _inside(root, os.path.join(os.path.dirname(m.name), target)):
                raise _unsafe(
                    archive, m.name, f"is a symlink pointing outside the extraction root ({target!r})"
                )
        elif m.islnk():
            target = m.linkname
            if not target or target.startswith("/") or os.path.isabs(target):
                raise _unsafe(archive, m.name, f"is a hard link to an absolute path ({target!r})")
            # A hard link's target is relative to the archive root.
            if ".." in target.split("/") or not _inside(root, target):
                raise _unsafe(
                    archive, m.name, f"is a hard link pointing outside the extraction root ({target!r})"
                )
        elif not (m.isfile() or m.isdir()):
            raise _unsafe(archive, m.name, f"has an unsupported type ({m.type!r})")


def _check_zip_members(archive: Path, infos: list[zipfile.ZipInfo], root: str) -> None:
    for info in infos:
        _check_name(archive, info.filename, root, backslash_is_sep=True)
        mode = (info.external_attr >> 16) & 0xFFFF
        # zipfile writes symlinks as regular files, so only devices/FIFOs are refused here.
        if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            raise _unsafe(archive, info.filename, "is a device file")
        if mode and stat.S_ISFIFO(mode):
            raise _unsafe(archive, info.filename, "is a FIFO")


def _extract_tar(archive: Path, dest_dir: Path) -> None:
    root = os.path.realpath(dest_dir)
    with tarfile.open(archive, mode="r:*") as tf:
        tf.errorlevel = 1
        members = tf.getmembers()  # reads the whole index before anything is written
        _check_tar_members(archive, members, root)
        try:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest_dir, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tf.extractall(dest_dir, members=members)
        except tarfile.TarError as exc:
            if hasattr(tarfile, "FilterError") and isinstance(exc, tarfile.FilterError):
                member = getattr(getattr(exc, "tarinfo", None), "name", "?")
                raise _unsafe(archive, member, f"was rejected by tarfile's data filter ({exc})") from exc
            raise


def _extract_zip(archive: Path, dest_dir: Path) -> None:
    root = os.path.realpath(dest_dir)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_zip_members(archive, infos, root)
        for info in infos:
            zf.extract(info, dest_dir)


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a tar (plain/gz/xz/bz2) or zip ``archive`` into the new directory ``target``.

    The format is detected from the content. Every member is checked first; if any member is absolute,
    has a ``..`` component, resolves outside the target, is a device/FIFO, or is a link whose target
    resolves outside the extraction root, the whole archive is refused with
    :class:`UnsafeArchiveError`. tarfile's ``filter="data"`` is used as a second line of defence.

    Extraction happens in a temporary folder next to ``target`` which is renamed to ``target`` at the
    end, so ``target`` is either complete or absent. ``target`` must not exist (FileExistsError).
    Returns ``target``.
    """
    archive = Path(archive)
    target = Path(target)
    if target.exists() or target.is_symlink():
        raise FileExistsError(f"{target} already exists; delete it to extract {archive} again")
    if not archive.is_file():
        raise FileNotFoundError(f"cannot extract {archive}: no such file")

    if tarfile.is_tarfile(archive):
        extractor = _extract_tar
    elif zipfile.is_zipfile(archive):
        extractor = _extract_zip
    else:
        raise DownloadError(
            f"Cannot extract {archive}: it is neither a tar (.tar, .tar.gz, .tar.xz, .tar.bz2) nor a zip "
            "archive. It may be an HTML error page or a truncated download: delete it and run again."
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir (not mkdtemp) so the final folder gets the usual umask-based permissions.
    tmp = target.parent / f".{target.name}.extracting-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.mkdir(tmp)
    try:
        extractor(archive, tmp)
        if target.exists() or target.is_symlink():
            raise FileExistsError(f"{target} appeared during extraction of {archive}; not overwriting it")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    return target


# -------------------------------------------------------------------------------------- markers
def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"marker payload value {obj!r} of type {type(obj).__name__} is not JSON serialisable")


def write_marker(path: Path, payload: dict) -> None:
    """Atomically write ``payload`` as JSON to ``path`` (temp file in the same dir, fsync, replace)."""
    path = Path(path)
    if not isinstance(payload, dict):
        raise TypeError(f"marker payload must be a dict, got {type(payload).__name__}")
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write_text(path, text)


def read_marker(path: Path) -> dict | None:
    """Return the marker's JSON object, or None if the file does not exist.

    Raises :class:`MarkerError` (naming the file) when it is not valid JSON or not a JSON object.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MarkerError(
            f"Completion marker {path} is corrupt ({exc}); delete it and run again "
            "(the step it marks will be redone)."
        ) from exc
    if not isinstance(data, dict):
        raise MarkerError(
            f"Completion marker {path} holds a JSON {type(data).__name__}, not an object; "
            "delete it and run again (the step it marks will be redone)."
        )
    return data
