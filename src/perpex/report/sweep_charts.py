"""The chart sections of a sweep's page: which charts, in which order, with their captions.

P(ADL) over the fund × each other parameter (a line with error bars when there is none), then
the fund's drawdown and bad debt against the fund, per other parameter. The figures themselves
are drawn by `perpex.report.sweep_figures`.
"""

from __future__ import annotations

from perpex.report.layout import Section
from perpex.report.sweep_figures import Sweep, p_adl_heatmap, p_adl_line, tail_lines
from perpex.report.sweep_findings import target_words


def chart_sections(sweep: Sweep) -> list[Section]:
    """The charts: P(ADL) over x × each other parameter (a line when there is none), then the
    fund's drawdown and bad debt against x, per other parameter."""
    x = sweep.x_axis
    target = target_words(sweep)
    sections: list[Section] = []
    if not sweep.others:
        sections.append(
            Section(
                "p-adl",
                f"P(ADL) against {x.name}",
                f"P(ADL) at each {x.name} on the grid; the bars are the 95 % interval and the "
                f"dashed line the target of {target}.",
                p_adl_line(sweep),
            )
        )
        sections.append(
            Section(
                "losses",
                f"Fund drawdown and bad debt against {x.name}",
                _losses_caption(sweep, None),
                tail_lines(sweep, None),
            )
        )
        return sections
    pooled = len(sweep.others) > 1
    for a in sweep.others:
        axis = sweep.axes[a]
        rest = [sweep.axes[b].name for b in sweep.others if b != a]
        over = f" Each cell pools the runs of every value of {', '.join(rest)}." if pooled else ""
        sections.append(
            Section(
                f"p-adl-{a}",
                f"P(ADL) by {x.name} and {axis.name}",
                f"P(ADL) for each {x.name} (across) and {axis.name} (down); each cell gives the "
                f"share and n, the number of successful runs behind it. Green is under the "
                f"target of {target}, red above; hover a cell for its 95 % interval.{over}",
                p_adl_heatmap(sweep, a),
            )
        )
    for a in sweep.others:
        axis = sweep.axes[a]
        sections.append(
            Section(
                f"losses-{a}",
                f"Fund drawdown and bad debt by {x.name} and {axis.name}",
                _losses_caption(sweep, a),
                tail_lines(sweep, a),
            )
        )
    return sections


def _losses_caption(sweep: Sweep, y: int | None) -> str:
    per = "" if y is None else f" One line per {sweep.axes[y].name}."
    pooled = (
        " Points that differ only in the other parameters are averaged, weighted by their runs."
        if len(sweep.others) > (0 if y is None else 1)
        else ""
    )
    return (
        "Left: the insurance fund's drawdown (its balance at the start minus its lowest "
        "balance) that 95 % of runs stayed within, in USDT; it cannot exceed the fund itself. "
        "Right: the mean bad debt, the losses of bankrupt accounts that the fund could not "
        f"cover and ADL had to take, in USDT.{per}{pooled}"
    )


__all__ = ["chart_sections"]
