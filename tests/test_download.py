"""Tests for texad.data.download: HTTP download with resume/retry, checksums, safe extraction, markers.

Everything runs offline: archives are built in tmp_path and served by a local threaded HTTP server on
127.0.0.1 (ephemeral port) that supports Range requests, records what it saw and can misbehave on
demand (cut the body short, ignore Range, answer 416 / 503 / a wrong 206).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from texad.data import download as dl
from texad.data.download import (
    ChecksumError,
    DownloadError,
    MarkerError,
    UnsafeArchiveError,
    download,
    file_digest,
    read_marker,
    safe_extract,
    verify_checksum,
    write_marker,
)

FAST = {"backoff_s": 0.001, "timeout_s": 5.0, "chunk_size": 8192}


# -------------------------------------------------------------------------------- archive helpers
def _tree() -> dict[str, bytes]:
    """A small MVTec-like tree; the images are incompressible so archives have a useful size."""
    rnd = random.Random(1234)

    def blob(n: int) -> bytes:
        return rnd.randbytes(n)

    return {
        "carpet/train/good/000.png": blob(60_000),
        "carpet/train/good/001.png": blob(50_000),
        "carpet/test/good/000.png": blob(40_000),
        "carpet/test/color/000.png": blob(30_000),
        "carpet/ground_truth/color/000_mask.png": blob(5_000),
        "carpet/license.txt": b"CC BY-NC-SA 4.0\n",
    }


def _make_tar(path: Path, files: dict[str, bytes], mode: str) -> Path:
    with tarfile.open(path, mode) as tf:
        dirs = sorted({str(Path(n).parent) for n in files} - {"."})
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tf.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return path


def _make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _evil_tar(path: Path, *members: tarfile.TarInfo, payload: bytes = b"pwned\n") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        good = tarfile.TarInfo("carpet/ok.txt")
        good.size = 3
        tf.addfile(good, io.BytesIO(b"ok\n"))
        for ti in members:
            if ti.isfile():
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
            else:
                tf.addfile(ti)
    return path


def _member(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.linkname = linkname
    ti.mode = 0o644
    return ti


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _fetch_verify_extract(url, archive, target, marker, *, sha256=None, md5=None):
    """What the orchestration does: download -> verify -> extract -> marker."""
    download(url, archive, **FAST)
    digests = verify_checksum(archive, sha256=sha256, md5=md5)
    safe_extract(archive, target)
    write_marker(marker, {"archive": archive, **digests})
    return digests


@pytest.fixture
def tree():
    return _tree()


# ---------------------------------------------------------------------------- 1. the happy path
@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "zip"])
def test_good_archive_download_verify_extract(tmp_path, server, tree, kind):
    src = tmp_path / "src"
    src.mkdir()
    if kind == "zip":
        arc = _make_zip(src / "mvtec.zip", tree)
    else:
        arc = _make_tar(src / f"mvtec.{kind}", tree, "w:" + kind.split(".")[1])
    data = arc.read_bytes()
    url = server.add(arc.name, data)

    dest = tmp_path / "res" / arc.name
    target = tmp_path / "res" / "mvtec"
    marker = tmp_path / "res" / "mvtec.done.json"
    digests = _fetch_verify_extract(url, dest, target, marker, sha256=_sha256(data), md5=_md5(data))

    assert digests == {"sha256": _sha256(data), "md5": _md5(data)}
    assert dest.read_bytes() == data
    assert not dest.with_name(dest.name + ".part").exists()
    for name, content in tree.items():
        assert (target / name).read_bytes() == content
    assert read_marker(marker)["sha256"] == _sha256(data)
    assert read_marker(marker)["archive"] == str(dest)
    assert [p.name for p in target.parent.iterdir() if ".extracting" in p.name] == []
    assert len(server.state.gets()) == 1
    assert "Mozilla" in server.state.gets()[0]["user_agent"]

    n = len(server.state.requests)
    assert download(url, dest, **FAST) == dest  # already there: no network access
    assert len(server.state.requests) == n


def test_existing_dest_needs_no_network(tmp_path):
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"already here")
    # Port 9 on 127.0.0.1 is almost surely closed; it is never contacted anyway.
    assert download("http://127.0.0.1:9/a.tar.gz", dest, retries=0, timeout_s=0.5) == dest


def test_file_digest_and_case_insensitive_verify(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"hello world")
    assert file_digest(p) == _sha256(b"hello world")
    assert file_digest(p, "md5") == _md5(b"hello world")
    got = verify_checksum(p, sha256=_sha256(b"hello world").upper())
    assert got == {"sha256": _sha256(b"hello world"), "md5": _md5(b"hello world")}
    assert verify_checksum(p, md5=" " + _md5(b"hello world").upper() + "\n")["md5"] == _md5(b"hello world")
    with pytest.raises(ValueError, match="at least one"):
        verify_checksum(p)
    with pytest.raises(ValueError, match="hex digest"):
        verify_checksum(p, sha256="not-a-digest")


def test_file_url_and_progress_bar(tmp_path, capsys):
    src = tmp_path / "local.tar.gz"
    src.write_bytes(b"x" * 10_000)
    dest = tmp_path / "out" / "copy.tar.gz"
    assert download(src.as_uri(), dest, progress=True, chunk_size=1000) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert "copy.tar.gz" in capsys.readouterr().err  # tqdm bar went to stderr
    with pytest.raises(DownloadError, match="does not exist"):
        download((tmp_path / "missing.tar.gz").as_uri(), tmp_path / "m.tar.gz")


def test_only_http_https_file_urls(tmp_path):
    with pytest.raises(DownloadError, match="only http, https, file"):
        download("ftp://example.org/a.tar.gz", tmp_path / "a.tar.gz")
    assert not (tmp_path / "a.tar.gz").exists()


def test_progress_bar_for_http(tmp_path, server, capsys):
    url = server.add("p.bin", os.urandom(50_000))
    download(url, tmp_path / "p.bin", progress=True, **FAST)
    err = capsys.readouterr().err
    assert "p.bin" in err and "B" in err


# ------------------------------------------------------------------------------ 2. bad checksum
@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_wrong_checksum_keeps_file_and_stops(tmp_path, server, tree, algo):
    arc = _make_tar(tmp_path / "mvtec.tar.gz", tree, "w:gz")
    data = arc.read_bytes()
    url = server.add("mvtec.tar.gz", data)
    dest = tmp_path / "res" / "mvtec.tar.gz"
    target = tmp_path / "res" / "mvtec"
    marker = tmp_path / "res" / "done.json"
    wrong = "0" * (64 if algo == "sha256" else 32)
    actual = _sha256(data) if algo == "sha256" else _md5(data)

    with pytest.raises(ChecksumError) as ei:
        _fetch_verify_extract(url, dest, target, marker, **{algo: wrong})
    msg = str(ei.value)
    assert str(dest) in msg and algo in msg and wrong in msg and actual in msg
    assert "delete it and run again" in msg
    assert ei.value.expected == wrong and ei.value.actual == actual
    assert isinstance(ei.value, DownloadError)
    assert dest.read_bytes() == data  # nothing is lost
    assert not marker.exists()
    assert not target.exists()


# ---------------------------------------------------------------------- 3. interrupted transfer
def test_interrupted_transfer_resumes_on_next_call(tmp_path, server, tree):
    data = _make_tar(tmp_path / "m.tar.xz", tree, "w:xz").read_bytes()
    assert len(data) > 100_000
    url = server.add("m.tar.xz", data)
    server.state.cut_after, server.state.cut_count = 40_000, 1
    dest = tmp_path / "res" / "m.tar.xz"
    part = dest.with_name(dest.name + ".part")

    with pytest.raises(DownloadError) as ei:
        download(url, dest, retries=0, **FAST)
    assert url in str(ei.value)
    assert "resumes" in str(ei.value) and str(part) in str(ei.value)
    assert not dest.exists()
    assert part.stat().st_size == 40_000

    download(url, dest, retries=0, **FAST)
    gets = server.state.gets()
    assert [g["range"] for g in gets] == [None, "bytes=40000-"]
    assert not part.exists()
    assert file_digest(dest) == _sha256(data)
    verify_checksum(dest, sha256=_sha256(data))


def test_interrupted_transfer_recovers_within_one_call(tmp_path, server):
    data = os.urandom(120_000)
    url = server.add("big.bin", data)
    server.state.cut_after, server.state.cut_count = 30_000, 2  # the first two responses are cut
    dest = tmp_path / "big.bin"
    download(url, dest, retries=3, **FAST)
    assert [g["range"] for g in server.state.gets()] == [None, "bytes=30000-", "bytes=60000-"]
    assert dest.read_bytes() == data


def test_retries_exhausted_names_url(tmp_path, server):
    data = os.urandom(50_000)
    url = server.add("x.bin", data)
    server.state.cut_after, server.state.cut_count = 10_000, 10
    with pytest.raises(DownloadError, match=re.escape(url)) as ei:
        download(url, tmp_path / "x.bin", retries=2, **FAST)
    assert "3 attempt" in str(ei.value)
    assert len(server.state.gets()) == 3
    assert (tmp_path / "x.bin.part").stat().st_size == 30_000


def test_server_error_is_retried(tmp_path, server):
    data = os.urandom(20_000)
    url = server.add("y.bin", data)
    server.state.fail_status, server.state.fail_count = 503, 2
    download(url, tmp_path / "y.bin", retries=2, **FAST)
    assert (tmp_path / "y.bin").read_bytes() == data

    server.state.fail_count = 5
    with pytest.raises(DownloadError, match="HTTP 503") as ei:
        download(url, tmp_path / "z.bin", retries=1, **FAST)
    assert ei.value.status == 503


def test_read_timeout_is_retried_with_resume(tmp_path, server):
    data = os.urandom(64_000)
    url = server.add("s.bin", data)
    server.state.stall_s, server.state.stall_count = 1.0, 1
    dest = tmp_path / "s.bin"
    download(url, dest, retries=1, backoff_s=0.001, timeout_s=0.3, chunk_size=4096)
    assert dest.read_bytes() == data
    gets = server.state.gets()
    assert len(gets) == 2
    # Resumed from what had reached the part file (bytes still in a half-filled read buffer are lost).
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1]["range"]).group(1))
    assert 0 < resumed_at <= 32_000


def test_connection_refused_is_retried_then_fails(tmp_path):
    import socket

    with socket.socket() as s:  # find a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.tar.gz"
    with pytest.raises(DownloadError, match="after 2 attempt") as ei:
        download(url, tmp_path / "a.tar.gz", retries=1, backoff_s=0.001, timeout_s=2)
    assert url in str(ei.value)


# ------------------------------------------------------------------ 4. servers and Range requests
def test_server_ignoring_range_restarts_cleanly(tmp_path, server):
    data = os.urandom(90_000)
    url = server.add("r.bin", data)
    server.state.ignore_range = True
    server.state.cut_after, server.state.cut_count = 25_000, 1
    dest = tmp_path / "r.bin"
    download(url, dest, retries=2, **FAST)
    assert [g["range"] for g in server.state.gets()] == [None, "bytes=25000-"]
    assert dest.read_bytes() == data  # no duplicated bytes


def test_complete_part_gets_416_and_is_accepted(tmp_path, server):
    data = os.urandom(30_000)
    url = server.add("c.bin", data)
    dest = tmp_path / "c.bin"
    dest.with_name("c.bin.part").write_bytes(data)
    download(url, dest, retries=0, **FAST)
    assert dest.read_bytes() == data
    assert [g["range"] for g in server.state.gets()] == ["bytes=30000-"]


def test_416_without_content_range_uses_head(tmp_path, server):
    data = os.urandom(30_000)
    url = server.add("h.bin", data)
    server.state.omit_416_content_range = True
    dest = tmp_path / "h.bin"
    dest.with_name("h.bin.part").write_bytes(data)
    download(url, dest, retries=0, **FAST)
    assert dest.read_bytes() == data
    assert [r["method"] for r in server.state.requests] == ["GET", "HEAD"]


def test_oversized_part_restarts_from_zero(tmp_path, server):
    data = os.urandom(30_000)
    url = server.add("o.bin", data)
    dest = tmp_path / "o.bin"
    dest.with_name("o.bin.part").write_bytes(os.urandom(40_000))  # a different, longer file
    download(url, dest, retries=0, **FAST)
    assert dest.read_bytes() == data
    assert [g["range"] for g in server.state.gets()] == ["bytes=40000-", None]


def test_wrong_206_range_restarts_from_zero(tmp_path, server):
    data = os.urandom(30_000)
    url = server.add("w.bin", data)
    server.state.bad_206 = True
    dest = tmp_path / "w.bin"
    dest.with_name("w.bin.part").write_bytes(data[:10_000])
    download(url, dest, retries=0, **FAST)
    assert dest.read_bytes() == data
    assert [g["range"] for g in server.state.gets()] == ["bytes=10000-", None]


def test_custom_headers_override_user_agent(tmp_path, server):
    url = server.add("u.bin", b"abc")
    download(url, tmp_path / "u.bin", headers={"user-agent": "texad-test/1"}, **FAST)
    assert server.state.gets()[0]["user_agent"] == "texad-test/1"


# -------------------------------------------------------------------------- 5. unsafe archives
def _assert_refused(tmp_path: Path, archive: Path, member_hint: str) -> None:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    target = out / "ds"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError) as ei:
        safe_extract(archive, target)
    assert str(archive) in str(ei.value)
    assert member_hint in str(ei.value)
    assert not target.exists()
    assert list(out.iterdir()) == []  # no temporary folder left behind, nothing written next to it
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere else either
    assert not Path("/tmp/texad-evil.txt").exists()


def test_refuses_dotdot_member(tmp_path):
    arc = _evil_tar(tmp_path / "a.tar.gz", _member("../evil.txt"))
    _assert_refused(tmp_path, arc, "../evil.txt")


def test_refuses_nested_dotdot_member(tmp_path):
    arc = _evil_tar(tmp_path / "a.tar.gz", _member("carpet/../../evil.txt"))
    _assert_refused(tmp_path, arc, "carpet/../../evil.txt")


def test_refuses_absolute_member(tmp_path):
    evil = tmp_path / "abs" / "evil.txt"
    arc = _evil_tar(tmp_path / "a.tar.gz", _member(str(evil)))
    _assert_refused(tmp_path, arc, str(evil))
    assert not evil.exists()


@pytest.mark.parametrize("linkname", ["../../outside", "/etc/passwd", "sub/../../../x"])
def test_refuses_symlink_outside(tmp_path, linkname):
    arc = _evil_tar(
        tmp_path / "a.tar.gz",
        _member("carpet/link", tarfile.SYMTYPE, linkname),
        _member("carpet/link/evil.txt"),
    )
    _assert_refused(tmp_path, arc, "carpet/link")


@pytest.mark.parametrize("linkname", ["../evil.txt", "/etc/passwd"])
def test_refuses_hardlink_outside(tmp_path, linkname):
    arc = _evil_tar(tmp_path / "a.tar.gz", _member("carpet/hard", tarfile.LNKTYPE, linkname))
    _assert_refused(tmp_path, arc, "carpet/hard")


@pytest.mark.parametrize("type_", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_refuses_devices_and_fifos(tmp_path, type_):
    arc = _evil_tar(tmp_path / "a.tar.gz", _member("carpet/dev", type_))
    _assert_refused(tmp_path, arc, "carpet/dev")


@pytest.mark.parametrize("name", ["../evil", "/tmp/texad-evil.txt", "carpet/../../evil", "..\\evil"])
def test_refuses_zip_traversal(tmp_path, name):
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("carpet/ok.txt", b"ok\n")
        zf.writestr(zipfile.ZipInfo(name), b"pwned\n")
    _assert_refused(tmp_path, arc, name.replace("\\", "\\\\"))


def test_safe_symlink_inside_is_allowed(tmp_path):
    arc = tmp_path / "a.tar"
    with tarfile.open(arc, "w") as tf:
        f = tarfile.TarInfo("carpet/real.txt")
        f.size = 2
        tf.addfile(f, io.BytesIO(b"hi"))
        tf.addfile(_member("carpet/alias.txt", tarfile.SYMTYPE, "real.txt"))
        tf.addfile(_member("carpet/hard.txt", tarfile.LNKTYPE, "carpet/real.txt"))
    target = safe_extract(arc, tmp_path / "out")
    assert (target / "carpet" / "alias.txt").is_symlink()
    assert (target / "carpet" / "alias.txt").read_bytes() == b"hi"
    assert (target / "carpet" / "hard.txt").read_bytes() == b"hi"


def test_data_filter_is_second_line_of_defence(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "_check_tar_members", lambda *a, **k: None)  # disable our own checks
    arc = _evil_tar(tmp_path / "a.tar.gz", _member("../evil.txt"))
    _assert_refused(tmp_path, arc, "evil.txt")


# ------------------------------------------------------------------------------ extraction misc
@pytest.mark.parametrize(
    "mode,name", [("w", "t.tar"), ("w:bz2", "t.tar.bz2"), ("w:gz", "t.tgz"), ("w:xz", "weird-name.bin")]
)
def test_extract_detects_format_by_content(tmp_path, tree, mode, name):
    arc = _make_tar(tmp_path / name, tree, mode)
    target = safe_extract(arc, tmp_path / "out" / "ds")
    assert target == tmp_path / "out" / "ds"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == sorted(tree)


def test_zip_with_unusual_suffix(tmp_path, tree):
    arc = _make_zip(tmp_path / "archive.download", tree)
    target = safe_extract(arc, tmp_path / "ds")
    assert (target / "carpet/license.txt").read_bytes() == tree["carpet/license.txt"]


def test_extract_refuses_existing_target(tmp_path, tree):
    arc = _make_zip(tmp_path / "a.zip", tree)
    target = tmp_path / "ds"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=re.escape(str(target))):
        safe_extract(arc, target)
    assert (target / "keep.txt").read_text() == "mine"


def test_not_an_archive(tmp_path):
    p = tmp_path / "page.tar.gz"
    p.write_text("<html>Please log in</html>")
    with pytest.raises(DownloadError, match="neither a tar"):
        safe_extract(p, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_truncated_archive_leaves_no_half_target(tmp_path, tree):
    full = _make_tar(tmp_path / "full.tar.gz", tree, "w:gz").read_bytes()
    arc = tmp_path / "cut.tar.gz"
    arc.write_bytes(full[: len(full) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        safe_extract(arc, out / "ds")
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------------- 6. HTTP 404
def test_404_names_url_and_status(tmp_path, server):
    url = server.url("nope.tar.xz")
    with pytest.raises(DownloadError) as ei:
        download(url, tmp_path / "nope.tar.xz", retries=3, **FAST)
    msg = str(ei.value)
    assert url in msg and "404" in msg and "datasets.<name>.archive" in msg
    assert ei.value.status == 404 and ei.value.url == url
    assert len(server.state.gets()) == 1  # not retried
    assert not (tmp_path / "nope.tar.xz").exists()
    assert not (tmp_path / "nope.tar.xz.part").exists()


def test_403_is_not_retried(tmp_path, server):
    url = server.add("f.bin", b"x")
    server.state.fail_status, server.state.fail_count = 403, 1
    with pytest.raises(DownloadError, match="HTTP 403") as ei:
        download(url, tmp_path / "f.bin", retries=3, **FAST)
    assert "by hand" in str(ei.value)
    assert len(server.state.gets()) == 1


# ------------------------------------------------------------------------------------ 7. markers
def test_marker_round_trip(tmp_path):
    m = tmp_path / "sub" / "done.json"
    assert read_marker(m) is None
    payload = {"dataset": "mvtec", "sha256": "ab" * 32, "files": 3, "archive": tmp_path / "a.tar.xz"}
    write_marker(m, payload)
    assert read_marker(m) == {**payload, "archive": str(tmp_path / "a.tar.xz")}
    write_marker(m, {"v": 2})  # overwrite atomically
    assert read_marker(m) == {"v": 2}
    assert [p.name for p in m.parent.iterdir()] == ["done.json"]  # no temp files left
    with pytest.raises(TypeError):
        write_marker(m, {"bad": object()})
    assert read_marker(m) == {"v": 2}  # a failed write does not clobber the marker


@pytest.mark.parametrize("content", [b'{"half": ', b"", b"\xff\xfe garbage", b"[1, 2]"])
def test_corrupt_marker_message(tmp_path, content):
    m = tmp_path / "done.json"
    m.write_bytes(content)
    with pytest.raises(MarkerError) as ei:
        read_marker(m)
    assert str(m) in str(ei.value) and "delete it" in str(ei.value)
