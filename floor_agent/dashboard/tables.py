"""A list page's table as plain data: the template renders it, csv_export writes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from floor_agent.dashboard.timefmt import short_time


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    link: str | None = None
    cls: str | None = None
    testid: str | None = None
    title: str | None = None  # the full value: shown on hover, written by the CSV export


NOWRAP = "nowrap"  # short cells (times, ids, kinds, states): never broken mid-word


def short(text: str, cls: str | None = None, link: str | None = None) -> Cell:
    """A short cell kept on one line."""
    return Cell(text, link=link, cls=f"{cls} {NOWRAP}" if cls else NOWRAP)


def time_cell(ts: str, link: str | None = None) -> Cell:
    """A stored stamp shown compactly on one line, the full stamp in the title and exports."""
    return Cell(short_time(ts), link=link, cls=NOWRAP, title=ts)


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
