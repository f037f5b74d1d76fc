"""The simulator end to end: a scenario run through the engine by its agents.

Determinism across processes, the invariants after every command, the event files and the
report, golden summaries of two shipped scenarios, the mark-vs-last outcomes of the 2021-07-26
squeeze, and the CLI's answers to bad input. The long scenarios (covid, tariff, funding-drain)
run in `make bench`, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from perpex.sim.runner import run
from perpex.sim.scenario import load_scenario, with_overrides
from perpex.sim.scenario_model import Scenario
from perpex.sim.strategies import EmaCross

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("PERPEX_UPDATE_GOLDEN") == "1"

# A small world with every kind of agent: makers, a population with stops and exit ladders,
# noise and momentum takers, a whale; a drop, a liquidity gap and a pump on a GBM path.
MINI = """
name = "mini"
question = "Does everything hold together for a hundred steps?"

[path]
kind = "gbm"
start = "2024-03-01T07:00:00Z"
start_price = 60000
steps = 120
step_seconds = 60
sigma = 0.001

[[shocks]]
kind = "drop"
at = "1800"
percent = 12
minutes = 10

[[shocks]]
kind = "liquidity_gap"
at = "2400"
seconds = 300

[[shocks]]
kind = "pump"
at = "4800"
percent = 8
minutes = 5

[exchange]
insurance_fund = 5000

[agents.makers]
count = 2
size_scale = 0.05

[agents.traders]
count = 150
leverage = { kind = "choice", values = [5, 20, 50, 100] }
long_share = 0.7
stop_share = 0.4
ladder_share = 0.2
initial_share = 0.6

[agents.noise]
count = 10

[agents.momentum]
count = 5

[agents.whale]
at = "6000"
side = "SELL"
notional = 3000000
push = 0.03
steps = 3
hold_steps = 5
"""


@pytest.fixture(scope="module")
def mini_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "mini.toml"
    path.write_text(MINI, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mini_run(mini_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("run")
    result = run(load_scenario(mini_path), seed=7, out=out, progress=False, check_invariants=True)
    return result, out


def perpex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perpex.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


# -- one run, checked after every command --------------------------------------------------------
def test_invariants_hold_after_every_command(mini_run: tuple[Any, Path]) -> None:
    """`check_invariants=True` submitted every command alone and checked conservation, the
    fund >= 0 and the books after each; here the run's own figures are checked too."""
    s = mini_run[0].summary
    assert s["liquidations"] > 0, "the drop liquidates the 50x and 100x longs"
    assert s["long_liquidated_notional"] > s["short_liquidated_notional"]
    assert s["stop_orders_triggered"] > 0
    assert s["insurance_fund_min"] >= 0
    assert s["accounts_below_zero"] == 0 and s["bad_debt"] == 0  # non-recourse
    assert s["open_interest_min"] < s["open_interest_start"]
    assert s["commands"] > 1_000 and s["events"] > s["commands"]


def test_event_files_hold_every_event(mini_run: tuple[Any, Path]) -> None:
    result, out = mini_run
    log = out / "events"
    assert sorted(p.name for p in out.iterdir()) == ["events", "report.html"]
    files = sorted(f for f in log.glob("*.parquet") if f.stem[0].isupper())  # the engine's
    assert {f.stem for f in files} >= {"TradeExecuted", "LiquidationTriggered", "OrderAccepted"}
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    assert rows == result.summary["events"]
    seqs = sorted(s for f in files for s in pq.read_table(f, columns=["seq"])["seq"].to_pylist())
    assert seqs == list(range(rows))  # every event once, numbered in order
    liq = pq.read_table(log / "LiquidationTriggered.parquet")
    assert liq.num_rows == result.summary["liquidations"]
    funding = pq.read_table(log / "FundingSettled.parquet")
    assert "event_time_ns" in funding.column_names  # the funding time, beside the step's time
    samples = pq.read_table(log / "samples.parquet")
    assert samples.num_rows == result.summary["steps"] == 121  # the start and 120 moves
    meta = json.loads((log / "meta.json").read_text())
    assert meta["summary"] == result.summary
    # meta.json lists every table of the log with its rows, the simulator's and the engine's
    assert meta["files"] == {p.name: pq.read_metadata(p).num_rows for p in log.glob("*.parquet")}
    assert {"samples.parquet", "entries.parquet", "stops.parquet"} <= meta["files"].keys()
    assert result.events_path == log
    assert result.report_path is not None and result.report_path.stat().st_size > 1_000_000


