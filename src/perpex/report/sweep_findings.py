"""The smallest insurance fund that kept a sweep's P(ADL) under its target, per setting of the
other parameters, and each finding in one plain sentence (text, not HTML).

"Kept under the target" is read strictly (P(ADL) < target) and for every larger fund on the
grid too; a smaller fund that passed while a larger one failed is named as noise, not picked.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from perpex.report.sweep_figures import Sweep, interval_words, percent, wilson


@dataclass(frozen=True)
class Finding:
    """For one setting of the parameters other than the fund: the aggregate row of the smallest
    fund on the grid from which P(ADL) stayed under the target (None: no such fund), the row
    with the lowest P(ADL) otherwise, and smaller funds that were under the target although a
    larger one was not (noise, named so that a reader does not pick them)."""

    setting: tuple[int, ...]  # a position on each axis of `sweep.others`
    row: int | None
    lowest_row: int | None
    noise: tuple[int, ...]  # aggregate rows


def findings(sweep: Sweep) -> list[Finding]:
    """One finding per setting of the other parameters, in grid order (last one fastest).

    "Kept under the target" is read strictly (P(ADL) < target) and for every larger fund on
    the grid too: a fund that passed once while a bigger one failed is luck of the seeds."""
    runs = sweep.runs
    p_adl = sweep.columns["p_adl"]
    measured = np.isfinite(p_adl) & (runs > 0)
    out: list[Finding] = []
    ranges = [range(len(sweep.axes[a].labels)) for a in sweep.others]
    for setting in itertools.product(*ranges):
        mask = measured.copy()
        for a, position in zip(sweep.others, setting, strict=True):
            mask &= sweep.positions[:, a] == position
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(sweep.positions[rows, sweep.x], kind="stable")]  # by fund
        passes = p_adl[rows] < sweep.target_p_adl
        # The first fund from which every larger one passes: after the last failure.
        failing = np.flatnonzero(~passes)
        first = 0 if len(failing) == 0 else int(failing[-1]) + 1
        row = int(rows[first]) if first < len(rows) else None
        noise = tuple(int(r) for r, ok in zip(rows[:first], passes[:first], strict=True) if ok)
        lowest = int(rows[np.argmin(p_adl[rows])]) if len(rows) else None
        out.append(Finding(tuple(setting), row, lowest, noise))
    return out


def _setting_words(sweep: Sweep, setting: tuple[int, ...]) -> str:
    parts = [sweep.axes[a].setting_words(p) for a, p in zip(sweep.others, setting, strict=True)]
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _point_words(sweep: Sweep, row: int) -> str:
    runs = int(sweep.runs[row])
    adl = int(sweep.adl_runs[row])
    share = float(sweep.columns["p_adl"][row])
    return (
        f"P(ADL) {percent(share)} over {runs:,} run{'s' if runs != 1 else ''}, "
        f"95 % interval {interval_words(adl, runs)}"
    )


def target_words(sweep: Sweep) -> str:
    """The target P(ADL) as the page writes it: 0.05 -> '5 %'."""
    target = sweep.target_p_adl
    return f"{target * 100:g} %"


def finding_sentence(sweep: Sweep, finding: Finding) -> str:
    """The finding in one plain sentence (text, not HTML)."""
    x = sweep.x_axis
    target = target_words(sweep)
    setting = _setting_words(sweep, finding.setting)
    if finding.row is None:
        where = f" with {setting}" if setting else ""
        if finding.lowest_row is None:
            return f"No grid point{where} has a successful run, so nothing can be said."
        lowest = finding.lowest_row
        return (
            f"No {x.name} on the grid kept P(ADL) under {target}{where}: the lowest was at "
            f"{x.value_words(int(sweep.positions[lowest, sweep.x]))} "
            f"({_point_words(sweep, lowest)})."
        )
    row = finding.row
    lead = f"With {setting}, the" if setting else "The"
    sentence = (
        f"{lead} smallest {x.name} that kept P(ADL) under {target} was "
        f"{x.value_words(int(sweep.positions[row, sweep.x]))} ({_point_words(sweep, row)})."
    )
    _, high = wilson(int(sweep.adl_runs[row]), int(sweep.runs[row]))
    if high >= sweep.target_p_adl:
        sentence += " The interval reaches the target, so more seeds are needed to be sure of it."
    if finding.noise:
        funds = ", ".join(x.value_words(int(sweep.positions[r, sweep.x])) for r in finding.noise)
        sentence += (
            f" ({funds} also came in under the target, but a larger {x.name} did not: "
            "read that as the luck of the seeds.)"
        )
    return sentence


__all__ = ["Finding", "finding_sentence", "findings", "target_words"]
