"""Reading a simulation run's event log: meta.json, the per-step samples, the event files.

Only what a chart needs is read: the columns named, the liquidation rows of the trades. Every
array comes back as NumPy in the file's own integer units (ticks, lots, atoms, ns); turning them
into prices, BTC and USDT for display is `RunMeta`'s job, in float64, and only for display.

A run's event log is one directory, ``RUN/events`` (written by the simulator's runner, see
`perpex.sim.events_out`), and it is all the report reads, wherever it has been copied:

- ``meta.json`` (written last): scenario, question, seed, market units, times, flags, the
  runner's summary, and ``files``: every table of the log with its row count, so a log missing
  a table (or holding a cut one) is refused by name instead of drawing a different report;
- ``samples.parquet``: one row per path step (prices, open interest, fund, depth, funding, ...);
- ``entries.parquet``, ``stops.parquet``: leveraged entries and triggered stops (maybe empty);
- ``tokens.parquet``: only in a run with leveraged tokens;
- ``<EventKind>.parquet``: one file per engine event class that occurred (absent when none did).

`find_log` takes the run directory, its ``events`` directory or a copy of it. A run written
before the log held everything (meta.json and the tables beside ``events/``) still reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpex.report.files import ReportError, read_json_object, read_parquet

Array = npt.NDArray[Any]

SAMPLE_COLUMNS = (
    "step",
    "time_ns",
    "target_ticks",
    "index_ticks",
    "mark_ticks",
    "last_ticks",
    "open_interest_lots",
    "insurance_fund_atoms",
    "depth_bid_lots_1pct",
    "depth_ask_lots_1pct",
    "funding_rate_e8",
    "funding_paid_cum_atoms",
    "strategy_equity_atoms",
    "makers_away",
)
"""The samples columns the report reads; a run missing one is refused with its name."""


@dataclass(frozen=True)
class RunMeta:
    """meta.json, with the unit conversions the charts need (float, display only)."""

    scenario: str
    question: str
    seed: int
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    atoms_per_unit: int
    atoms_per_tick_lot: int
    start_ns: int
    end_ns: int
    step_ns: int
    mark_price: str
    has_strategy: bool
    strategy_deposit_atoms: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def usdt_per_tick(self) -> float:
        return float(self.tick_size)

    @property
    def btc_per_lot(self) -> float:
        return float(self.step_size)

    @property
    def usdt_per_tick_lot(self) -> float:
        """The USDT notional of one lot at one tick: price_ticks × qty_lots × this."""
        return self.atoms_per_tick_lot / self.atoms_per_unit

    def usdt(self, atoms: Array | int) -> Any:
        return np.asarray(atoms, dtype=np.float64) / self.atoms_per_unit


def _meta_field(raw: dict[str, Any], name: str, kind: type, path: Path) -> Any:
    if name not in raw:
        raise ReportError(f"{path}: meta.json has no {name!r}")
    value = raw[name]
    # bool is an int in Python: an int field must not accept true/false, nor a bool field 0/1.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ReportError(f"{path}: meta.json {name!r} must be an integer, not {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ReportError(f"{path}: meta.json {name!r} must be a {kind.__name__}, not {value!r}")
    return value


def _decimal(raw: dict[str, Any], name: str, path: Path) -> Decimal:
    text = _meta_field(raw, name, str, path)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ReportError(f"{path}: meta.json {name!r} is not a decimal: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise ReportError(f"{path}: meta.json {name!r} must be positive, not {text!r}")
    return value


EVENTS_DIR = "events"
META_FILE = "meta.json"


@dataclass(frozen=True)
class RunFiles:
    """Where one run's files are: `log_dir` holds meta.json and the simulator's tables,
    `events_dir` the engine event tables (the same directory, but for a run written before the
    log held everything)."""

    log_dir: Path
    events_dir: Path


def find_log(path: Path) -> RunFiles:
    """The event log of `path`: a run directory (its ``events/``), the log itself (a run's
    ``events/`` or a copy of it anywhere), or an older run directory; ReportError otherwise."""
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory (expected a simulation run directory)")
    inside = path / EVENTS_DIR
    if (path / META_FILE).is_file():
        if inside.is_dir() and not (inside / META_FILE).exists():  # the older layout
            return RunFiles(path, inside)
        return RunFiles(path, path)
    if (inside / META_FILE).is_file():
        return RunFiles(inside, inside)
    if path.name == EVENTS_DIR and (path.parent / META_FILE).is_file():  # older layout's events/
        return RunFiles(path.parent, path)
    if inside.is_dir():
        raise ReportError(
            f"{inside} has no meta.json: the run did not finish (meta.json is written last)"
        )
    raise ReportError(
        f"{path} is not a simulation run: it has no meta.json (a run's event log, RUN/events, "
        "holds meta.json, samples.parquet and one <EventKind>.parquet per event kind)"
    )


def read_meta(log_dir: Path) -> RunMeta:
    """meta.json of the event log `log_dir`; ReportError when it is not one."""
    path = log_dir / META_FILE
    raw = read_json_object(path, f"{log_dir} is not a simulation run: it has no meta.json")
    summary = raw.get("summary", {})
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: meta.json 'summary' must be an object")
    meta = RunMeta(
        scenario=_meta_field(raw, "scenario", str, path),
        question=_meta_field(raw, "question", str, path),
        seed=_meta_field(raw, "seed", int, path),
        symbol=_meta_field(raw, "symbol", str, path),
        tick_size=_decimal(raw, "tick_size", path),
        step_size=_decimal(raw, "step_size", path),
        atoms_per_unit=_meta_field(raw, "atoms_per_unit", int, path),
        atoms_per_tick_lot=_meta_field(raw, "atoms_per_tick_lot", int, path),
        start_ns=_meta_field(raw, "start_ns", int, path),
        end_ns=_meta_field(raw, "end_ns", int, path),
        step_ns=_meta_field(raw, "step_ns", int, path),
        mark_price=_meta_field(raw, "mark_price", str, path),
        has_strategy=_meta_field(raw, "has_strategy", bool, path),
        strategy_deposit_atoms=_meta_field(raw, "strategy_deposit_atoms", int, path),
        summary=summary,
    )
    if meta.atoms_per_unit <= 0 or meta.atoms_per_tick_lot <= 0 or meta.step_ns <= 0:
        raise ReportError(f"{path}: atoms_per_unit, atoms_per_tick_lot and step_ns must be > 0")
    return meta


def read_files(log_dir: Path) -> dict[str, int]:
    """meta.json's ``files`` (each table of the log and its rows), checked against the files:
    ReportError naming the first one missing or cut. {} for a run written before the list."""
    path = log_dir / META_FILE
    listed = read_json_object(path, f"{log_dir} has no meta.json").get("files", {})
    if not isinstance(listed, dict):
        raise ReportError(f"{path}: meta.json 'files' must be an object")
    files: dict[str, int] = {}
    for name, rows in listed.items():
        plain = isinstance(name, str) and Path(name).name == name and name.endswith(".parquet")
        if not plain or isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ReportError(f"{path}: meta.json 'files' has a bad entry {name!r}: {rows!r}")
        table = log_dir / name
        if not table.is_file():
            raise ReportError(
                f"{log_dir}: no {name}, which meta.json lists ({rows:,} rows): the log is "
                "incomplete (copy the whole events directory)"
            )
        try:
            found = int(pq.read_metadata(table).num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise ReportError(f"{table}: cannot read it as parquet: {exc}") from exc
        if found != rows:
            raise ReportError(
                f"{table}: {found:,} rows where meta.json says {rows:,}: the log is incomplete "
                "or mixed with another run's"
            )
        files[name] = rows
    return files


def _to_numpy(table: pa.Table, name: str) -> Array:
    column = table.column(name)
    if column.null_count:
        raise ReportError(f"column {name!r} has {column.null_count} null value(s)")
    return np.asarray(column.to_numpy())


def read_samples(log_dir: Path) -> dict[str, Array]:
    """samples.parquet as one NumPy array per column, sorted by step."""
    path = log_dir / "samples.parquet"
    if not path.is_file():
        raise ReportError(
            f"{log_dir} is not a complete simulation run: it has meta.json but no samples.parquet"
        )
    table = read_parquet(path, list(SAMPLE_COLUMNS))
    if table.num_rows == 0:
        raise ReportError(f"{path}: no rows (the run recorded no step)")
    samples = {name: _to_numpy(table, name) for name in SAMPLE_COLUMNS}
    order = np.argsort(samples["step"], kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        samples = {name: values[order] for name, values in samples.items()}
    return samples


def event_path(events_dir: Path, kind: str) -> Path:
    return events_dir / f"{kind}.parquet"


def event_count(events_dir: Path, kind: str) -> int:
    """Rows of one event file, from its footer alone (0 when the file is absent)."""
    path = event_path(events_dir, kind)
    if not path.is_file():
        return 0
    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path}: cannot read it as parquet: {exc}") from exc


def read_events(
    events_dir: Path, kind: str, columns: list[str], filters: Any = None
) -> dict[str, Array] | None:
    """The named columns of ``<kind>.parquet`` (None when no such event occurred)."""
    path = event_path(events_dir, kind)
    if not path.is_file():
        return None
    table = read_parquet(path, columns, filters)
    return {name: _to_numpy(table, name) for name in columns}


def read_liquidation_trades(events_dir: Path) -> dict[str, Array] | None:
    """The liquidation fills (`TradeExecuted.liquidation`), the taker being the liquidated side:
    taker_side -1 closed a long, +1 a short. The filter runs inside the reader, so a run with
    millions of ordinary trades costs only the liquidation rows."""
    columns = ["step", "time_ns", "price_ticks", "qty_lots", "taker_side", "taker_account"]
    path = event_path(events_dir, "TradeExecuted")
    if not path.is_file():
        return None
    table = read_parquet(path, [*columns, "liquidation"], filters=[("liquidation", "==", True)])
    return {name: _to_numpy(table, name) for name in columns}


def read_optional(log_dir: Path, name: str, columns: list[str]) -> dict[str, Array] | None:
    """entries.parquet / stops.parquet, or None when absent or empty. A nullable integer column
    comes back with nulls as 0 and a `<column>_valid` boolean mask next to it."""
    path = log_dir / f"{name}.parquet"
    if not path.is_file():
        return None
    table = read_parquet(path, columns)
    if table.num_rows == 0:
        return None
    out: dict[str, Array] = {}
    for column_name in columns:
        column = table.column(column_name)
        if column.null_count and pa.types.is_integer(column.type):
            out[column_name + "_valid"] = np.asarray(pc.is_valid(column).to_numpy())
            column = pc.fill_null(column, 0)
        elif column.null_count:
            raise ReportError(f"{path}: column {column_name!r} has null value(s)")
        out[column_name] = np.asarray(column.to_numpy())
    return out


@dataclass(frozen=True)
class Run:
    """Everything the report reads from one run's event log, already cut to the needed
    columns."""

    files: RunFiles
    meta: RunMeta
    samples: dict[str, Array]
    liquidation_trades: dict[str, Array] | None  # see `read_liquidation_trades`
    liquidations_triggered: dict[str, Array] | None  # LiquidationTriggered: account
    adl: dict[str, Array] | None  # AutoDeleveraged: time_ns, counterparty, qty_lots, price_ticks
    fund_changes: dict[str, Array] | None  # InsuranceFundChanged: time_ns, balance, symbol
    entries: dict[str, Array] | None
    stops: dict[str, Array] | None

    @property
    def log_dir(self) -> Path:
        """The directory of meta.json and the simulator's tables."""
        return self.files.log_dir


