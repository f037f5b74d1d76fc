"""The report's file handling, shared by the run's and the sweep's reports: the error a
reader of a result directory raises, reading its meta.json, and writing a page atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class ReportError(ValueError):
    """The directory is not a simulation run (or sweep output), or a file cannot be read."""


def read_json_object(path: Path, missing: str) -> dict[str, Any]:
    """The JSON object in `path`; `missing` is the message when there is no such file."""
    if not path.is_file():
        raise ReportError(missing)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read {path.name}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: {path.name} must hold a JSON object")
    return raw


def read_parquet(path: Path, columns: list[str], filters: Any = None) -> pa.Table:
    """`columns` of the Parquet file at `path`; ReportError naming the file and the missing
    columns, or why it cannot be read."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path}: cannot read it as parquet: {exc}") from exc
    missing = [name for name in columns if name not in schema.names]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path}: cannot read it: {exc}") from exc


def write_page(page: str, out_path: Path) -> Path:
    """Write then rename: a reader never sees half a report."""
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(out_path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportError(f"cannot write the report to {out_path}: {exc}") from exc
    return out_path


__all__ = ["ReportError", "read_json_object", "read_parquet", "write_page"]
