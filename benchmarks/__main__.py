"""`python -m benchmarks` (what `make bench` runs): every benchmark module, one table.

Each module in `MODULES` exposes `run() -> list[dict]`, one dict per row with the keys
benchmark, metric, value, baseline, ratio and goal. A module that does not exist (yet) is
skipped with a note, so benchmarks can be added one file at a time. `--markdown` prints the
machine and the table as markdown (for docs/benchmarks.md); progress and notes go to stderr,
so stdout is exactly the document fragment.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

MODULES = [
    "bench_edge", "bench_book", "bench_engine", "bench_risk", "bench_journal", "bench_sim",
    "bench_sweep", "bench_server",
]  # fmt: skip
COLUMNS = ("benchmark", "metric", "value", "baseline", "ratio", "goal")

Row = dict[str, Any]


# -- the machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def core_count() -> str:
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    text = f"{logical} logical"
    if usable != logical:
        text += f" ({usable} usable by this process)"
    return text + "; the benchmarks use one"


def build_info() -> str:
    """Which perpex build runs: the pure-Python reference or the mypyc-compiled core."""
    import importlib.machinery
    import importlib.util
    import pkgutil

    import perpex.core

    compiled = []
    for module in pkgutil.iter_modules(perpex.core.__path__):
        spec = importlib.util.find_spec(f"perpex.core.{module.name}")
        origin = (spec.origin or "") if spec else ""
        if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            compiled.append(module.name)
    if not compiled:
        return "pure Python (the reference build)"
    return f"mypyc-compiled core ({len(compiled)} modules: {', '.join(sorted(compiled))})"


def machine_info() -> dict[str, str]:
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = "not installed"
    return {
        "Platform": platform.platform(),
        "CPU": cpu_model(),
        "Cores": core_count(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "NumPy": numpy_version,
        "perpex build": build_info(),
    }


# -- formatting ----------------------------------------------------------------------------------
def fmt_number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_ratio(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.2f}x" if abs(value) >= 0.1 else f"{value:.2g}x"
    return "-" if value is None else str(value)


def cells(row: Row) -> list[str]:
    return [
        str(row.get("benchmark", "?")),
        str(row.get("metric", "")),
        fmt_number(row.get("value")),
        fmt_number(row.get("baseline")),
        fmt_ratio(row.get("ratio")),
        str(row.get("goal", "")),
    ]


def markdown(info: dict[str, str], rows: Sequence[Row]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["Machine:", ""]
    lines += [f"- {key}: {esc(value)}" for key, value in info.items()]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(esc(c) for c in cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def rich_table(rows: Sequence[Row]) -> Table:
    table = Table(title="perpex benchmarks", title_justify="left")
    for name in COLUMNS:
        numeric = name in ("value", "baseline", "ratio")
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*cells(row))
    return table


# -- running -------------------------------------------------------------------------------------
def run_modules(names: Sequence[str], console: Console, transient: bool) -> tuple[list[Row], bool]:
    """All rows, and whether every module that exists ran cleanly."""
    rows: list[Row] = []
    ok = True
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=transient) as progress:
        task = progress.add_task("benchmarks", total=len(names))
        for name in names:
            progress.update(task, description=f"running {name}")
            started = time.perf_counter()
            qualified = f"{__package__ or 'benchmarks'}.{name}"
            try:
                module = importlib.import_module(qualified)
            except ModuleNotFoundError as exc:
                if exc.name == qualified:
                    progress.console.print(f"[yellow]note:[/] {name}: no such module yet, skipped")
                else:  # the module exists but imports something missing
                    ok = False
                    progress.console.print(f"[red]error:[/] {name}: {escape(str(exc))}")
                progress.advance(task)
                continue
            except Exception as exc:
                ok = False
                progress.console.print(f"[red]error:[/] {name}: import failed: {escape(repr(exc))}")
                progress.advance(task)
                continue
            run = getattr(module, "run", None)
            if not callable(run):
                ok = False
                progress.console.print(f"[red]error:[/] {name}: has no run()")
            else:
                try:
                    rows.extend(run())
                except Exception as exc:
                    ok = False
                    message = escape(repr(exc))
                    progress.console.print(f"[red]error:[/] {name}: run() failed: {message}")
                else:
                    elapsed = time.perf_counter() - started
                    progress.console.print(f"{name}: done in {elapsed:.1f} s")
            progress.advance(task)
        progress.update(task, description="benchmarks done")
    return rows, ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "modules", nargs="*", metavar="MODULE", help=f"run only these (default: {MODULES})"
    )
    args = parser.parse_args(argv)
    names = args.modules or MODULES
    info = machine_info()
    err = Console(stderr=True)
    if args.markdown:
        rows, ok = run_modules(names, err, transient=True)
        print(markdown(info, rows))
    else:
        out = Console() if sys.stdout.isatty() else Console(width=160)  # no wrapping in logs
        out.print("[bold]machine[/]")
        for key, value in info.items():
            out.print(f"  {key}: {value}", markup=False, highlight=False)
        rows, ok = run_modules(names, err, transient=False)
        out.print(rich_table(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
