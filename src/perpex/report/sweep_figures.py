"""A parameter sweep's results as the report sees them: the grid's axes in display order, the
aggregate pooled over the fund × one other parameter, Wilson intervals, and the plotly charts.

Inputs are the columns of a sweep's `aggregate.parquet` (one row per grid point; the reading
is `perpex.report.sweep_load`'s job). P(ADL) is a share of a point's successful runs (0..1);
fund drawdowns and bad debt are USDT floats. Everything here is display: floats are fine.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perpex.report.layout import style
from perpex.report.series import amount

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FUND_KEY = "exchange.insurance_fund"
"""The parameter whose smallest sufficient value the report looks for (USDT)."""

WILSON_Z = 1.959963984540054
"""The normal quantile of a two-sided 95 % interval."""

LINE_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""Colors of the lines, one per value of the parameter a line stands for (then repeated)."""


@dataclass(frozen=True)
class Axis:
    """One swept parameter: its dotted key, a name for sentences, its labels in display order
    (by value when every value is a number, else in the sweep file's order) and the numbers."""

    key: str
    name: str
    labels: tuple[str, ...]
    numbers: tuple[float, ...] | None = None

    @property
    def is_fund(self) -> bool:
        return self.key == FUND_KEY

    def text(self, position: int) -> str:
        """A value for display: a number in full (200,000) when the label is just that number,
        otherwise the label as written in the sweep file."""
        label = self.labels[position]
        if self.numbers is not None:
            number = self.numbers[position]
            try:
                plain = float(label) == number
            except ValueError:
                plain = False
            if plain:
                return _number(number)
        return label

    def value_words(self, position: int) -> str:
        """The value in a sentence: a fund with its unit, a category label in quotes."""
        text = self.text(position)
        if self.is_fund and self.numbers is not None:
            return f"{text} USDT"
        return text if self.numbers is not None else f"'{text}'"

    def setting_words(self, position: int) -> str:
        """'leverage 'aggressive'' or 'clearance fee 0.005'."""
        return f"{self.name} {self.value_words(position)}"


@dataclass(frozen=True)
class Failure:
    """One task that raised: where in the grid, which seed, and its error text."""

    point: int
    seed_index: int
    seed: int
    labels: tuple[str, ...]
    error: str


@dataclass(frozen=True)
class Sweep:
    """What the report reads from a sweep's output directory, checked and indexed.

    `positions[row, a]` is the place of aggregate row `row` on axis `a` (an index into
    `axes[a].labels`); `columns` holds the aggregate's numeric columns as float64 (NaN where
    null). `failures` is None when there is no tasks.parquet to list them from."""

    name: str
    question: str
    scenario: str | None
    fixed: tuple[tuple[str, str], ...]  # the [set] overrides: dotted key, value as text
    seeds: int
    target_p_adl: float
    axes: tuple[Axis, ...]
    x: int
    points: IntArray
    positions: IntArray
    columns: dict[str, FloatArray]
    failures: tuple[Failure, ...] | None

    @property
    def x_axis(self) -> Axis:
        """The axis on every chart's x: the insurance fund when it is swept, else the first."""
        return self.axes[self.x]

    @property
    def others(self) -> tuple[int, ...]:
        """The axes that are not on x, in the sweep file's order."""
        return tuple(a for a in range(len(self.axes)) if a != self.x)

    @property
    def runs(self) -> IntArray:
        """Successful runs of each point: the denominator of its P(ADL)."""
        tasks = np.nan_to_num(self.columns["tasks"]).astype(np.int64)
        failures = np.nan_to_num(self.columns["failures"]).astype(np.int64)
        runs: IntArray = np.maximum(tasks - failures, 0)
        return runs

    @property
    def adl_runs(self) -> IntArray:
        """Runs of each point with at least one ADL (P(ADL) × runs, back to a count)."""
        p_adl = np.nan_to_num(self.columns["p_adl"])
        return np.rint(p_adl * self.runs).astype(np.int64)


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return amount(value) if abs(value) >= 100 else f"{value:g}"


def percent(share: float, digits: int | None = None) -> str:
    """A share in 0..1 as '2.0 %' (one decimal under 10 %, none above), '–' when unknown."""
    if not math.isfinite(share):
        return "–"
    if digits is None:
        digits = 1 if share < 0.1 else 0
    return f"{share * 100:.{digits}f} %"


