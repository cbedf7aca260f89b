"""Markdown tables -> a standalone HTML page, for Snakemake's HTML report.

The report shows HTML files in its main panel, but offers CSV only as a download; every table texad writes
already exists as Markdown (a bold title line, a pipe table, footnotes), so one converter serves them all.
It understands only what texad's own Markdown uses: paragraphs, pipe tables with an alignment row,
``**bold**`` and ```code```. Cell text is HTML-escaped.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from texad.results.record import atomic_write_text

__all__ = ["markdown_to_html", "parse_pipe_row", "write_html_table"]

_STYLE = """
body { font-family: sans-serif; font-size: 14px; margin: 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #ddd; }
th { border-bottom: 2px solid #444; }
td.r, th.r { text-align: right; }
td.c, th.c { text-align: center; }
code { background: #f3f3f3; padding: 0 2px; }
"""
_ALIGN_CELL = re.compile(r"^:?-{3,}:?$")


def _inline(text: str) -> str:
    out = html.escape(text.replace("\\|", "|"), quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def parse_pipe_row(line: str) -> list[str]:
    """Cells of one pipe-table row (``| a | b |``); an escaped ``\\|`` stays inside its cell."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", body)]


def _alignment(cell: str) -> str:
    if cell.startswith(":") and cell.endswith(":"):
        return "c"
    return "r" if cell.endswith(":") else ""


def _table_html(rows: list[str]) -> str:
    header = parse_pipe_row(rows[0])
    aligns = [_alignment(c) for c in parse_pipe_row(rows[1])] if len(rows) > 1 else []
    aligns += [""] * (len(header) - len(aligns))

    def cells(values: list[str], tag: str) -> str:
        return "".join(
            f'<{tag} class="{a}">{_inline(v)}</{tag}>' if a else f"<{tag}>{_inline(v)}</{tag}>"
            for v, a in zip(values, aligns + [""] * len(values), strict=False)  # extra cells: unaligned
        )

    body = "".join(f"<tr>{cells(parse_pipe_row(r), 'td')}</tr>\n" for r in rows[2:])
    return f"<table>\n<thead><tr>{cells(header, 'th')}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _is_table_start(lines: list[str], i: int) -> bool:
    if i + 1 >= len(lines) or not lines[i].lstrip().startswith("|"):
        return False
    return all(_ALIGN_CELL.match(c) for c in parse_pipe_row(lines[i + 1]) if c)


def markdown_to_html(text: str, title: str) -> str:
    """A complete HTML page for ``text`` (texad's Markdown table files); raises ValueError without a table."""
    lines = text.splitlines()
    parts: list[str] = []
    paragraph: list[str] = []
    n_tables = 0
    i = 0

    def flush() -> None:
        if paragraph:
            parts.append(f"<p>{_inline(' '.join(paragraph))}</p>\n")
            paragraph.clear()

    while i < len(lines):
        if _is_table_start(lines, i):
            flush()
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            parts.append(_table_html(lines[i:j]))
            n_tables += 1
            i = j
            continue
        if lines[i].strip():
            paragraph.append(lines[i].strip())
        else:
            flush()
        i += 1
    flush()
    if not n_tables:
        raise ValueError(f"{title}: no Markdown pipe table found")
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style>'
    return f"<!DOCTYPE html>\n<html><head>{head}</head>\n<body>\n{''.join(parts)}</body></html>\n"


def write_html_table(markdown_path: str | Path, out: str | Path) -> Path:
    """Convert one Markdown table file; the output is written atomically."""
    src = Path(markdown_path)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: Markdown table not found (run the rule that writes it first)")
    page = markdown_to_html(src.read_text(encoding="utf-8"), title=src.stem)
    atomic_write_text(out, page)
    return Path(out)