def test_the_event_log_alone_copied_elsewhere_rebuilds_the_same_report(
    mini_run: tuple[Any, Path], tmp_path: Path
) -> None:
    _, out = mini_run
    copy = tmp_path / "elsewhere" / "mini-log"
    shutil.copytree(out / "events", copy)  # the log only: no run directory around it
    done = perpex("report", str(copy))
    assert done.returncode == 0, done.stderr
    page = (copy / "report.html").read_bytes()
    assert page == (out / "report.html").read_bytes()  # nothing in it names a path or a time
    assert b"Does everything hold together" in page and b"cdn.plot.ly/plotly" not in page
    done = perpex("report", str(out), "--out", str(tmp_path / "from-the-run.html"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from-the-run.html").read_bytes() == page


LOG_CUTS = [
    # (the file taken out of the copied log, the one line's tail)
    ("samples.parquet", "no samples.parquet, which meta.json lists (121 rows): the log is "
     "incomplete (copy the whole events directory)"),
    ("LiquidationTriggered.parquet", "no LiquidationTriggered.parquet, which meta.json lists"),
    ("meta.json", "is not a simulation run: it has no meta.json (a run's event log, "
     "RUN/events, holds meta.json, samples.parquet and one <EventKind>.parquet per event kind)"),
]  # fmt: skip


@pytest.mark.parametrize(("cut", "says"), LOG_CUTS, ids=[c for c, _ in LOG_CUTS])
def test_a_log_missing_a_table_is_one_line_and_exit_2(
    mini_run: tuple[Any, Path], tmp_path: Path, cut: str, says: str
) -> None:
    _, out = mini_run
    copy = tmp_path / "log"
    shutil.copytree(out / "events", copy)
    (copy / cut).unlink()
    done = perpex("report", str(copy))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"error: {copy}") and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (copy / "report.html").exists()


# -- determinism ----------------------------------------------------------------------------------
def test_same_seed_same_summary_in_two_processes(mini_path: Path, tmp_path: Path) -> None:
    """Two processes with different hash seeds give the same summary and state hash; another
    seed gives another run."""
    outs = []
    for i, hash_seed in enumerate(("0", "4242")):
        done = perpex(
            "simulate", str(mini_path), "--seed", "7", "--json", "--out", str(tmp_path / f"r{i}"),
            env={"PYTHONHASHSEED": hash_seed},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outs.append(json.loads(done.stdout))
    assert outs[0] == outs[1]
    other = run(load_scenario(mini_path), seed=8, progress=False)
    assert other.summary["state_hash"] != outs[0]["state_hash"]


def test_the_in_process_run_matches_the_cli(mini_run: tuple[Any, Path], mini_path: Path) -> None:
    again = run(load_scenario(mini_path), seed=7, progress=False)  # no files, no invariant pass
    assert again.summary == mini_run[0].summary


# -- golden summaries -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["liquidation-distance", "stop-slippage"])
def test_golden_summary(name: str) -> None:
    """A shipped scenario's summary, figure by figure. Regenerate on purpose only:
    PERPEX_UPDATE_GOLDEN=1 pytest tests/test_sim_run.py -k golden."""
    summary = run(load_scenario(name), seed=0, progress=False).summary
    path = GOLDEN / f"sim_{name}.json"
    if UPDATE:
        path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert summary == json.loads(path.read_text(encoding="utf-8"))


def test_liquidation_distance_follows_leverage() -> None:
    """The same fall liquidates 100x first and 5x last (about 100 % / leverage away, less the
    maintenance margin)."""
    result = run(load_scenario("liquidation-distance"), seed=0, progress=False)
    assert result.summary["long_liquidations"] == result.summary["liquidations"] > 0


# -- the squeeze: Binance's mark vs the last price ----------------------------------------------
def _squeeze(mark: str) -> dict[str, Any]:
    scenario: Scenario = with_overrides(
        load_scenario("squeeze-2021-07-26"),
        {"exchange.mark_price": mark, "agents.traders.count": 1_500},
    )
    return run(scenario, seed=0, progress=False).summary


def test_squeeze_binance_mark_spares_the_shorts_that_mark_last_liquidates() -> None:
    binance, last = _squeeze("binance"), _squeeze("last")
    assert binance["last_price_high"] > 47_000  # the wick is in the local book either way
    assert binance["short_liquidations"] * 5 < last["short_liquidations"]
    assert last["short_liquidated_notional"] > 5 * binance["short_liquidated_notional"]


# -- strategies -----------------------------------------------------------------------------------
def test_a_strategy_runs_with_the_crowd(mini_path: Path) -> None:
    strategy = EmaCross(fast=3, slow=8)
    result = run(load_scenario(mini_path), seed=7, strategy=strategy, progress=False)
    s = result.summary
    assert strategy.entries > 0 and strategy.fills > 0
    assert s["strategy_pnl"] != 0
    assert s["strategy_max_drawdown"] > 0


# -- the CLI's answers to bad input -------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "no-such-scenario"], "no-such-scenario"),
        (["simulate", "covid-2020-03-12", "--set", "exchange.insurance_fund=-5"], "insurance_fund"),
        (["simulate", "covid-2020-03-12", "--set", "exchange.nope=1"], "exchange.nope"),
        (["simulate", "covid-2020-03-12", "--set", "no equals sign"], "no equals sign"),
        (["simulate", "covid-2020-03-12", "--strategy", "nowhere:Nothing"], "nowhere"),
        (["simulate", "stop-slippage", "--data", "x.csv"], "--data"),
        (["simulate", "covid-2020-03-12", "--data", "/no/such/file.csv"], "no such file"),
        (["report", "/no/such/run"], "/no/such/run"),
        (["simulate", "liquidation-distance", "--out", __file__], "a file is in the way"),
    ],
)
def test_cli_refuses_bad_input_with_one_line_and_exit_2(args: list[str], needle: str) -> None:
    done = perpex(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def _flat_csv(path: Path, start: str, minutes: int, rows: int) -> Path:
    """`rows` flat candles of `minutes` from `start` (ISO, UTC) at 7,900 USDT."""
    from perpex.parse import start_time_ns

    t0_ms = start_time_ns(start) // 1_000_000
    lines = ["date,open,high,low,close,volume"]
    lines += [
        f"{t0_ms + i * minutes * 60_000},7900.0,7900.0,7900.0,7900.0,1.5" for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


DATA_REFUSALS = [
    # (scenario, file's start, minutes, rows, --set items, the one line's start)
    ("tariff-2025-10-10", "2024-01-01T00:00:00Z", 15, 8, [],
     "error: {f}: no candle opens in the scenario's window [2025-10-10T18:00:00Z, "
     "2025-10-11T00:00:00Z) (data.start, data.end); it has candles from 2024-01-01T00:00:00Z "
     "to 2024-01-01T01:45:00Z"),
    ("covid-2020-03-12", "2020-03-12T00:00:00Z", 15, 200, [],
     "error: {f}: the scenario's mark series BTCUSDT-1h-mark does not line up with these "
     "candles in the window (144 candles of 900 s, the mark 36 of 3600 s); add --set "
     "data.mark='' to let the exchange compute the mark from the index"),
    ("covid-2020-03-12", "2020-03-12T00:00:00Z", 60, 40,
     ["--set", "data.start=2019-10-01T00:00:00Z", "--set", "data.end=2019-10-02T00:00:00Z"],
     "error: {f}: no candle opens in the scenario's window [2019-10-01T00:00:00Z, "
     "2019-10-02T00:00:00Z) (data.start, data.end); it has candles from 2020-03-12T00:00:00Z "
     "to 2020-03-13T15:00:00Z"),
]  # fmt: skip


@pytest.mark.parametrize("case", DATA_REFUSALS, ids=lambda c: f"{c[0]}-{c[2]}m-{len(c[4])}")
def test_cli_data_outside_the_window_or_off_the_mark_is_one_line(
    case: tuple[str, str, int, int, list[str], str], tmp_path: Path
) -> None:
    name, start, minutes, rows, sets, line = case
    csv = _flat_csv(tmp_path / "mine.csv", start, minutes, rows)
    done = perpex("simulate", name, "--data", str(csv), "--json", "--out", str(tmp_path), *sets)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip() == line.format(f=csv), done.stderr


def test_a_scenario_window_before_the_mark_series_is_refused_naming_it() -> None:
    from perpex.sim.build import build_path
    from perpex.sim.data import DataError

    s = load_scenario("covid-2020-03-12").with_overrides(
        {"data.start": "2019-10-01T00:00:00Z", "data.end": "2019-10-02T00:00:00Z"}
    )
    with pytest.raises(DataError, match=r"^BTCUSDT-1h-mark: no candle opens in the scenario's "):
        build_path(s, 0)


@pytest.mark.parametrize(
    ("brackets", "leverage", "refused"),
    [("binance-2024-10-24", 500, True), ("binance-2024-10-24", 126, True),
     ("binance-2024-10-24", 125, False), ("binance-2026-05-07", 150, False),
     ("binance-2026-05-07", 151, True)],
)  # fmt: skip
def test_a_leverage_every_trader_would_have_capped_is_refused(
    brackets: str, leverage: int, refused: bool
) -> None:
    from perpex.sim.build import build_agents, build_exchange, build_path
    from perpex.sim.scenario import ScenarioError

    s = load_scenario("liquidation-distance").with_overrides(
        {"exchange.brackets": brackets, "agents.traders.leverage": leverage}
    )
    path = build_path(s, 0)
    ex = build_exchange(s, int(path.time_ns[0]))
    if not refused:
        assert build_agents(s, ex, path, None)[3] is not None
        return
    with pytest.raises(ScenarioError) as info:
        build_agents(s, ex, path, None)
    top = 150 if brackets.endswith("2026-05-07") else 125
    assert str(info.value) == (
        f"liquidation-distance: agents.traders.leverage: every draw ({leverage}x or more) is "
        f"above the market's top leverage {top}x (exchange.brackets, exchange.mmr_multiplier)"
    )


def test_cli_a_strategy_that_raises_is_one_line_and_exit_2(tmp_path: Path) -> None:
    source = tmp_path / "mine.py"
    source.write_text(
        "from perpex.sim.agents.strategy import Strategy\n\n\n"
        "class Oops(Strategy):\n"
        "    def on_bar(self, ctx, bar):\n"
        "        raise KeyError('close')\n",
        encoding="utf-8",
    )
    done = perpex(
        "simulate", "liquidation-distance", "--set", "path.steps=5", "--set", "shocks=none",
        "--set", "agents.traders.count=5", "--strategy", f"{source}:Oops", "--json",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.splitlines()[-1] == (
        "error: strategy mine:Oops raised KeyError in on_bar (bar 1, 2024-01-01T00:00:00Z), "
        "at mine.py line 6: 'close'"
    )
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_run_into_a_used_directory_leaves_none_of_the_old_files(tmp_path: Path) -> None:
    tokens = load_scenario("token-decay-trend")
    run(tokens, out=tmp_path, progress=False, report=False)
    log = tmp_path / "events"
    assert (log / "tokens.parquet").is_file()
    plain = load_scenario("liquidation-distance").with_overrides(
        {"path.steps": 5, "shocks": None, "agents.traders.count": 5}
    )
    run(plain, out=tmp_path, progress=False, report=False)
    assert not (log / "tokens.parquet").exists()  # the plain run has no tokens
    assert not (log / "TokensCreated.parquet").exists()
    assert json.loads((log / "meta.json").read_text())["scenario"] == "liquidation-distance"


SHOCK_OUTSIDE = [
    ({"path.steps": 90},
     "liquidation-distance: shocks[0]: it ends at 2024-01-01T03:00:00Z, after the path: the "
     "path runs from 2024-01-01T00:00:00Z to 2024-01-01T01:31:00Z (shorten the shock or "
     "lengthen path.steps / data.end)"),
    ({"shocks[0].at": "2023-01-01T00:00:00Z"},
     "liquidation-distance: shocks[0].at: 2023-01-01T00:00:00Z is outside the path: the path "
     "runs from 2024-01-01T00:00:00Z to 2024-01-01T04:01:00Z"),
    ({"shocks[1]": {"kind": "liquidity_gap", "at": "630", "seconds": 1}},
     "liquidation-distance: shocks[1]: no step of the path falls in [1704067830000000000, "
     "1704067831000000000): the window is shorter than a step"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), SHOCK_OUTSIDE, ids=["cut", "before", "short"])
def test_a_shock_outside_the_path_is_a_scenario_error(
    overrides: dict[str, object], message: str
) -> None:
    from perpex.sim.build import build_path
    from perpex.sim.scenario import ScenarioError

    with pytest.raises(ScenarioError) as info:
        build_path(load_scenario("liquidation-distance").with_overrides(overrides), 0)
    assert str(info.value) == message


def test_cli_lists_the_shipped_scenarios() -> None:
    done = perpex("scenarios", "--json")
    assert done.returncode == 0, done.stderr
    names = [row["name"] for row in json.loads(done.stdout)]
    assert names == sorted(names)
    assert set(names) >= {
        "covid-2020-03-12", "squeeze-2021-07-26", "tariff-2025-10-10", "oracle-manipulation",
        "funding-drain", "liquidation-distance", "stop-slippage",
    }  # fmt: skip


# -- the exchange's parameters reach the engine ----------------------------------------------
def test_exchange_parameters_reach_the_engine() -> None:
    from perpex.core.markets import compile_market
    from perpex.sim.build import build_exchange, build_market

    base = load_scenario("liquidation-distance")
    newer_scenario = base.with_overrides({"exchange.brackets": "binance-2026-05-07"})
    newer = compile_market(build_market(newer_scenario))
    assert newer.max_leverage == 150 and newer.brackets[0].cap_atoms == 300_000 * 10**6
    doubled = compile_market(build_market(base.with_overrides({"exchange.mmr_multiplier": 2.0})))
    plain = compile_market(build_market(base))
    assert [b.mmr_ppm for b in doubled.brackets[:3]] == [8_000, 10_000, 13_000]
    assert [b.mmr_ppm for b in plain.brackets[:3]] == [4_000, 5_000, 6_500]
    # MM stays continuous at each floor, and 1 / leverage stays above the MMR
    for lower, upper in zip(doubled.brackets, doubled.brackets[1:], strict=False):
        floor = upper.floor_atoms
        assert floor * lower.mmr_ppm // 10**6 - lower.cum_atoms == (
            floor * upper.mmr_ppm // 10**6 - upper.cum_atoms
        )
    assert all(10**6 // b.max_leverage > b.mmr_ppm for b in doubled.brackets)
    s = base.with_overrides(
        {"exchange.adl": False, "exchange.partial_liquidation": True,
         "exchange.clearance_fee": 0.01, "exchange.mark_price": "last", "exchange.taker_fee": 0.001}
    )  # fmt: skip
    ex = build_exchange(s, 1_700_000_000 * 10**9)
    config = ex.engine.liquidator.config
    assert (config.adl, config.partial_from_bracket, config.clearance_fee_ppm) == (False, 2, 10_000)
    assert ex.engine.state.markets["BTCUSDT"].spec.taker_fee_ppm == 1_000
    assert ex.engine.state.mark_mode == "last"
