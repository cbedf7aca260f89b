"""Open a Snakemake HTML report in headless Chromium and read back what a user sees.

The report is a single-page React app: its results are only shown after clicking through
Results -> category -> subcategory -> the eye button of a row. A copy of the report gets a small script that
does exactly these clicks for each requested item and logs what the main panel then shows (the data URL of
the displayed iframe or image) to the console, which Chromium prints on stderr.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "chrome")
APT_PACKAGE = "chromium-headless-shell"
MARK = "TEXAD-REPORT "

_DRIVER = r"""
<script>
(function () {
  const items = __ITEMS__;
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  const byText = (t) => {
    const els = [...document.querySelectorAll("*")].filter((e) => e.textContent.trim() === t);
    return els[els.length - 1];
  };
  const shown = () => {
    const el = [...document.querySelectorAll("iframe[src^='data:'], img[src^='data:']")]
      .filter((e) => !(e.getAttribute("src") || "").startsWith("data:image/svg"))
      .pop();
    return el ? el.getAttribute("src") : null;
  };
  async function openItem(item) {
    const missing = [];
    for (const step of ["Results", ...item.path]) {
      const el = byText(step);
      // a category with a single subcategory lists its results directly: the row decides
      if (!el) { missing.push(step); continue; }
      el.click();
      await wait(150);
    }
    const row = [...document.querySelectorAll("tr")].find((tr) =>
      item.row.every((text) => [...tr.querySelectorAll("td")].some((td) => td.textContent.trim() === text)));
    if (!row) return { ...item, error: "no row " + item.row.join(" | ") + " (menu entries not found: " + missing + ")" };
    const before = shown();
    row.querySelector("a").click();
    await wait(300);
    const src = shown();
    return { ...item, src: src === before && item.index > 0 ? null : src };
  }
  window.addEventListener("load", async () => {
    await wait(300);
    for (const item of items) {
      const out = await openItem(item);
      console.log("__MARK__" + JSON.stringify(out));
    }
  });
})();
</script>
"""


def find_chromium(install: bool = True) -> str | None:
    """A headless-capable Chromium on PATH; installs Debian's chromium-headless-shell when missing and allowed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    if install and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", APT_PACKAGE]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        return shutil.which(APT_PACKAGE)
    return None


def _chromium(binary: str, url: str, *extra: str, budget_ms: int = 20000) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
           f"--virtual-time-budget={budget_ms}", *extra, url]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def embedded(report: Path, name: str) -> dict:
    """A JSON object the report embeds as ``var <name> = {...};`` (``results`` or ``categories``)."""
    text = report.read_text(errors="ignore")
    match = re.search(rf"var {name} = (\{{.*?\}});\n", text)
    if not match:
        raise AssertionError(f"{report}: no embedded `{name}` object")
    return json.loads(match.group(1))


def decode_data_url(src: str) -> tuple[str, bytes]:
    """(mime type, content) of a ``data:`` URL."""
    head, payload = src.split(",", 1)
    mime = head[5:].split(";", 1)[0]
    return mime, base64.b64decode(payload) if ";base64" in head else payload.encode()


def open_items(binary: str, report: Path, items: list[dict], workdir: Path) -> list[dict]:
    """Click through the report to each item ``{"path": [category, subcategory...], "row": [cell texts]}``;
    returns each item with ``src`` (the data URL shown) or ``error``."""
    items = [{**item, "index": i} for i, item in enumerate(items)]
    driver = _DRIVER.replace("__ITEMS__", json.dumps(items)).replace("__MARK__", MARK)
    page = workdir / "report-driven.html"
    page.write_text(report.read_text(errors="ignore") + driver)
    run = _chromium(binary, page.as_uri(), "--dump-dom", budget_ms=5000 + 1500 * len(items))
    found = [json.loads(line.split(MARK, 1)[1].rsplit('", source:', 1)[0].encode().decode("unicode_escape"))
             for line in run.stderr.splitlines() if MARK in line]  # fmt: skip
    return found


def screenshot(binary: str, report: Path, item: dict, out: Path, workdir: Path) -> Path:
    """A PNG of the report with ``item`` open in the main panel."""
    driver = _DRIVER.replace("__ITEMS__", json.dumps([{**item, "index": 0}])).replace("__MARK__", MARK)
    page = workdir / "report-shot.html"
    page.write_text(report.read_text(errors="ignore") + driver)
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium(binary, page.as_uri(), f"--screenshot={out}", budget_ms=6000)
    return out
