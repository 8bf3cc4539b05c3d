"""CSV export of any list page: the table's own columns, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import re

from fastapi.responses import Response

from floor_agent.dashboard.tables import Table

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: str) -> str:
    """A value a spreadsheet will not run as a formula (CSV injection): prefixed with '."""
    return "'" + value if value.startswith(FORMULA_START) else value


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(c) for c in table.columns])
    for row in table.rows:
        writer.writerow([cell(c.title or c.text) for c in row.cells])
    return out.getvalue()


def csv_response(table: Table, name: str) -> Response:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:60] or "export"
    return Response(table_csv(table), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{safe}.csv"',
                             "Cache-Control": "no-store"})
