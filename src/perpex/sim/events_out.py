"""A run's event log on disk: everything `perpex report` and a notebook need, in one directory.

A run directory holds ``report.html`` and ``events/``, the event log; the log alone rebuilds the
report (``cp -r RUN/events /elsewhere/x && perpex report /elsewhere/x``). In ``events/``:

- ``<EventKind>.parquet``: every engine event of the run, one file per event class
  (``TradeExecuted``, ``LiquidationTriggered``, ...), columns ``seq`` (the event's number in
  the run), ``step``, ``time_ns`` (the step's time) and then the event's own fields by name,
  in integer units (enums as their integer values, tuples as lists); an event field with one
  of those three names is ``event_<name>`` (the funding events' own ``time_ns``). Streamed:
  rows are buffered per kind and written in row groups of `BATCH_ROWS`, so memory stays flat
  on a long run.
- the simulator's own tables, in lower case (an event class is CamelCase, so they never meet):
  ``samples.parquet``, one row per path step (prices, open interest, the fund, depth within 1 %
  of the mid, funding, the strategy's equity), see `SAMPLE_COLUMNS`; ``entries.parquet``, one
  row per leveraged trader's entry (liquidation distance by leverage); ``stops.parquet``, one
  row per stop order that fired and filled (slippage); ``tokens.parquet`` (only in a run with
  leveraged tokens), one row per path step: the static position's equity and each token's
  NAV, leverage and pool position at the end of the step, see `token_columns`. They are
  bounded by the path and the population (the runner holds them for the summary anyway) and
  written at the end.
- ``meta.json``, written last (a log without it is a run that did not finish): the scenario,
  seed, market units, the summary, and ``files``: every table above with its row count, so a
  reader refuses a log that lost a table instead of drawing a different report.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from perpex.core.messages import Event

BATCH_ROWS: Final = 65_536
EVENTS_DIR: Final = "events"  # the log's directory in a run directory
META_FILE: Final = "meta.json"
SAMPLES_TABLE: Final = "samples"
ENTRIES_TABLE: Final = "entries"
STOPS_TABLE: Final = "stops"
TOKENS_TABLE: Final = "tokens"

SAMPLE_COLUMNS: Final[tuple[tuple[str, Any], ...]] = (
    ("step", pa.int64()),
    ("time_ns", pa.int64()),
    ("target_ticks", pa.int64()),
    ("index_ticks", pa.int64()),
    ("mark_ticks", pa.int64()),
    ("last_ticks", pa.int64()),
    ("open_interest_lots", pa.int64()),
    ("insurance_fund_atoms", pa.int64()),
    ("depth_bid_lots_1pct", pa.int64()),
    ("depth_ask_lots_1pct", pa.int64()),
    ("funding_rate_e8", pa.int64()),
    ("funding_paid_cum_atoms", pa.int64()),
    ("strategy_equity_atoms", pa.int64()),
    ("makers_away", pa.bool_()),
)
ENTRY_COLUMNS: Final[tuple[tuple[str, Any], ...]] = (
    ("account", pa.string()),
    ("step", pa.int64()),
    ("time_ns", pa.int64()),
    ("side", pa.int64()),
    ("leverage", pa.int64()),
    ("isolated", pa.bool_()),
    ("entry_ticks", pa.int64()),
    ("liquidation_ticks", pa.int64()),
    ("margin_atoms", pa.int64()),
)
STOP_COLUMNS: Final[tuple[tuple[str, Any], ...]] = (
    ("account", pa.string()),
    ("step", pa.int64()),
    ("time_ns", pa.int64()),
    ("side", pa.int64()),
    ("stop_ticks", pa.int64()),
    ("fill_ticks", pa.int64()),
    ("slippage_bps", pa.float64()),
)


def token_columns(names: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """The columns of ``tokens.parquet`` for the tokens `names`: ``step``, ``time_ns``,
    ``static_equity_atoms`` (the yardstick position's equity), then per token
    ``<NAME>_nav_atoms`` (NAV of one token), ``<NAME>_leverage_ppm`` (signed) and
    ``<NAME>_position_lots`` (the pool's position)."""
    columns: list[tuple[str, Any]] = [
        ("step", pa.int64()),
        ("time_ns", pa.int64()),
        ("static_equity_atoms", pa.int64()),
    ]
    for name in names:
        columns += [
            (f"{name}_nav_atoms", pa.int64()),
            (f"{name}_leverage_ppm", pa.int64()),
            (f"{name}_position_lots", pa.int64()),
        ]
    return tuple(columns)


def _arrow_type(hint: Any) -> Any:
    """The Arrow type of an event field's type hint (ints, enums, bools, strings, optionals,
    tuples of ints)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _arrow_type(args[0])
    if origin is tuple:
        return pa.list_(pa.int64())
    if hint is bool:
        return pa.bool_()
    if hint is str:
        return pa.string()
    if hint is int or (isinstance(hint, type) and issubclass(hint, enum.IntEnum)):
        return pa.int64()
    raise TypeError(f"no Arrow column type for {hint!r}")


RUN_COLUMNS: Final = ("seq", "step", "time_ns")


def _column_name(field_name: str) -> str:
    """An event field's column: its name, or ``event_<name>`` where the run's own columns
    already use it (`FundingSettled.time_ns`, the funding time, is ``event_time_ns``)."""
    return f"event_{field_name}" if field_name in RUN_COLUMNS else field_name


class _KindTable:
    """The buffered rows and the open Parquet writer of one event kind."""

    def __init__(self, path: Path, cls: type[Event]) -> None:
        hints = typing.get_type_hints(cls)
        self.names: tuple[str, ...] = cls.__struct_fields__
        self.schema = pa.schema(
            [("seq", pa.int64()), ("step", pa.int64()), ("time_ns", pa.int64())]
            + [(_column_name(name), _arrow_type(hints[name])) for name in self.names]
        )
        self.path = path
        self.rows: list[tuple[Any, ...]] = []
        self.count = 0  # rows written so far
        self.writer: pq.ParquetWriter | None = None

    def flush(self) -> None:
        if not self.rows:
            return
        columns = list(zip(*self.rows, strict=True))
        arrays = [
            pa.array([int(v) if isinstance(v, enum.IntEnum) else v for v in column], type=f.type)
            if f.type == pa.int64()
            else pa.array(column, type=f.type)
            for column, f in zip(columns, self.schema, strict=True)
        ]
        batch = pa.record_batch(arrays, schema=self.schema)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self.writer.write_batch(batch)
        self.count += len(self.rows)
        self.rows.clear()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


class EventWriter:
    """Streams a run's events to ``<run>/events/<Kind>.parquet``, then takes the simulator's
    tables (`table`) and meta.json (`finish`, last) into the same directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / EVENTS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        # a rerun into the same directory starts clean (meta.json first: the log is unfinished)
        (self.dir / META_FILE).unlink(missing_ok=True)
        for old in self.dir.glob("*.parquet"):
            old.unlink()
        self._tables: dict[type, _KindTable] = {}
        self.seq = 0
        self.rows_by_file: dict[str, int] = {}  # meta.json's ``files``

    def write(self, step: int, time_ns: int, events: Sequence[Event]) -> None:
        tables = self._tables
        astuple = msgspec.structs.astuple
        seq = self.seq
        for event in events:
            cls = type(event)
            table = tables.get(cls)
            if table is None:
                assert cls.__name__[:1].isupper(), cls  # never a simulator table's name
                table = tables[cls] = _KindTable(self.dir / f"{cls.__name__}.parquet", cls)
            table.rows.append((seq, step, time_ns, *astuple(event)))
            seq += 1
            if len(table.rows) >= BATCH_ROWS:
                table.flush()
        self.seq = seq

    def close(self) -> None:
        """The event tables' last batches; each file's rows go to meta.json's ``files``."""
        for table in self._tables.values():
            table.close()
            self.rows_by_file[table.path.name] = table.count

    def table(self, name: str, columns: tuple[tuple[str, Any], ...], rows: Sequence[Any]) -> None:
        """One of the simulator's tables (`SAMPLES_TABLE`, ...) into the log, at once."""
        path = self.dir / f"{name}.parquet"
        write_table(path, columns, rows)
        self.rows_by_file[path.name] = len(rows)

    def finish(self, meta: Mapping[str, Any]) -> Path:
        """meta.json with ``files`` (every table written and its rows), last: only a complete
        log has one. Returns its path."""
        path = self.dir / META_FILE
        write_meta(path, {**meta, "files": dict(sorted(self.rows_by_file.items()))})
        return path


def write_table(
    path: Path, columns: tuple[tuple[str, Any], ...], rows: Sequence[Sequence[Any]]
) -> None:
    """A small table written at once (samples, entries, stops, tokens)."""
    schema = pa.schema(list(columns))
    data: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
    arrays = [pa.array(list(col), type=t) for col, (_, t) in zip(data, columns, strict=True)]
    pq.write_table(pa.table(arrays, schema=schema), path, compression="zstd")


def write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "BATCH_ROWS",
    "ENTRIES_TABLE",
    "ENTRY_COLUMNS",
    "EVENTS_DIR",
    "META_FILE",
    "SAMPLES_TABLE",
    "SAMPLE_COLUMNS",
    "STOPS_TABLE",
    "STOP_COLUMNS",
    "TOKENS_TABLE",
    "EventWriter",
    "token_columns",
    "write_meta",
    "write_table",
]