def wilson(adl_runs: int, runs: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson's score interval for a share of `adl_runs` in `runs` (95 % by default). Unlike
    p ± z·se it stays inside [0, 1] and is not empty at 0 or all: with 0 ADL in 100 runs the
    true P(ADL) may still be up to 3.7 %. (nan, nan) when there are no runs."""
    if runs <= 0:
        return math.nan, math.nan
    share = adl_runs / runs
    z2 = z * z
    scale = 1.0 + z2 / runs
    centre = (share + z2 / (2 * runs)) / scale
    half = z * math.sqrt(share * (1 - share) / runs + z2 / (4 * runs * runs)) / scale
    # At 0 or all the bound is exactly 0 or 1; the formula leaves a rounding crumb there.
    low = 0.0 if adl_runs <= 0 else max(0.0, centre - half)
    high = 1.0 if adl_runs >= runs else min(1.0, centre + half)
    return low, high


def interval_words(adl_runs: int, runs: int) -> str:
    low, high = wilson(adl_runs, runs)
    if not math.isfinite(low):
        return "–"
    return f"{percent(low)} – {percent(high)}"


@dataclass(frozen=True)
class Pivot:
    """A column over x (columns) × one other axis (rows; a single row when none), each cell
    the run-weighted mean over the grid points that share it, and the runs behind each cell."""

    values: FloatArray
    runs: IntArray
    adl_runs: IntArray


def pivot(sweep: Sweep, column: str, y: int | None) -> Pivot:
    """`column` pooled per (x, y) cell over the other parameters, weighted by successful runs,
    so P(ADL) of a cell is the share of all its runs that had ADL. Points without a value
    (NaN: no successful run) add nothing."""
    n_x = len(sweep.x_axis.labels)
    n_y = 1 if y is None else len(sweep.axes[y].labels)
    cell = sweep.positions[:, sweep.x] + (0 if y is None else sweep.positions[:, y] * n_x)
    values = sweep.columns[column]
    runs = sweep.runs
    known = np.isfinite(values) & (runs > 0)
    weights = np.where(known, runs, 0).astype(np.float64)
    sums = np.bincount(cell, weights=np.where(known, values, 0.0) * weights, minlength=n_x * n_y)
    totals = np.bincount(cell, weights=weights, minlength=n_x * n_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(totals > 0, sums / np.where(totals > 0, totals, 1.0), np.nan)
    cell_runs = np.bincount(cell, weights=runs, minlength=n_x * n_y).astype(np.int64)
    cell_adl = np.bincount(cell, weights=sweep.adl_runs, minlength=n_x * n_y).astype(np.int64)
    shape = (n_y, n_x)
    return Pivot(means.reshape(shape), cell_runs.reshape(shape), cell_adl.reshape(shape))


def _x_labels(sweep: Sweep) -> list[str]:
    axis = sweep.x_axis
    return [html.escape(axis.text(i)) for i in range(len(axis.labels))]


def _x_title(axis: Axis) -> str:
    unit = " (USDT)" if axis.is_fund and axis.numbers is not None else ""
    return f"{axis.name}{unit}"


def _p_adl_colorscale(target: float, top: float) -> list[list[Any]]:
    """Green under the target, yellow at it, red above: the colour says pass or fail first."""
    cut = min(max(target / top, 0.01), 0.99)
    return [
        [0.0, "#1a9850"],
        [cut * 0.999, "#d9ef8b"],
        [cut, "#fee08b"],
        [1.0, "#d73027"],
    ]


def p_adl_heatmap(sweep: Sweep, y: int) -> go.Figure:
    """P(ADL) over x (the fund) × axis `y`, pooled over the remaining parameters; each cell
    shows the share and the runs behind it, the hover adds the Wilson 95 % interval."""
    table = pivot(sweep, "p_adl", y)
    axis = sweep.axes[y]
    y_labels = [html.escape(axis.text(i)) for i in range(len(axis.labels))]
    texts: list[list[str]] = []
    intervals: list[list[str]] = []
    z: list[list[float | None]] = []
    for row in range(table.values.shape[0]):
        texts.append([])
        intervals.append([])
        z.append([])
        for col in range(table.values.shape[1]):
            share = float(table.values[row, col])
            runs = int(table.runs[row, col])
            known = math.isfinite(share) and runs > 0
            z[-1].append(share if known else None)
            texts[-1].append(f"{percent(share)}<br>n={runs:,}" if known else "no runs")
            intervals[-1].append(interval_words(int(table.adl_runs[row, col]), runs))
    finite = table.values[np.isfinite(table.values)]
    top = min(1.0, max(2 * sweep.target_p_adl, float(finite.max()) if len(finite) else 0.0))
    fig = go.Figure(
        go.Heatmap(
            x=_x_labels(sweep),
            y=y_labels,
            z=z,
            zmin=0.0,
            zmax=top,
            text=texts,
            texttemplate="%{text}",
            customdata=intervals,
            colorscale=_p_adl_colorscale(sweep.target_p_adl, top),
            colorbar={"title": {"text": "P(ADL)"}, "tickformat": ".0%"},
            hovertemplate=(
                f"{html.escape(sweep.x_axis.name)}: %{{x}}<br>{html.escape(axis.name)}: %{{y}}"
                "<br>P(ADL): %{z:.1%} (95 % interval %{customdata})<extra></extra>"
            ),
            xgap=2,
            ygap=2,
        )
    )
    longest = max(len(axis.text(i)) for i in range(len(axis.labels)))
    style(
        fig,
        None,
        height=max(260, 120 + 60 * len(y_labels)),
        hovermode="closest",
        # room for the longest label beside the axis title (about 7 px a character)
        margin={"l": min(300, 50 + 7 * longest), "r": 70, "t": 30, "b": 50},
    )
    fig.update_xaxes(type="category", title={"text": _x_title(sweep.x_axis)}, showgrid=False)
    # The sweep file's first value on top, as a table reads.
    fig.update_yaxes(
        type="category", title={"text": axis.name}, showgrid=False, autorange="reversed"
    )
    return fig


def _target_line(fig: go.Figure, target: float, row: int | None = None) -> None:
    where: dict[str, Any] = {} if row is None else {"row": row, "col": 1}
    fig.add_hline(
        y=target,
        line={"color": "#d62728", "dash": "dash", "width": 1},
        annotation_text=f"target {percent(target, 0 if target >= 0.01 else 1)}",
        annotation_position="top left",
        **where,
    )


def p_adl_line(sweep: Sweep) -> go.Figure:
    """P(ADL) against x with Wilson 95 % error bars and the target as a dashed line: the chart
    of a sweep whose only parameter is on x."""
    table = pivot(sweep, "p_adl", None)
    shares = table.values[0]
    lows, highs, texts = [], [], []
    for col, share in enumerate(shares):
        runs = int(table.runs[0, col])
        low, high = wilson(int(table.adl_runs[0, col]), runs)
        lows.append(share - low if math.isfinite(low) else None)
        highs.append(high - share if math.isfinite(high) else None)
        texts.append(
            f"n={runs:,}, 95 % interval {interval_words(int(table.adl_runs[0, col]), runs)}"
        )
    fig = go.Figure(
        go.Scatter(
            x=_x_labels(sweep),
            y=[float(v) if math.isfinite(v) else None for v in shares],
            mode="lines+markers",
            name="P(ADL)",
            line={"color": LINE_COLORS[0]},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": highs,
                "arrayminus": lows,
                "color": "#9ab",
            },
            text=texts,
            hovertemplate="%{x}: P(ADL) %{y:.1%} (%{text})<extra></extra>",
        )
    )
    _target_line(fig, sweep.target_p_adl)
    style(fig, None, height=360, hovermode="closest", showlegend=False)
    fig.update_xaxes(type="category", title={"text": _x_title(sweep.x_axis)})
    fig.update_yaxes(title={"text": "P(ADL)"}, tickformat=".0%", rangemode="tozero")
    return fig


TAIL_COLUMNS = (
    ("fund_drawdown_p95", "fund drawdown p95 (USDT)"),
    ("bad_debt_mean", "bad debt, mean (USDT)"),
)
"""The two loss columns drawn against x: how deep the fund is cut in a bad run (p95 of start
minus low), and the loss the fund could not cover, on average."""


def tail_lines(sweep: Sweep, y: int | None) -> go.Figure:
    """Fund drawdown p95 and mean bad debt against x, one line per value of axis `y` (one line
    when None), each pooled over the remaining parameters, side by side."""
    fig = make_subplots(
        rows=1,
        cols=len(TAIL_COLUMNS),
        subplot_titles=[title for _, title in TAIL_COLUMNS],
        horizontal_spacing=0.1,
    )
    x_labels = _x_labels(sweep)
    n_lines = 1 if y is None else len(sweep.axes[y].labels)
    for col, (column, _) in enumerate(TAIL_COLUMNS, start=1):
        table = pivot(sweep, column, y)
        for row in range(n_lines):
            name = "all runs" if y is None else html.escape(sweep.axes[y].text(row))
            values = [float(v) if math.isfinite(v) else None for v in table.values[row]]
            fig.add_trace(
                go.Scatter(
                    x=x_labels,
                    y=values,
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1 and y is not None,
                    line={"color": LINE_COLORS[row % len(LINE_COLORS)]},
                    hovertemplate=f"{name}<br>%{{x}}: %{{y:,.0f}} USDT<extra></extra>",
                ),
                row=1,
                col=col,
            )
    style(fig, None, height=360, hovermode="closest")
    fig.update_xaxes(type="category", title={"text": _x_title(sweep.x_axis)})
    fig.update_yaxes(rangemode="tozero", tickformat="~s")
    # The legend above the panels' titles, not over them.
    fig.update_layout(margin={"t": 90}, legend={"y": 1.14})
    return fig


__all__ = [
    "FUND_KEY",
    "LINE_COLORS",
    "TAIL_COLUMNS",
    "WILSON_Z",
    "Axis",
    "Failure",
    "Pivot",
    "Sweep",
    "interval_words",
    "p_adl_heatmap",
    "p_adl_line",
    "percent",
    "pivot",
    "tail_lines",
    "wilson",
]
