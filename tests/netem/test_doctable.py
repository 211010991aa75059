"""docs/benchmarks.md's profile table is the catalog's, generated."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.netem.catalog import PROFILES, markdown_table
from tether.netem.doctable import BEGIN, END, main, with_table

DOCS = Path(__file__).parents[2] / "docs" / "benchmarks.md"


def test_the_docs_hold_the_generated_table() -> None:
    document = DOCS.read_text()
    assert with_table(document) == document, "run: python -m tether.netem.doctable --write docs/benchmarks.md"


def test_the_table_names_every_profile() -> None:
    table = markdown_table()
    for name in PROFILES:
        assert f"| `{name}` |" in table


def test_write_replaces_only_the_marked_part(tmp_path: Path) -> None:
    target = tmp_path / "doc.md"
    target.write_text(f"before\n{BEGIN}\nstale\n{END}\nafter\n")
    assert main(["--write", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("before\n")
    assert text.endswith(f"{END}\nafter\n")
    assert "stale" not in text
    assert "`inflight-geo`" in text


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        with_table("no table here")
