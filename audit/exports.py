"""Exports of audit lists as CSV or JSON Lines, streamed (the API and the console share them)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.http import StreamingHttpResponse

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will show as text, never run as a formula."""
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def export_response(rows: Iterable[dict[str, Any]], fmt: str, name: str) -> StreamingHttpResponse:
    def jsonl() -> Iterator[str]:
        for row in rows:
            yield json.dumps(row, default=str, sort_keys=True) + "\n"

    def as_csv() -> Iterator[str]:
        buffer = io.StringIO()
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            flat = {k: csv_cell(v) for k, v in row.items()}
            if writer is None:
                writer = csv.DictWriter(buffer, fieldnames=list(flat))
                writer.writeheader()
            writer.writerow(flat)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    content_type = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    response = StreamingHttpResponse(
        jsonl() if fmt == "jsonl" else as_csv(), content_type=content_type
    )
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


def in_chunks(queryset: Any, size: int = 2000) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in queryset.iterator(chunk_size=size):
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
