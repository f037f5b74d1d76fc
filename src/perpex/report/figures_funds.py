"""The money charts: the insurance fund with auto-deleveraging (ADL), and funding.

Inputs are a loaded `Run`: the samples' fund balance and funding (atoms, rate in 1e-8), the
`InsuranceFundChanged` and `AutoDeleveraged` events. USDT floats are for display only.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perpex.report.figures_market import bar_bucket_ns, bar_x, line, time_axis
from perpex.report.layout import ADL_COLOR, FUND_COLOR, LAST_COLOR, MARK_COLOR, Section, style
from perpex.report.load import Run
from perpex.report.series import amount, bucket_sums, bucket_words, compact


def fund_low_atoms(run: Run) -> int:
    """The insurance fund's lowest balance: of the end-of-step samples and, since the fund can
    dip and recover inside one step, of its own `InsuranceFundChanged` events."""
    low_atoms = int(run.samples["insurance_fund_atoms"].min())
    changes = run.fund_changes
    if changes is not None and len(changes["balance_atoms"]):
        own = changes["symbol"] == run.meta.symbol
        if own.any():
            low_atoms = min(low_atoms, int(changes["balance_atoms"][own].min()))
    return low_atoms


def insurance_section(run: Run) -> Section:
    axis = time_axis(run)
    s = run.samples
    fund_usdt = run.meta.usdt(s["insurance_fund_atoms"])
    adl = run.adl
    has_adl = adl is not None and len(adl["qty_lots"]) > 0
    rows = 2 if has_adl else 1
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.72, 0.28] if has_adl else None,
    )
    fig.add_trace(
        line(
            axis,
            s["time_ns"],
            fund_usdt,
            "insurance fund",
            FUND_COLOR,
            fill="tozeroy",
            fillcolor="rgba(44,160,44,0.10)",
        ),
        row=1,
        col=1,
    )
    fig.update_yaxes(title={"text": "fund (USDT)"}, row=1, col=1)
    adl_words = "Auto-deleveraging (ADL) never fired."
    if adl is not None and has_adl:
        bucket_ns = bar_bucket_ns(run)
        usdt = adl["price_ticks"] * adl["qty_lots"] * run.meta.usdt_per_tick_lot
        starts, sums = bucket_sums(adl["time_ns"], usdt, axis.start_ns, axis.end_ns, bucket_ns)
        x, width = bar_x(axis, starts, bucket_ns)
        fig.add_trace(
            go.Bar(
                x=x,
                y=sums,
                width=width,
                name="ADL notional",
                marker={"color": ADL_COLOR, "line": {"width": 0}},
            ),
            row=2,
            col=1,
        )
        fig.update_yaxes(title={"text": f"ADL USDT / {bucket_words(bucket_ns)}"}, row=2, col=1)
        adl_words = (
            f"The lower panel is auto-deleveraging (ADL): {len(usdt):,} "
            f"close{'s' if len(usdt) != 1 else ''}, "
            f"{compact(float(usdt.sum()))} USDT of notional, per {bucket_words(bucket_ns)}. ADL "
            "closes profitable opposite positions at the bankrupt one's price when the fund "
            "cannot absorb a loss."
        )
    style(fig, axis, height=460 if has_adl else 340, rows=rows, bargap=0)
    low_usdt = float(run.meta.usdt(fund_low_atoms(run)))
    inside = (
        f" (inside a step it touched {amount(low_usdt)}, below any end-of-step value)"
        if low_usdt < float(fund_usdt.min())
        else ""
    )
    caption = (
        "The insurance fund's balance at the end of each step. It grows with the clearance "
        "fees of liquidations closed better than their bankruptcy price and pays the deficit "
        f"of those closed worse. It went from {amount(float(fund_usdt[0]))} to a low of "
        f"{amount(float(fund_usdt.min()))}{inside} and ended at "
        f"{amount(float(fund_usdt[-1]))} USDT. " + adl_words
    )
    return Section("insurance", "Insurance fund and ADL", caption, fig)


def funding_section(run: Run) -> Section:
    axis = time_axis(run)
    s = run.samples
    rate_pct = s["funding_rate_e8"] / 1e6  # 1e-8 units -> percent
    paid_usdt = run.meta.usdt(s["funding_paid_cum_atoms"])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        line(axis, s["time_ns"], rate_pct, "funding rate (%)", MARK_COLOR, line={"shape": "hv"}),
        secondary_y=False,
    )
    fig.add_trace(
        line(
            axis,
            s["time_ns"],
            paid_usdt,
            "funding paid, cumulative (USDT)",
            LAST_COLOR,
            line={"dash": "dot"},
        ),
        secondary_y=True,
    )
    style(fig, axis, height=340)
    fig.update_yaxes(title={"text": "rate per period (%)"}, secondary_y=False)
    fig.update_yaxes(title={"text": "paid so far (USDT)"}, secondary_y=True, showgrid=False)
    caption = (
        "The funding rate (orange, % of the position's notional per funding period, the "
        "current predicted rate between settlements): positive, longs pay shorts; negative, "
        "shorts pay longs. The dotted line is the funding paid so far by the paying side, in "
        f"USDT ({compact(float(paid_usdt[-1]))} USDT by the end). The rate ranged from "
        f"{rate_pct.min():+.4f} % to {rate_pct.max():+.4f} %."
    )
    return Section("funding", "Funding", caption, fig)


__all__ = ["fund_low_atoms", "funding_section", "insurance_section"]
