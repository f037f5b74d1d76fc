"""HTML reports of simulation runs, rebuilt from a run's event log alone (no engine).

`build_report(run_dir)` (the run's directory, its ``events/`` or a copy of that) writes one
self-contained, offline plotly page: the scenario's question and what happened in words, then
prices with liquidations, open interest, liquidated notional per time, the insurance fund and
ADL, funding, book depth, liquidation distance by leverage, stop slippage and the strategy's
equity. `ReportError` when the directory is not a run, or its log lacks a table its meta.json
lists.

`build_sweep_report(out_dir)` does the same for a parameter sweep's output directory: the
smallest insurance fund that kept P(ADL) under the sweep's target, in words, and heatmaps.
"""

from perpex.report.files import ReportError
from perpex.report.html import build_report
from perpex.report.sweep_html import build_sweep_report

__all__ = ["ReportError", "build_report", "build_sweep_report"]
