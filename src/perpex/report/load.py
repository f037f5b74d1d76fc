"""Reading a simulation run's output directory: meta.json, the per-step samples, the event files.

Only what a chart needs is read: the columns named, the liquidation rows of the trades. Every
array comes back as NumPy in the file's own integer units (ticks, lots, atoms, ns); turning them
into prices, BTC and USDT for display is `RunMeta`'s job, in float64, and only for display.

A run directory (written by the simulator's runner):

- `meta.json`: scenario, question, seed, market units, times, flags and the runner's summary;
- `samples.parquet`: one row per path step (prices, open interest, fund, depth, funding, ...);
- `events/<EventKind>.parquet`: one file per event class that occurred (absent when none did);
- `entries.parquet`, `stops.parquet`: optional, leveraged entries and triggered stops.
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


def read_meta(run_dir: Path) -> RunMeta:
    """meta.json of `run_dir`; ReportError when the directory is not a run."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory (expected a simulation run directory)")
    path = run_dir / "meta.json"
    raw = read_json_object(
        path,
        f"{run_dir} is not a simulation run: it has no meta.json "
        "(a run directory holds meta.json, samples.parquet and events/)",
    )
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


def _to_numpy(table: pa.Table, name: str) -> Array:
    column = table.column(name)
    if column.null_count:
        raise ReportError(f"column {name!r} has {column.null_count} null value(s)")
    return np.asarray(column.to_numpy())


def read_samples(run_dir: Path) -> dict[str, Array]:
    """samples.parquet as one NumPy array per column, sorted by step."""
    path = run_dir / "samples.parquet"
    if not path.is_file():
        raise ReportError(
            f"{run_dir} is not a complete simulation run: it has meta.json but no samples.parquet"
        )
    table = read_parquet(path, list(SAMPLE_COLUMNS))
    if table.num_rows == 0:
        raise ReportError(f"{path}: no rows (the run recorded no step)")
    samples = {name: _to_numpy(table, name) for name in SAMPLE_COLUMNS}
    order = np.argsort(samples["step"], kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        samples = {name: values[order] for name, values in samples.items()}
    return samples


def event_path(run_dir: Path, kind: str) -> Path:
    return run_dir / "events" / f"{kind}.parquet"


def event_count(run_dir: Path, kind: str) -> int:
    """Rows of one event file, from its footer alone (0 when the file is absent)."""
    path = event_path(run_dir, kind)
    if not path.is_file():
        return 0
    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path}: cannot read it as parquet: {exc}") from exc


def read_events(
    run_dir: Path, kind: str, columns: list[str], filters: Any = None
) -> dict[str, Array] | None:
    """The named columns of `events/<kind>.parquet` (None when no such event occurred)."""
    path = event_path(run_dir, kind)
    if not path.is_file():
        return None
    table = read_parquet(path, columns, filters)
    return {name: _to_numpy(table, name) for name in columns}


def read_liquidation_trades(run_dir: Path) -> dict[str, Array] | None:
    """The liquidation fills (`TradeExecuted.liquidation`), the taker being the liquidated side:
    taker_side -1 closed a long, +1 a short. The filter runs inside the reader, so a run with
    millions of ordinary trades costs only the liquidation rows."""
    columns = ["step", "time_ns", "price_ticks", "qty_lots", "taker_side", "taker_account"]
    path = event_path(run_dir, "TradeExecuted")
    if not path.is_file():
        return None
    table = read_parquet(path, [*columns, "liquidation"], filters=[("liquidation", "==", True)])
    return {name: _to_numpy(table, name) for name in columns}


def read_optional(run_dir: Path, name: str, columns: list[str]) -> dict[str, Array] | None:
    """entries.parquet / stops.parquet, or None when absent or empty. A nullable integer column
    comes back with nulls as 0 and a `<column>_valid` boolean mask next to it."""
    path = run_dir / f"{name}.parquet"
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
    """Everything the report reads from one run directory, already cut to the needed columns."""

    run_dir: Path
    meta: RunMeta
    samples: dict[str, Array]
    liquidation_trades: dict[str, Array] | None  # see `read_liquidation_trades`
    liquidations_triggered: dict[str, Array] | None  # LiquidationTriggered: account
    adl: dict[str, Array] | None  # AutoDeleveraged: time_ns, counterparty, qty_lots, price_ticks
    fund_changes: dict[str, Array] | None  # InsuranceFundChanged: time_ns, balance, symbol
    entries: dict[str, Array] | None
    stops: dict[str, Array] | None


def load_run(run_dir: Path) -> Run:
    """Reads a run directory; ReportError when it is not one or a file is malformed."""
    meta = read_meta(run_dir)
    samples = read_samples(run_dir)
    return Run(
        run_dir=run_dir,
        meta=meta,
        samples=samples,
        liquidation_trades=read_liquidation_trades(run_dir),
        liquidations_triggered=read_events(run_dir, "LiquidationTriggered", ["account"]),
        adl=read_events(
            run_dir,
            "AutoDeleveraged",
            ["time_ns", "counterparty_account", "qty_lots", "price_ticks"],
        ),
        fund_changes=read_events(
            run_dir, "InsuranceFundChanged", ["time_ns", "balance_atoms", "symbol"]
        ),
        entries=read_optional(
            run_dir,
            "entries",
            ["side", "leverage", "isolated", "entry_ticks", "liquidation_ticks"],
        ),
        stops=read_optional(run_dir, "stops", ["time_ns", "side", "slippage_bps"]),
    )


__all__ = [
    "SAMPLE_COLUMNS",
    "Array",
    "ReportError",
    "Run",
    "RunMeta",
    "event_count",
    "event_path",
    "load_run",
    "read_events",
    "read_liquidation_trades",
    "read_meta",
    "read_optional",
    "read_samples",
]
