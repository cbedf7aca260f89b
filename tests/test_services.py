"""No silent skips in CI: ``services.require`` fails under ``CI=true`` and skips elsewhere, and no test skips any
other way, except the CUDA tests (CI has no GPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from services import in_ci, require, require_module

TESTS = Path(__file__).resolve().parent
#: what skips a test: pytest.skip(...), pytest.importorskip(...), @pytest.mark.skip / skipif, a skip from unittest
SKIP = re.compile(r"\bpytest\.skip\(|\bimportorskip\(|\bmark\.skip(if)?\b|\bunittest\.skip|\bSkipTest\b")
CUDA_ONLY = 'skipif(not torch.cuda.is_available(), reason="needs a CUDA device")'


def _outcome(call, *args) -> BaseException:
    """The outcome exception that ``call(*args)`` raised: a skip is caught too (pytest.raises(Failed) would let it
    through and so skip this very test)."""
    try:
        call(*args)
    except (pytest.fail.Exception, pytest.skip.Exception) as exc:
        return exc
    raise AssertionError(f"{call.__name__}{args} neither failed nor skipped")


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_require_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert in_ci()
    out = _outcome(require, "no cluster here")
    assert isinstance(out, pytest.fail.Exception), repr(out)
    assert re.fullmatch(r"no cluster here \(CI=true: .* it does not skip\)", out.msg), out.msg
    out = _outcome(require_module, "texad_no_such_module")
    assert isinstance(out, pytest.fail.Exception) and "import texad_no_such_module" in out.msg, repr(out)


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_require_skips_outside_ci(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    out = _outcome(require, "no cluster here")
    assert isinstance(out, pytest.skip.Exception) and out.msg == "no cluster here", repr(out)
    out = _outcome(require_module, "texad_no_such_module")
    assert isinstance(out, pytest.skip.Exception) and "import texad_no_such_module" in out.msg, repr(out)
    assert require_module("json").dumps([1]) == "[1]"  # an importable module is returned


def test_no_test_skips_but_through_require_or_for_cuda():
    """Every way to skip in tests/ goes through ``services.require``; the one exception is the CUDA marker."""
    found = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in ("services.py", Path(__file__).name):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if SKIP.search(line.replace("# fmt: skip", "")) and CUDA_ONLY not in line:
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "tests that skip without services.require:\n" + "\n".join(found)
    # the allowed pattern still names the CUDA tests' marker (else it would excuse nothing)
    assert CUDA_ONLY in (TESTS / "test_accel.py").read_text()
