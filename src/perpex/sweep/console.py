"""Sweeps on the terminal: the bodies of ``perpex sweep`` and ``perpex sweeps`` (wired to typer
by `perpex.cli`), and the aggregate as a rich table.

A mistake of the user's (an unknown sweep, a bad sweep file, a bad option, a ``--resume`` into
another sweep's directory) is one line on stderr and exit status 2, before any task runs. A
sweep stopped by ``--fail-fast`` (or by a lost worker) exits 1 with the failure on one line.
Tasks that failed in a sweep that went to its end are counted and shown, not fatal (exit 0).
Money in the table is USDT, as in the simulator's summary.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from perpex.sim.console import fail, list_shipped

DEFAULT_OUT: Final = Path("perpex-runs") / "sweeps"  # + the sweep's name
ERRORS_SHOWN: Final = 3  # failed tasks listed after the table (all are in tasks.parquet)
# (aggregate column, header, scale): P(ADL) is shown in percent
# (the terminal table keeps the headline figures; aggregate.parquet has every percentile)
FIGURE_COLUMNS: Final[tuple[tuple[str, str, float], ...]] = (
    ("p_adl", "P(ADL) %", 100.0),
    ("fund_drawdown_p50", "fund draw p50", 1.0),
    ("fund_drawdown_p95", "fund draw p95", 1.0),
    ("bad_debt_mean", "bad debt", 1.0),
    ("liquidated_notional_p50", "liquidated p50", 1.0),
)
MIN_WIDTH: Final = 130  # columns of the table when stdout is not a terminal (logs, CI)


def _number(value: float, scale: float) -> str:
    if math.isnan(value):
        return "-"  # no successful task at the point
    value *= scale
    if scale != 1.0:
        return f"{value:.1f}"  # a share in percent
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def aggregate_table(rows: list[dict[str, Any]], parameter_keys: list[str], title: str) -> Table:
    """One line per grid point: its labels, tasks and failures, then the figures (USDT)."""
    table = Table(title=title, title_justify="left")
    table.add_column("point", justify="right")
    for key in parameter_keys:
        table.add_column(key.rsplit(".", 1)[-1], overflow="fold")
    table.add_column("tasks", justify="right")
    table.add_column("failed", justify="right")
    for _, header, _ in FIGURE_COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        failed = row["failures"]
        table.add_row(
            str(row["point"]),
            *(str(row[key]) for key in parameter_keys),
            str(row["tasks"]),
            f"[red]{failed}[/red]" if failed else "0",
            *(_number(row[name], scale) for name, _, scale in FIGURE_COLUMNS),
        )
    return table


def sweep(
    name_or_path: str,
    *,
    backend: str,
    workers: int | None,
    address: str | None,
    out: str | None,
    resume: bool,
    fail_fast: bool,
) -> None:
    from perpex.sweep.runner import describe_failure, run_sweep
    from perpex.sweep.spec import load_sweep

    try:
        spec = load_sweep(name_or_path)
    except ValueError as exc:  # SweepError is one
        fail(str(exc))
        return
    out_dir = Path(out) if out is not None else DEFAULT_OUT / spec.name
    try:
        result = run_sweep(
            spec,
            backend=backend,
            workers=workers if workers is not None else max(1, os.cpu_count() or 1),
            address=address,
            out=out_dir,
            resume=resume,
            fail_fast=fail_fast,
            progress=True,
        )
    except ValueError as exc:  # a bad option, a resume into another sweep's directory
        fail(str(exc))
        return
    except KeyboardInterrupt:
        sys.stderr.write(
            f"interrupted: the finished tasks are in {out_dir / 'tasks.jsonl'};"
            " rerun with --resume to go on\n"
        )
        raise SystemExit(130) from None
    if result.stopped is not None:
        sys.stderr.write(f"error: {result.stopped}\n")
        raise SystemExit(1)

    console = Console() if sys.stdout.isatty() else Console(width=MIN_WIDTH)
    keys = [p.key for p in spec.parameters]
    console.print(aggregate_table(result.aggregate, keys, f"{spec.name}: aggregate per grid point"))
    console.print(f"[bold]question[/bold]  {spec.question}")
    console.print(
        f"tasks     {result.tasks:,} ({result.ran:,} run now, {result.skipped:,} resumed,"
        f" {result.failed:,} failed)"
    )
    for row in result.errors[:ERRORS_SHOWN]:
        console.print(f"[red]failed[/red]    {describe_failure(row)}", highlight=False)
    if result.failed > ERRORS_SHOWN:
        console.print(f"          ... and {result.failed - ERRORS_SHOWN} more in tasks.parquet")
    console.print(f"tasks     {result.tasks_path}")
    console.print(f"aggregate {result.aggregate_path}")
    if result.report_path is not None:
        console.print(f"report    {result.report_path}")
    else:
        console.print(f"[yellow]{result.report_note}[/yellow]", highlight=False)
    console.print(f"wall time {result.wall_seconds:.1f} s")


def sweeps(as_json: bool) -> None:
    from perpex.sweep.spec import shipped_sweeps

    list_shipped(shipped_sweeps(), "shipped sweeps (perpex sweep NAME)", as_json)


__all__ = ["DEFAULT_OUT", "aggregate_table", "sweep", "sweeps"]
