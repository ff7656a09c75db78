"""CSV files staff and admins open in a spreadsheet (the shift, the audit log): one
format for all of them (docs/shift.md "The CSV").

- UTF-8 with a byte order mark, so that Excel reads æ, ø and å right;
- `;` between cells, Norwegian Excel's list separator (its decimal separator is the comma);
- CRLF line ends;
- a text cell that a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, a tab or a
  carriage return first) gets a leading `'`, so it is shown as text and never run
  (OWASP "CSV Injection").

The research export is not one of these: it is data for programs, streamed
(dashboard/research.py)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Final

from fastapi import Response

SEPARATOR: Final = ";"
#: A text cell starting with one of these would be read as a formula by a spreadsheet.
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A cell as written: None is empty; text that a spreadsheet would take for a formula
    gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A header row and `rows`, every cell through `safe_cell`."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, delimiter=SEPARATOR, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return out.getvalue()


def attachment(text: str, filename: str) -> Response:
    """The file as a download, never cached (it holds residents' data)."""
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})


__all__ = ["FORMULA_START", "SEPARATOR", "attachment", "csv_text", "safe_cell"]
