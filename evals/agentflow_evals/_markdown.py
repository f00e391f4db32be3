"""Markdown text for the eval report: escaped plain text, formatted numbers, padded tables.

Shared by the results table (`report.py`) and the differences table (`report_compare.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MISSING", "count", "percent", "plain", "seconds", "table"]

MISSING = "–"
"""A value the run recorded as absent, or did not record."""
_MARKDOWN_SPECIAL = re.compile(r"([\\`*$<>\[\]~])")


def plain(text: str) -> str:
    """Text that markdown shows as it is (a `$` would start maths on GitHub, a `*` emphasis)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A markdown table whose columns are padded so it also reads well as plain text."""
    cells = [[_cell(c) for c in header], *([_cell(c) for c in row] for row in rows)]
    widths = [max(3, *(len(row[i]) for row in cells)) for i in range(len(header))]
    rules = [("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right, strict=True)]

    def line(row: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    return "\n".join([line(cells[0]), line(rules), *(line(row) for row in cells[1:])])


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def count(value: float | None, decimals: int = 0) -> str:
    return MISSING if value is None else f"{value:,.{decimals}f}"
