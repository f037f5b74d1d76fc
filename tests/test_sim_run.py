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
    files = sorted((out / "events").glob("*.parquet"))
    assert {f.stem for f in files} >= {"TradeExecuted", "LiquidationTriggered", "OrderAccepted"}
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    assert rows == result.summary["events"]
    seqs = sorted(s for f in files for s in pq.read_table(f, columns=["seq"])["seq"].to_pylist())
    assert seqs == list(range(rows))  # every event once, numbered in order
    liq = pq.read_table(out / "events" / "LiquidationTriggered.parquet")
    assert liq.num_rows == result.summary["liquidations"]
    funding = pq.read_table(out / "events" / "FundingSettled.parquet")
    assert "event_time_ns" in funding.column_names  # the funding time, beside the step's time
    samples = pq.read_table(out / "samples.parquet")
    assert samples.num_rows == result.summary["steps"] == 121  # the start and 120 moves
    meta = json.loads((out / "meta.json").read_text())
    assert meta["summary"] == result.summary
    assert result.report_path is not None and result.report_path.stat().st_size > 1_000_000


def test_report_rebuilds_from_the_event_files_alone(
    mini_run: tuple[Any, Path], tmp_path: Path
) -> None:
    _, out = mini_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "report.html").unlink()
    done = perpex("report", str(copy / "events"))  # the event log's directory, or the run's
    assert done.returncode == 0, done.stderr
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert "Does everything hold together" in html
    assert "cdn.plot.ly/plotly" not in html


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
    ],
)
def test_cli_refuses_bad_input_with_one_line_and_exit_2(args: list[str], needle: str) -> None:
    done = perpex(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr


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
