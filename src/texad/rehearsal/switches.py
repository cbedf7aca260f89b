"""The two switches that only the test suite and ``make rehearse`` set, through the environment.

No config key reaches them and the schema knows nothing of them: a user's run always checks the published class
counts and the published weight checksums. The paper-size rehearsal needs both relaxed, because it runs the
paper's networks on a small generated set in the MVTec layout and on randomly initialised torchvision weights
(the real ones cannot be downloaded offline, and the rehearsal tests code paths, not accuracy).

* ``TEXAD_TEST_WEIGHTS``: a JSON file ``{backbone: {"sha256": ..., "url": ...}}``. For a listed backbone the
  weight file must have that SHA-256 (instead of torchvision's) and ``stage_weights`` fetches it from that URL.
* ``TEXAD_TEST_LAYOUT``: ``first-run`` checks classes that have published counts (MVTec AD, DTD) like classes
  without them: against the layout recorded on the first successful run.

Every result records which switches were on (:func:`active`), so a rehearsal number cannot pass for a real one.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

__all__ = ["WEIGHTS_ENV", "LAYOUT_ENV", "active", "weight_override", "published_counts_checked"]

WEIGHTS_ENV = "TEXAD_TEST_WEIGHTS"
LAYOUT_ENV = "TEXAD_TEST_LAYOUT"


@cache
def _weights(path: str) -> dict:
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{WEIGHTS_ENV}={path}: not a readable JSON file ({exc})") from None
    if not isinstance(table, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in table.values()
    ):
        raise ValueError(f'{WEIGHTS_ENV}={path}: expected {{backbone: {{"sha256": ..., "url": ...}}}}')
    return table


def weight_override(name: str) -> dict | None:
    """``{"sha256", "url"}`` replacing torchvision's for ``name`` under the test switch, else None."""
    path = os.environ.get(WEIGHTS_ENV)
    return _weights(path).get(name) if path else None


def published_counts_checked() -> bool:
    """False under ``TEXAD_TEST_LAYOUT=first-run``: published class counts are then not compared."""
    value = os.environ.get(LAYOUT_ENV)
    if value not in (None, "", "first-run"):
        raise ValueError(f"{LAYOUT_ENV}={value!r}: the only value is 'first-run'")
    return value != "first-run"


def active() -> dict[str, str]:
    """The test switches that are on (empty in every user run)."""
    return {k: os.environ[k] for k in (WEIGHTS_ENV, LAYOUT_ENV) if os.environ.get(k)}
