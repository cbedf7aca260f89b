"""Markdown tables -> HTML pages for the Snakemake report."""

import pytest

from texad.report.html_tables import markdown_to_html, parse_pipe_row, write_html_table

MD = """**Image AUROC (%)**, grid 128; `n/a` = not available.

| Dataset | Class | method_a | a\\|b |
|:---|:---|---:|:---:|
| synthetic | wood | 99.0 ± 0.5 | <x> |
| synthetic | **mean** | n/a | 1 |

- a footnote
"""


def test_cells_alignment_and_markup():
    page = markdown_to_html(MD, "image_auroc")
    assert page.startswith("<!DOCTYPE html>") and "<title>image_auroc</title>" in page
    assert "<p><b>Image AUROC (%)</b>, grid 128; <code>n/a</code> = not available.</p>" in page
    assert '<th>Dataset</th><th>Class</th><th class="r">method_a</th><th class="c">a|b</th>' in page
    assert '<td class="r">99.0 ± 0.5</td><td class="c">&lt;x&gt;</td>' in page  # escaped, not markup
    assert "<td><b>mean</b></td>" in page and "<p>- a footnote</p>" in page
    assert page.count("<tr>") == 3


def test_pipe_row_keeps_escaped_pipes():
    assert parse_pipe_row("| a | b\\|c | d |") == ["a", "b\\|c", "d"]


def test_text_without_table_is_an_error():
    with pytest.raises(ValueError, match="notes: no Markdown pipe table"):
        markdown_to_html("just words\n", "notes")


def test_write_is_atomic_and_names_a_missing_file(tmp_path):
    src = tmp_path / "t.md"
    src.write_text(MD)
    out = write_html_table(src, tmp_path / "html" / "t.html")
    assert "<table>" in out.read_text() and not list((tmp_path / "html").glob("*.tmp*"))
    with pytest.raises(FileNotFoundError, match="nope.md"):
        write_html_table(tmp_path / "nope.md", tmp_path / "x.html")
