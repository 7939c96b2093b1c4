"""`csv`: dialect, header, columns with inferred type and null count, row count; streamed,
so a 1 GiB CSV never sits in memory."""

from __future__ import annotations

import csv
import re
from typing import Any

from app.models import ErrorCode
from app.processors.base import Context, ProcessorError
from app.processors.textsample import detect_encoding, open_text

SNIFF_CHARS = 64 * 1024
MAX_COLUMNS = 256
FIELD_LIMIT = 1024 * 1024
PROGRESS_EVERY_ROWS = 20_000
# Types are inferred from the first rows and a sample after (nulls from every row):
# checking each cell against four patterns made a 1 GiB CSV take minutes.
TYPED_ROWS = 10_000
TYPE_EVERY_ROWS = 20
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?")
_BOOL = {"true", "false", "yes", "no"}
# From narrowest to widest: a column's type is the widest any of its values needs.
_RANK = {
    kind: rank
    for rank, kind in enumerate(("empty", "integer", "float", "boolean", "date", "string"))
}
_NULLS = {"null", "na", "n/a", "none"}


class CsvProcessor:
    name = "csv"
    description = "Dialect, header, row count, and per column its inferred type and null count."
    version = "1"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return detected_type in ("text/csv", "application/csv")

    def run(self, ctx: Context) -> dict[str, Any]:
        csv.field_size_limit(FIELD_LIMIT)
        encoding = detect_encoding(ctx.path)
        raw, text = open_text(ctx.path, encoding)
        with raw, text:
            sample = text.read(SNIFF_CHARS)
            dialect, has_header = _sniff(sample)
            text.seek(0)
            try:
                return _scan(csv.reader(text, dialect), has_header, raw, ctx) | {
                    "encoding": encoding,
                    "delimiter": dialect.delimiter,
                    "has_header": has_header,
                }
            except csv.Error as exc:
                raise ProcessorError(
                    ErrorCode.INVALID_INPUT, f"The CSV is malformed ({exc})."
                ) from exc


def _sniff(sample: str) -> tuple[type[csv.Dialect], bool]:
    sniffer = csv.Sniffer()
    try:
        dialect = sniffer.sniff(sample, delimiters=",;\t|")
        has_header = sniffer.has_header(sample)
    except csv.Error:
        return csv.excel, True  # one column, or too little to tell: read it as plain CSV
    return dialect, has_header


def _scan(rows: Any, has_header: bool, raw: Any, ctx: Context) -> dict[str, Any]:
    header: list[str] | None = next(rows, None) if has_header else None
    types: list[str] = []
    nulls: list[int] = []
    count = 0
    for row in rows:
        count += 1
        sampled = count <= TYPED_ROWS or count % TYPE_EVERY_ROWS == 0
        for index, cell in enumerate(row[:MAX_COLUMNS]):
            if index >= len(types):
                types.append("empty")
                nulls.append(count - 1)  # earlier rows lacked this column
            if not sampled or types[index] == "string":  # only nulls still count
                nulls[index] += _is_null(cell)
                continue
            kind = _kind(cell)
            if kind == "empty":
                nulls[index] += 1
            elif _RANK[kind] > _RANK[types[index]]:
                types[index] = kind
        if count % PROGRESS_EVERY_ROWS == 0:
            ctx.progress(raw.tell() / max(ctx.size, 1))
    names = header or [f"column_{i + 1}" for i in range(len(types))]
    columns = [
        {
            "name": str(name)[:200],
            "type": types[i] if i < len(types) else "empty",
            "nulls": nulls[i] if i < len(nulls) else count,
        }
        for i, name in enumerate(names[:MAX_COLUMNS])
    ]
    ctx.progress(1.0)
    return {"rows": count, "columns": columns}


def _is_null(cell: str) -> bool:
    value = cell.strip()
    return not value or value.lower() in _NULLS


def _kind(cell: str) -> str:
    value = cell.strip()
    if not value or value.lower() in _NULLS:
        return "empty"
    if _INT.fullmatch(value):
        return "integer"
    if _FLOAT.fullmatch(value):
        return "float"
    if value.lower() in _BOOL:
        return "boolean"
    if _DATE.fullmatch(value):
        return "date"
    return "string"
