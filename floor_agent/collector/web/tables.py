"""A list page's table as plain data: the template renders it, csv_export writes it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    link: str | None = None
    cls: str | None = None
    testid: str | None = None


@dataclass(slots=True)
class Row:
    cells: list[Cell]
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Table:
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    testid: str | None = None
    element_id: str | None = None
    empty: str = "nothing to show"

    def add(self, cells: list[Cell | str], **attrs: str) -> None:
        self.rows.append(Row([c if isinstance(c, Cell) else Cell(c) for c in cells],
                             {k.replace("_", "-"): v for k, v in attrs.items()}))
