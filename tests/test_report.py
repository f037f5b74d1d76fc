"""The HTML report (perpex.report), built from a fake run directory with the runner's layout
(everything in its event log, RUN/events): a BTCUSDT crash with liquidations on both sides,
fund changes, ADL, entries, stops, a strategy. Then the log alone, the older layout (tables and
meta.json beside events/), and logs missing or mixing a table.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import plotly.offline
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpex.report import ReportError, build_report
from perpex.report.series import MAX_LINE_POINTS, minmax_indices, true_intervals

QUESTION = "How deep does a 20 % crash cut when the makers step away?"
START_NS = 1_584_000_000 * 1_000_000_000  # 2020-03-12 08:00 UTC
STEP_NS = 10_000_000_000  # 10 s
TICKS_PER_USDT = 10  # tick 0.1
ATOMS_PER_UNIT = 1_000_000
ATOMS_PER_TICK_LOT = 100
TITLES = (
    "Price and liquidations",
    "Open interest",
    "Liquidated notional per minute",
    "Insurance fund and ADL",
    "Funding",
    "Order book depth within 1 %",
    "Liquidation distance by leverage",
    "Stop-loss slippage",
    "Strategy equity and drawdown",
)


def _write(path: Path, columns: dict[str, Any], types: dict[str, pa.DataType]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items()})
    pq.write_table(table, path)


def _event_types(columns: dict[str, Any]) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {}
    for name, values in columns.items():
        first = values[0] if len(values) else 0
        if isinstance(first, bool | np.bool_):
            types[name] = pa.bool_()
        elif isinstance(first, str):
            types[name] = pa.string()
        else:
            types[name] = pa.int64()
    return types


def write_run(
    run_dir: Path,
    *,
    steps: int = 600,
    liquidations: bool = True,
    extras: bool = True,
    strategy: bool = True,
    trades_per_liquidation_step: int = 3,
    start_ns: int = START_NS,
) -> dict[str, Any]:
    """A fake run: price 65,000 falling 20 % between steps 200 and 300, partly recovering; the
    fills of liquidated longs through the fall and of shorts on the rebound; returns what the
    test needs to check the headline."""
    log = run_dir / "events"
    rng = np.random.default_rng(7)
    step = np.arange(steps, dtype=np.int64)
    time_ns = start_ns + STEP_NS * step
    crash = np.clip((step - steps // 3) / (steps / 6), 0, 1)
    rebound = np.clip((step - steps // 2) / (steps / 3), 0, 1)
    price_usdt = 65_000 * (1 - 0.2 * crash + 0.08 * rebound) + rng.normal(0, 30, steps)
    index_ticks = np.rint(price_usdt * TICKS_PER_USDT).astype(np.int64)
    last_ticks = index_ticks + rng.integers(-50, 50, steps)
    last_ticks[:3] = 0  # no trade yet
    away = (step > steps // 3 + 10) & (step < steps // 3 + 60)
    fund_atoms = np.full(steps, 200_000 * ATOMS_PER_UNIT, dtype=np.int64)
    fund_atoms[steps // 3 :] -= np.cumsum(rng.integers(0, 300, steps - steps // 3)) * (
        ATOMS_PER_UNIT
    )
    fund_atoms = np.maximum(fund_atoms, 20_000 * ATOMS_PER_UNIT)
    equity = 10_000 * ATOMS_PER_UNIT + np.cumsum(rng.integers(-20, 25, steps)) * ATOMS_PER_UNIT
    samples = {
        "step": step,
        "time_ns": time_ns,
        "target_ticks": index_ticks,
        "index_ticks": index_ticks,
        "mark_ticks": index_ticks + 3,
        "last_ticks": last_ticks,
        "open_interest_lots": np.maximum(1_500_000 - step * 500, 200_000),
        "insurance_fund_atoms": fund_atoms,
        "depth_bid_lots_1pct": np.where(away, 2_000, np.maximum(150_000 - step * 10, 50_000)),
        "depth_ask_lots_1pct": np.where(away, 3_000, 140_000),
        "funding_rate_e8": 10_000 - step * 30,
        "funding_paid_cum_atoms": step * 40 * ATOMS_PER_UNIT,
        "strategy_equity_atoms": equity if strategy else np.zeros(steps, np.int64),
        "makers_away": away,
    }
    types = {name: pa.int64() for name in samples}
    types["makers_away"] = pa.bool_()
    _write(log / "samples.parquet", samples, types)
    summary: dict[str, Any] = {
        "accounts_below_zero": 0,
        "liquidated_notional_atoms": 0,
        "traders": {"count": 10_000, "liquidated": 0},
        "adl_lots": 0,
    }
    facts: dict[str, Any] = {"liquidations": 0, "long_share_pct": 0}
    if liquidations:
        facts = _write_events(
            log, rng, step, time_ns, index_ticks, summary, trades_per_liquidation_step
        )
    if extras:
        facts["entries_per_bucket"] = _write_entries_and_stops(log, rng, time_ns, index_ticks)
    meta = {
        "scenario": "crash_20pct_makers_away",
        "question": QUESTION,
        "seed": 7,
        "symbol": "BTCUSDT",
        "tick_size": "0.1",
        "step_size": "0.001",
        "atoms_per_unit": ATOMS_PER_UNIT,
        "atoms_per_tick_lot": ATOMS_PER_TICK_LOT,
        "start_ns": int(time_ns[0]),
        "end_ns": int(time_ns[-1]),
        "step_ns": STEP_NS,
        "mark_price": "binance",
        "has_strategy": strategy,
        "strategy_deposit_atoms": 10_000 * ATOMS_PER_UNIT if strategy else 0,
        "summary": summary,
    }
    (log / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    list_files(log)
    return facts


def list_files(log: Path) -> None:
    """meta.json's ``files`` as the runner writes it: every table of the log, its rows."""
    meta = json.loads((log / "meta.json").read_text(encoding="utf-8"))
    meta["files"] = {p.name: pq.read_metadata(p).num_rows for p in sorted(log.glob("*.parquet"))}
    (log / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _write_events(
    log: Path,
    rng: np.random.Generator,
    step: np.ndarray,
    time_ns: np.ndarray,
    index_ticks: np.ndarray,
    summary: dict[str, Any],
    per_step: int,
) -> dict[str, Any]:
    steps = len(step)
    # Liquidated longs in the fall, shorts in the rebound, `per_step` fills per such step.
    long_steps = np.arange(steps // 3, steps // 2)
    short_steps = np.arange(steps // 2 + 5, steps // 2 + 40, 5)
    liq_step = np.repeat(np.concatenate([long_steps, short_steps]), per_step)
    liq_side = np.repeat(
        np.concatenate([np.full(len(long_steps), -1), np.full(len(short_steps), 1)]), per_step
    )
    n_liq = len(liq_step)
    normal_step = rng.integers(0, steps, 2 * n_liq)
    all_step = np.concatenate([liq_step, normal_step])
    order = np.argsort(all_step, kind="stable")
    all_step = all_step[order]
    is_liq = np.concatenate([np.ones(n_liq, bool), np.zeros(2 * n_liq, bool)])[order]
    side = np.concatenate([liq_side, rng.choice([-1, 1], 2 * n_liq)])[order]
    qty = rng.integers(1, 2_000, len(all_step))
    price = index_ticks[all_step] + rng.integers(-20, 20, len(all_step))
    liquidated = [f"trader-{i % 40}" for i in range(n_liq)]
    taker = np.array(liquidated + [f"taker-{i % 7}" for i in range(2 * n_liq)], dtype=object)[order]
    n = len(all_step)
    trades = {
        "seq": np.arange(n) * 3 + 10,
        "step": all_step,
        "time_ns": time_ns[all_step],
        "symbol": ["BTCUSDT"] * n,
        "trade_id": np.arange(1, n + 1),
        "price_ticks": price,
        "qty_lots": qty,
        "taker_side": side,
        "taker_order_id": np.arange(n) + 1_000,
        "maker_order_id": np.arange(n) + 5_000,
        "taker_account": taker.tolist(),
        "maker_account": ["maker-0"] * n,
        "taker_fee_atoms": qty * 10,
        "maker_fee_atoms": qty * 4,
        "taker_realized_pnl_atoms": -qty * 100,
        "maker_realized_pnl_atoms": qty * 100,
        "liquidation": is_liq,
    }
    _write(log / "TradeExecuted.parquet", trades, _event_types(trades))
    # One trigger per (step, account) of the liquidation fills.
    pairs = sorted(set(zip(liq_step.tolist(), liquidated, strict=True)))
    trig_step = np.array([p[0] for p in pairs], dtype=np.int64)
    triggered = {
        "seq": np.arange(len(pairs)),
        "step": trig_step,
        "time_ns": time_ns[trig_step],
        "account": [p[1] for p in pairs],
        "symbol": ["BTCUSDT"] * len(pairs),
        "isolated": [False] * len(pairs),
        "margin_balance_atoms": np.full(len(pairs), 1_000),
        "maint_margin_atoms": np.full(len(pairs), 2_000),
    }
    _write(log / "LiquidationTriggered.parquet", triggered, _event_types(triggered))
    fund_steps = trig_step[:20]
    fund = {
        "seq": np.arange(len(fund_steps)),
        "step": fund_steps,
        "time_ns": time_ns[fund_steps],
        "delta_atoms": np.full(len(fund_steps), -5_000_000),
        "balance_atoms": 150_000_000_000 - np.arange(len(fund_steps)) * 5_000_000_000,
        "reason": np.full(len(fund_steps), 3),
        "account": [f"trader-{i}" for i in range(len(fund_steps))],
        "symbol": ["BTCUSDT"] * len(fund_steps),
    }
    _write(log / "InsuranceFundChanged.parquet", fund, _event_types(fund))
    adl_step = np.array([steps // 2 - 4, steps // 2 - 4, steps // 2 - 2], dtype=np.int64)
    adl = {
        "seq": np.arange(3),
        "step": adl_step,
        "time_ns": time_ns[adl_step],
        "symbol": ["BTCUSDT"] * 3,
        "liquidated_account": ["trader-1", "trader-2", "trader-3"],
        "counterparty_account": ["short-9", "short-8", "short-9"],
        "qty_lots": np.array([1_000, 500, 250]),
        "price_ticks": index_ticks[adl_step],
    }
    _write(log / "AutoDeleveraged.parquet", adl, _event_types(adl))
    accepted = {
        "seq": np.arange(5),
        "step": np.arange(5),
        "time_ns": time_ns[:5],
        "order_id": np.arange(5),
        "account": ["a"] * 5,
        "symbol": ["BTCUSDT"] * 5,
        "side": np.ones(5, np.int64),
        "client_order_id": [None] * 5,
    }
    accepted_types = _event_types(accepted)
    accepted_types["client_order_id"] = pa.string()
    _write(log / "OrderAccepted.parquet", accepted, accepted_types)
    notional = price[is_liq].astype(np.int64) * qty[is_liq]
    long_notional = int(notional[side[is_liq] == -1].sum())
    summary["traders"]["liquidated"] = len(set(liquidated))
    return {
        "liquidations": len(pairs),
        "long_share_pct": round(100 * long_notional / int(notional.sum())),
    }


def _write_entries_and_stops(
    log: Path, rng: np.random.Generator, time_ns: np.ndarray, index_ticks: np.ndarray
) -> dict[str, int]:
    """Entries at 2x to 125x and stops; returns the entries with a liquidation price per
    leverage bucket (1-5x is 1 to 5, 5-10x is 6 to 10, ..., 100x+ above 100)."""
    steps = len(time_ns)
    n = 400
    leverage = rng.choice([2, 3, 5, 8, 10, 15, 20, 25, 50, 75, 100, 125], n)
    entry_step = rng.integers(0, steps, n)
    entry = index_ticks[entry_step]
    side = rng.choice([-1, 1], n)
    liq = entry - side * entry // leverage * 9 // 10
    liq_valid = leverage > 2  # a 2x long has no liquidation price here: nullable column
    entries = {
        "account": [f"trader-{i}" for i in range(n)],
        "step": entry_step,
        "time_ns": time_ns[entry_step],
        "side": side,
        "leverage": leverage,
        "isolated": rng.random(n) < 0.5,
        "entry_ticks": entry,
        "liquidation_ticks": [int(v) if ok else None for v, ok in zip(liq, liq_valid, strict=True)],
        "margin_atoms": rng.integers(10, 1_000, n) * ATOMS_PER_UNIT,
    }
    types = _event_types(entries)
    types["isolated"] = pa.bool_()
    _write(log / "entries.parquet", entries, types)
    m = 120
    stop_step = np.sort(rng.integers(steps // 3, steps // 2, m))
    stops = {
        "account": [f"trader-{i}" for i in range(m)],
        "time_ns": time_ns[stop_step],
        "step": stop_step,
        "side": np.full(m, -1),
        "stop_ticks": index_ticks[stop_step],
        "fill_ticks": index_ticks[stop_step] - 30,
        "slippage_bps": rng.gamma(2.0, 8.0, m),
    }
    types = _event_types(stops)
    types["slippage_bps"] = pa.float64()
    _write(log / "stops.parquet", stops, types)
    buckets = {"1-5x": (1, 5), "5-10x": (6, 10), "10-20x": (11, 20), "20-50x": (21, 50),
               "50-100x": (51, 100), "100x+": (101, 10_000)}  # fmt: skip
    return {
        label: int((liq_valid & (leverage >= lo) & (leverage <= hi)).sum())
        for label, (lo, hi) in buckets.items()
    }


def _data_bytes(page: str) -> int:
    return len(page.encode()) - len(plotly.offline.get_plotlyjs().encode())


# -- the full run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("run")
    facts = write_run(run_dir)
    out = build_report(run_dir)
    return out, out.read_text(encoding="utf-8"), facts


def test_report_written_next_to_the_run(full_run: tuple[Path, str, dict[str, Any]]) -> None:
    out, page, _ = full_run
    assert out.name == "report.html" and out.is_file()
    assert page.startswith("<!DOCTYPE html>")


def test_plotly_js_inlined_once_and_no_network(
    full_run: tuple[Path, str, dict[str, Any]],
) -> None:
    _, page, _ = full_run
    banner = plotly.offline.get_plotlyjs()[:200].splitlines()[1].strip()
    assert banner.startswith("* plotly.js v")
    assert page.count(banner) == 1
    assert not re.search(r"<script[^>]*\bsrc=", page, flags=re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref=", page, flags=re.IGNORECASE)
    # The bundle names its CDN once, as the default of the unused map-data option; the rest of
    # the page never refers to a network address.
    rest = page.replace(plotly.offline.get_plotlyjs(), "")
    assert len(rest) < len(page) - 4_000_000
    assert "cdn.plot.ly" not in rest and "https://" not in rest


def test_every_section_title_and_the_question(
    full_run: tuple[Path, str, dict[str, Any]],
) -> None:
    _, page, _ = full_run
    assert "crash_20pct_makers_away" in page
    assert QUESTION in page
    for title in TITLES:
        assert f"{title}</h2>" in page, title
    # Each of the nine charts is drawn, under a fixed id (the same run gives the same file).
    for key in (
        "price",
        "open-interest",
        "liquidations",
        "insurance",
        "funding",
        "depth",
        "leverage",
        "stops",
        "strategy",
    ):
        assert f'id="chart-{key}"' in page, key
    assert page.count("Plotly.newPlot(") == 9


def test_headline_tells_the_run_in_words(full_run: tuple[Path, str, dict[str, Any]]) -> None:
    _, page, facts = full_run
    headline = re.search(r'<p class="headline">(.*?)</p>', page, flags=re.DOTALL)
    assert headline is not None
    text = headline.group(1)
    assert f"{facts['liquidations']:,} liquidations were triggered" in text
    assert f"{facts['long_share_pct']} % of it longs" in text
    # The fund's events see a lower point than the end-of-step samples: the low is theirs.
    assert "the insurance fund went from 200,000 to a low of 55,000" in text
    assert "ADL fired 3 times" in text and "against 2 profitable accounts" in text
    assert "no account ended below zero" in text
    assert "120 stops fired" in text
    # The summary table shows the runner's keys, integers read by their unit suffix.
    assert "traders.liquidated" in page and "accounts_below_zero" in page
    assert "0.00 USDT" in page  # liquidated_notional_atoms: 0


def test_liquidation_distance_grouped_by_leverage(
    full_run: tuple[Path, str, dict[str, Any]],
) -> None:
    _, page, facts = full_run
    per_bucket = facts["entries_per_bucket"]
    assert sum(per_bucket.values()) < 400  # the 2x entries have no liquidation price
    labels = [f"{label}\\u003cbr\\u003en={count}" for label, count in per_bucket.items()]
    assert '"x":["' + '","'.join(labels) + '"]' in page
    assert f"{400 - sum(per_bucket.values())} entries without a liquidation price" in page


def test_data_part_stays_small(full_run: tuple[Path, str, dict[str, Any]]) -> None:
    _, page, _ = full_run
    assert _data_bytes(page) < 250_000


def test_same_run_same_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, steps=200)
    first = build_report(run_dir, tmp_path / "a.html").read_bytes()
    second = build_report(run_dir, tmp_path / "b.html").read_bytes()
    assert first == second
    assert not (run_dir / "report.html").exists()
    with pytest.raises(ReportError, match="cannot write the report"):
        build_report(run_dir, tmp_path / "no-such-dir" / "r.html")


# -- partial runs ---------------------------------------------------------------------------


def test_synthetic_path_counts_time_from_the_start(tmp_path: Path) -> None:
    run_dir = tmp_path / "gbm"
    write_run(run_dir, steps=120, start_ns=0)
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "minutes since the start" in page and "time (UTC)" not in page
    assert '"type":"date"' not in page


def test_run_without_optional_files_still_builds(tmp_path: Path) -> None:
    run_dir = tmp_path / "quiet"
    write_run(run_dir, steps=50, liquidations=False, extras=False, strategy=False)
    assert sorted(p.name for p in (run_dir / "events").iterdir()) == [
        "meta.json",
        "samples.parquet",
    ]  # no engine event, no entries, no stops
    page = build_report(run_dir).read_text(encoding="utf-8")
    for title in TITLES:
        assert f"{title}</h2>" in page, title
    assert "No position was liquidated" in page
    assert "ADL never fired" in page
    assert "No leveraged entries were recorded" in page
    assert "No stop order was triggered" in page
    assert "This scenario runs no strategy." in page
    assert page.count("Plotly.newPlot(") == 6  # the market charts only


def test_no_event_file_and_empty_stops(tmp_path: Path) -> None:
    run_dir = tmp_path / "empty-events"
    write_run(run_dir, steps=30, liquidations=False, extras=True, strategy=False)
    log = run_dir / "events"
    table = pq.read_table(log / "stops.parquet").slice(0, 0)
    pq.write_table(table, log / "stops.parquet")
    list_files(log)  # the runner writes an empty stops table when no stop fired
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "No stop order was triggered" in page
    assert "Liquidation distance by leverage</h2>" in page


# -- the event log alone, and the older layout --------------------------------------------------


def test_the_log_alone_anywhere_gives_the_same_page(
    full_run: tuple[Path, str, dict[str, Any]], tmp_path: Path
) -> None:
    out, page, _ = full_run
    copy = tmp_path / "somewhere" / "log"
    shutil.copytree(out.parent / "events", copy)
    assert build_report(copy).read_text(encoding="utf-8") == page
    assert (copy / "report.html").is_file()  # written into the directory named


def test_a_run_of_the_older_layout_still_reads(
    full_run: tuple[Path, str, dict[str, Any]], tmp_path: Path
) -> None:
    """Before the log held everything, meta.json and the tables sat beside events/."""
    out, page, _ = full_run
    old = tmp_path / "old"
    shutil.copytree(out.parent / "events", old / "events")
    for name in ("meta.json", "samples.parquet", "entries.parquet", "stops.parquet"):
        (old / "events" / name).rename(old / name)
    meta = json.loads((old / "meta.json").read_text())
    del meta["files"]  # an older run has no list
    (old / "meta.json").write_text(json.dumps(meta))
    assert build_report(old).read_text(encoding="utf-8") == page
    assert build_report(old / "events", tmp_path / "b.html").read_text(encoding="utf-8") == page


# -- not a run ------------------------------------------------------------------------------


def test_directory_without_meta_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"not a simulation run: it has no meta\.json"):
        build_report(tmp_path)
    (tmp_path / "events").mkdir()  # a run killed before it wrote its meta.json, last
    with pytest.raises(ReportError, match=r"events has no meta\.json: the run did not finish"):
        build_report(tmp_path)


def test_missing_directory_and_missing_samples_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="is not a directory"):
        build_report(tmp_path / "nowhere")
    run_dir = tmp_path / "run"
    write_run(run_dir, steps=20, liquidations=False, extras=False)
    (run_dir / "events" / "samples.parquet").unlink()
    with pytest.raises(ReportError, match=r"no samples\.parquet, which meta\.json lists \(20 "):
        build_report(run_dir)


def test_a_table_cut_or_from_another_run_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, steps=200)
    log = run_dir / "events"
    other = tmp_path / "other"
    write_run(other, steps=200, trades_per_liquidation_step=5)
    shutil.copy(other / "events" / "TradeExecuted.parquet", log / "TradeExecuted.parquet")
    with pytest.raises(ReportError, match=r"TradeExecuted\.parquet: [\d,]+ rows where meta\.json "):
        build_report(run_dir)
    meta = json.loads((log / "meta.json").read_text())
    meta["files"] = {"../samples.parquet": 200}
    (log / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ReportError, match=r"'files' has a bad entry '\.\./samples\.parquet'"):
        build_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_bad_meta_and_missing_column_are_named(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = run_dir / "events"
    write_run(run_dir, steps=20, liquidations=False, extras=False)
    meta = json.loads((log / "meta.json").read_text())
    del meta["question"]
    (log / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ReportError, match="no 'question'"):
        build_report(run_dir)
    assert issubclass(ReportError, ValueError)
    write_run(run_dir, steps=20, liquidations=False, extras=False)
    table = pq.read_table(log / "samples.parquet").drop_columns(["insurance_fund_atoms"])
    pq.write_table(table, log / "samples.parquet")
    with pytest.raises(ReportError, match=r"missing column.*insurance_fund_atoms"):
        build_report(run_dir)


# -- a long run -----------------------------------------------------------------------------


def test_long_run_is_thinned(tmp_path: Path) -> None:
    """15,000 steps, 50,000 liquidation fills in 2,500 steps (markers then grouped by time
    bucket): every array of the page stays within the point budget, the data under 2 MB."""
    run_dir = tmp_path / "long"
    write_run(run_dir, steps=15_000, trades_per_liquidation_step=20)
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert _data_bytes(page) < 2_000_000
    arrays = re.findall(r'"dtype":"(\w\d)","bdata":"([^"]*)"', page)
    assert len(arrays) > 20
    for dtype, data in arrays:
        values = len(base64.b64decode(data.replace("\\u002f", "/"))) // int(dtype[1])
        assert values <= MAX_LINE_POINTS + 2
    assert "Liquidated notional per 2 minutes</h2>" in page  # 42 h in at most 2,000 bars


# -- the thinning helpers -------------------------------------------------------------------


def test_minmax_keeps_spikes_and_ends() -> None:
    values = np.sin(np.arange(100_000) / 500.0)
    values[31_337] = -50.0  # a wick
    values[77_777] = np.nan  # a gap is never picked over a number
    keep = minmax_indices(values, 5_000)
    assert len(keep) <= 5_002
    assert keep[0] == 0 and keep[-1] == 99_999
    assert 31_337 in keep and 77_777 not in keep
    assert np.all(np.diff(keep) > 0)
    assert np.array_equal(minmax_indices(values[:10], 5_000), np.arange(10))


def test_intervals_of_a_mask_merge_past_the_limit() -> None:
    time_ns = np.arange(10, dtype=np.int64) * 10
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 1, 0, 1], dtype=bool)
    assert true_intervals(mask, time_ns, 10) == [(10, 30), (50, 60), (70, 80), (90, 100)]
    assert true_intervals(mask, time_ns, 10, max_intervals=2) == [(10, 30), (50, 100)]
    assert true_intervals(np.zeros(10, bool), time_ns, 10) == []
