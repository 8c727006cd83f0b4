"""Tables as data, rendered to Markdown here and to HTML by :mod:`sepvae.results.html`.

The writers of ``report.md``, ``RESULTS.md`` and their HTML pages build each table once as
a :class:`Table`; only the rendering differs, so the two formats cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union


@dataclass(frozen=True)
class Styled:
    """A cell's text with inline markup: bold, code, or a link to ``href``."""

    text: str
    style: Literal["strong", "code", "link"]
    href: str = ""


Cell = Union[str, Styled]


@dataclass(frozen=True)
class Table:
    """A header, rows of cells, which columns hold numbers (right-aligned), and a caption.

    ``row_header``: the column whose cell names its row (``<th scope="row">`` in HTML), or
    None. The caption is shown by HTML only: the Markdown writers say it in their own text.
    """

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    numeric: tuple[bool, ...]
    caption: str = ""
    row_header: int | None = 0

    def __post_init__(self):
        if len(self.numeric) != len(self.header) or any(len(row) != len(self.header) for row in self.rows):
            raise ValueError(f"table {self.caption!r}: every row and `numeric` need {len(self.header)} cells")


def cell_text(cell: Cell) -> str:
    return cell.text if isinstance(cell, Styled) else cell


def markdown_lines(table: Table) -> list[str]:
    """The table as Markdown lines (header, alignment row, one line per row)."""
    rule = "|" + "|".join("--:" if numeric else "---" for numeric in table.numeric) + "|"
    return [_markdown_row(table.header), rule] + [_markdown_row(row) for row in table.rows]


def _markdown_row(cells) -> str:
    return "| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |"


def _markdown_cell(cell: Cell) -> str:
    if not isinstance(cell, Styled):
        return cell
    if cell.style == "strong":
        return f"**{cell.text}**"
    if cell.style == "code":
        return f"`{cell.text}`"
    return f"[{cell.text}]({cell.href})"