def load_run(path: Path) -> Run:
    """Reads a run (its directory, its event log or a copy of that; see `find_log`);
    ReportError when it is not one, a table meta.json lists is missing or cut, or a file is
    malformed."""
    files = find_log(path)
    log, events = files.log_dir, files.events_dir
    meta = read_meta(log)
    read_files(log)
    samples = read_samples(log)
    return Run(
        files=files,
        meta=meta,
        samples=samples,
        liquidation_trades=read_liquidation_trades(events),
        liquidations_triggered=read_events(events, "LiquidationTriggered", ["account"]),
        adl=read_events(
            events,
            "AutoDeleveraged",
            ["time_ns", "counterparty_account", "qty_lots", "price_ticks"],
        ),
        fund_changes=read_events(
            events, "InsuranceFundChanged", ["time_ns", "balance_atoms", "symbol"]
        ),
        entries=read_optional(
            log,
            "entries",
            ["side", "leverage", "isolated", "entry_ticks", "liquidation_ticks"],
        ),
        stops=read_optional(log, "stops", ["time_ns", "side", "slippage_bps"]),
    )


__all__ = [
    "EVENTS_DIR",
    "META_FILE",
    "SAMPLE_COLUMNS",
    "Array",
    "ReportError",
    "Run",
    "RunFiles",
    "RunMeta",
    "event_count",
    "event_path",
    "find_log",
    "load_run",
    "read_events",
    "read_files",
    "read_liquidation_trades",
    "read_meta",
    "read_optional",
    "read_samples",
]
