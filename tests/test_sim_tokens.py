"""Leveraged tokens in the simulator (issue 14, item 6): the decay scenarios and their summary.

The frictionless runs must give MECHANICS.md §6.3's table to four decimals: after 30 days of
+5 % / -5 % both BTCUP3 and BTCDOWN3 end at 0.7108 of their NAV, after 10 days of +2 %
BTCUP3 ends at 1.7908 and BTCDOWN3 at 0.5386 (0.94^10). The default runs show what fees,
slippage and funding add on top. A run without tokens sums up exactly as before (the goldens
of test_sim_run hold that); here it has no `tokens` key and no report section.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from perpex.report import build_report
from perpex.report.figures_tokens import daily_returns, drag_log
from perpex.sim.paths import pattern
from perpex.sim.runner import SimResult, run
from perpex.sim.scenario import (
    ScenarioError,
    dumps_scenario,
    load_scenario,
    loads_scenario,
    parse_set,
    with_overrides,
)
from perpex.sim.scenario_model import PathSection, TokenConfig, TokensSection

DAY_NS = 86_400 * 10**9
SIDEWAYS = "token-decay-sideways"
TREND = "token-decay-trend"
TOKEN_KEYS = {
    "leverage", "nav_start", "nav_end", "nav_ratio", "rebalances", "fees_paid",
    "slippage_paid", "funding_paid",
}  # fmt: skip

# MECHANICS.md §6.3, the drag table: NAV after the path over NAV at the start.
SIDEWAYS_RETURNS = [0.05, -0.05] * 15
TREND_RETURNS = [0.02] * 10
TABLE = {
    (SIDEWAYS, "BTCUP3"): 0.7108,
    (SIDEWAYS, "BTCDOWN3"): 0.7108,
    (TREND, "BTCUP3"): 1.7908,
    (TREND, "BTCDOWN3"): 0.5386,
}


def _exact(name: str, token: str) -> float:
    """Π(1 + L r) of the scenario's returns: the table's figure before it was rounded."""
    returns = SIDEWAYS_RETURNS if name == SIDEWAYS else TREND_RETURNS
    leverage = 3.0 if token == "BTCUP3" else -3.0
    return math.prod(1 + leverage * r for r in returns)


_RUNS: dict[tuple[str, bool], SimResult] = {}


def _run(name: str, frictionless: bool, out: Path | None = None) -> SimResult:
    """One run per scenario and setting for the whole module (each takes well under 1 s)."""
    key = (name, frictionless)
    if out is not None or key not in _RUNS:
        scenario = with_overrides(load_scenario(name), {"tokens.frictionless": frictionless})
        result = run(scenario, seed=0, progress=False, out=out, report=out is not None)
        if out is not None:
            return result
        _RUNS[key] = result
    return _RUNS[key]


# -- §6.3 through the frictionless setting --------------------------------------------------------
def test_the_table_figures_are_the_arithmetic_of_the_paths() -> None:
    for (name, token), figure in TABLE.items():
        assert round(_exact(name, token), 4) == figure, (name, token)


@pytest.mark.parametrize(("name", "token"), list(TABLE), ids=lambda x: str(x))
def test_frictionless_nav_ratio_is_mechanics_6_3(name: str, token: str) -> None:
    tokens = _run(name, True).summary["tokens"]
    figures = tokens[token]
    ratio = figures["nav_end"] / figures["nav_start"]
    assert round(ratio, 4) == TABLE[(name, token)]
    # Whole lots of a 1,000,000 USDT pool and a tick of slippage: within 3e-5 of Π(1 + L r).
    assert abs(ratio - _exact(name, token)) < 3e-5
    assert figures["nav_ratio"] == round(ratio, 6)
    assert figures["fees_paid"] == 0.0 and figures["funding_paid"] == 0.0
    # a tick either side of the mark: at most 1/600,000 of the traded notional
    assert 0 < figures["slippage_paid"] < 100.0
    days = 30 if name == SIDEWAYS else 10
    assert figures["rebalances"] == days  # 00:02 of every day the clock passed


@pytest.mark.parametrize("name", [SIDEWAYS, TREND])
def test_frictionless_static_position_is_three_times_the_underlying(name: str) -> None:
    tokens = _run(name, True).summary["tokens"]
    returns = SIDEWAYS_RETURNS if name == SIDEWAYS else TREND_RETURNS
    underlying = math.prod(1 + r for r in returns) - 1
    assert tokens["underlying_return"] == pytest.approx(underlying, abs=2e-6)  # ticks
    assert tokens["static_3x_return"] == pytest.approx(3 * tokens["underlying_return"], abs=2e-5)
    # §6.3's last column: 3 x the underlying's return
    yardstick = {SIDEWAYS: 0.8894, TREND: 1.6570}[name]
    assert round(1 + tokens["static_3x_return"], 4) == yardstick


def test_sideways_costs_the_tokens_more_than_the_yardstick_and_the_trend_pays_up() -> None:
    side = _run(SIDEWAYS, True).summary["tokens"]
    trend = _run(TREND, True).summary["tokens"]
    assert side["BTCUP3"]["nav_ratio"] < 1 + side["static_3x_return"]  # drag
    assert side["BTCDOWN3"]["nav_ratio"] < 1 - 3 * side["underlying_return"]
    assert trend["BTCUP3"]["nav_ratio"] > 1 + trend["static_3x_return"]  # compounding
    assert trend["BTCDOWN3"]["nav_ratio"] > 1 - 3 * trend["underlying_return"]


# -- the default: fees, slippage and funding on top ------------------------------------------------
@pytest.mark.parametrize("name", [SIDEWAYS, TREND])
def test_frictions_cost_the_pools_fees_slippage_and_funding(name: str) -> None:
    free = _run(name, True).summary["tokens"]
    real = _run(name, False).summary["tokens"]
    hold = load_scenario(name).tokens.hold  # type: ignore[union-attr]
    for token in ("BTCUP3", "BTCDOWN3"):
        figures = real[token]
        assert figures["fees_paid"] > 0
        assert figures["slippage_paid"] > free[token]["slippage_paid"]  # a book, not a tick
        assert figures["rebalances"] == free[token]["rebalances"]
        # Fees and slippage always lower the NAV; funding is paid by longs to shorts here (the
        # premium is ~0, so the rate is the 0.01 % interest), so BTCDOWN3 receives some back.
        # Without what it received, every token ends below its frictionless self.
        received = max(-figures["funding_paid"], 0.0) / hold
        assert figures["nav_ratio"] - received < free[token]["nav_ratio"], token
    assert real["BTCUP3"]["funding_paid"] > 0 > real["BTCDOWN3"]["funding_paid"]
    assert real["BTCUP3"]["nav_ratio"] < free["BTCUP3"]["nav_ratio"]
    # the static position pays its fee, slippage and (as a long) funding too
    assert real["static_3x_return"] < free["static_3x_return"]
    assert real["underlying_return"] == free["underlying_return"]


# -- the summary ---------------------------------------------------------------------------------
def test_summary_tokens_object_is_plain_json_numbers() -> None:
    summary = _run(SIDEWAYS, False).summary
    tokens = summary["tokens"]
    assert list(tokens) == ["BTCUP3", "BTCDOWN3", "underlying_return", "static_3x_return"]
    for token in ("BTCUP3", "BTCDOWN3"):
        assert set(tokens[token]) == TOKEN_KEYS
        for key, value in tokens[token].items():
            assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert tokens[token]["nav_start"] == 100.0  # the first tokens are minted at 100 USDT
    assert json.loads(json.dumps(summary)) == summary
    assert list(summary)[:-1] == list(_run(SIDEWAYS, True).summary)[:-1]  # the usual keys


def test_same_seed_same_summary() -> None:
    first = _run(TREND, False).summary
    again = run(load_scenario(TREND), seed=0, progress=False).summary
    assert again == first


def test_every_command_keeps_the_invariants_with_tokens() -> None:
    # conservation (token pools included), the ledger, token supply = sum of balances
    checked = run(load_scenario(SIDEWAYS), seed=0, progress=False, check_invariants=True)
    assert checked.summary == _run(SIDEWAYS, False).summary


def test_run_without_tokens_has_no_tokens_key_and_no_section(tmp_path: Path) -> None:
    scenario = loads_scenario(
        """
name = "plain"
question = "Does a run without tokens stay as it was?"

[path]
kind = "pattern"
start = "2024-01-01T00:00:00Z"
steps = 5
step_seconds = 3600
returns = [0.01, -0.01]

[agents.makers]
count = 2
"""
    )
    result = run(scenario, seed=0, progress=False, out=tmp_path / "plain")
    assert "tokens" not in result.summary
    log = tmp_path / "plain" / "events"
    assert not (log / "tokens.parquet").exists()
    meta = json.loads((log / "meta.json").read_text(encoding="utf-8"))
    assert "tokens" not in meta and "tokens.parquet" not in meta["files"]
    assert result.report_path is not None
    page = result.report_path.read_text(encoding="utf-8")
    assert 'id="tokens"' not in page and "Leveraged tokens" not in page


# -- the run directory and the report -------------------------------------------------------------
def test_report_has_the_tokens_section_with_the_run_figures(tmp_path: Path) -> None:
    result = _run(SIDEWAYS, True, out=tmp_path / "side")
    assert result.report_path is not None
    page = result.report_path.read_text(encoding="utf-8")
    assert '<section id="tokens">' in page and 'id="chart-tokens"' in page
    assert "Leveraged tokens: NAV against the yardsticks</h2>" in page
    assert "buys high and" in page and "sells low" in page  # the why, in words
    assert "BTCUP3 (+3x) ended at 0.7108" in page and "BTCDOWN3 (-3x) ended at 0.7108" in page
    assert "Σ r² = 0.0750" in page  # 30 x 0.05²
    assert page.count("Plotly.newPlot(") == 7  # the six market charts and the tokens'

    log = tmp_path / "side" / "events"
    table = pq.read_table(log / "tokens.parquet").to_pydict()
    assert len(table["step"]) == result.summary["steps"] == 31
    nav = table["BTCUP3_nav_atoms"]
    assert nav[-1] == round(result.summary["tokens"]["BTCUP3"]["nav_end"] * 10**6)
    # after each +5 % day BTCUP3's leverage fell to 3 x 1.05 / 1.15 = 2.739 before the rebalance
    assert table["BTCUP3_leverage_ppm"][1] == pytest.approx(2_739_130, abs=200)
    assert table["BTCDOWN3_position_lots"][0] < 0 < table["BTCUP3_position_lots"][0]
    meta = json.loads((log / "meta.json").read_text(encoding="utf-8"))
    assert meta["tokens"]["frictionless"] is True
    assert [t["name"] for t in meta["tokens"]["list"]] == ["BTCUP3", "BTCDOWN3"]
    assert meta["files"]["tokens.parquet"] == 31
    # the event log alone, copied elsewhere, draws the same page, tokens section included
    shutil.copytree(log, tmp_path / "copy")
    assert build_report(tmp_path / "copy").read_bytes() == result.report_path.read_bytes()


def test_daily_returns_are_the_moves_each_rebalance_saw() -> None:
    # daily steps at 00:00: every step is one day's move
    times = np.arange(4, dtype=np.int64) * DAY_NS
    marks = np.array([100, 105, 99, 99], dtype=np.int64)
    assert daily_returns(times, marks).tolist() == pytest.approx([0.05, 99 / 105 - 1, 0.0])
    # hourly steps over two days: the last mark before each 00:02 counts
    hours = np.arange(48, dtype=np.int64) * 3_600 * 10**9
    marks = np.full(48, 100, dtype=np.int64)
    marks[24:] = 110  # day 1 from 00:00 on: seen by day 1's 00:02 rebalance
    assert daily_returns(hours, marks).tolist() == pytest.approx([0.10, 0.0])
    growth, drag = drag_log(3.0, np.array([0.05, -0.05]))
    assert drag == pytest.approx(-3 * 0.0050)
    assert growth == pytest.approx(3 * math.log(1.05 * 0.95))


# -- scenario keys and the pattern path ------------------------------------------------------------
def test_pattern_path_is_the_exact_compounding_rounded_once_per_step() -> None:
    path = pattern(600_000, 30, DAY_NS, [0.05, -0.05], start_ns=0)
    level = Fraction(600_000)
    expected = [600_000]
    for r in SIDEWAYS_RETURNS:
        level *= 1 + Fraction(Decimal(repr(r)))
        expected.append(round(level))  # half to even, as the path
    assert path.price_ticks.tolist() == expected
    assert path.time_ns.tolist() == [k * DAY_NS for k in range(31)]
    assert path.price_ticks[-1] == 577_890  # 600,000 x 0.9975^15 = 577,889.7
    with pytest.raises(ValueError, match="returns"):
        pattern(600_000, 3, DAY_NS, [])
    with pytest.raises(ValueError, match="> -1"):
        pattern(600_000, 3, DAY_NS, [-1.0])


def test_tokens_keys_read_write_and_set() -> None:
    scenario = load_scenario(SIDEWAYS)
    assert scenario.tokens == TokensSection()  # the shipped file spells out the defaults
    assert scenario.path is not None and scenario.path.returns == (0.05, -0.05)
    assert loads_scenario(dumps_scenario(scenario), scenario.source) == scenario
    free = with_overrides(scenario, parse_set(["tokens.frictionless=true"]))
    assert free.tokens is not None and free.tokens.frictionless
    twap = with_overrides(scenario, {"tokens.list[0].slices": 10})
    assert twap.tokens is not None and twap.tokens.list[0].slices == 10
    # [[tokens.list]] tables say the same as the inline array
    assert (
        loads_scenario(
            """
name = "x"
question = "q"
[path]
kind = "pattern"
returns = [0.01]
[tokens]
[[tokens.list]]
name = "BTCUP3"
leverage = 3
[[tokens.list]]
name = "BTCDOWN3"
leverage = -3
"""
        ).tokens
        == TokensSection()
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tokens.list[0].leverage", 0.0, "tokens.list[0].leverage: must be non-zero"),
        ("tokens.list[0].leverage", 3.0000001, "in steps of 1e-6"),
        ("tokens.list[1].name", "btcdown3", "tokens.list[1].name: must be 1-32 upper-case"),
        ("tokens.list[1].name", "BTCUP3", "tokens.list: must not name a token twice"),
        ("tokens.list[0].creation_fee", 0.2, "creation_fee: must be in [0, 0.1)"),
        ("tokens.list[0].slices", 0, "slices: must be in [1, 1440]"),
        ("tokens.hold", 10.0, "tokens.hold: must be in [100, 1e9]"),
        ("tokens.static_leverage", 11.0, "static_leverage: must be in [-10, 10]"),
        ("tokens.frictionless", 1, "must be true or false"),
        ("path.returns", [], "path.returns: must hold 1 to"),
        ("path.returns", [0.05, -1.0], "each be in (-1, 10]"),
        ("path.kind", "gbm", "path.returns: must be empty unless kind is 'pattern'"),
    ],
)
def test_bad_tokens_keys_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        with_overrides(load_scenario(SIDEWAYS), {key: value})


def test_docs_document_every_tokens_key_with_its_default() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "scenarios.md").read_text(encoding="utf-8")
    start = doc.index("## `[tokens]`")
    section = doc[start : doc.find("\n## ", start + 1)]
    top = doc[doc.index("## Top level") : doc.index("## `[data]`")]
    assert "| `[tokens]` |" in top
    for cls in (TokensSection, TokenConfig):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in section, f.name
            row = section.split(f"| `{f.name}` |", 1)[1].split("\n", 1)[0]
            if f.default is dataclasses.MISSING:
                assert "| required |" in row, f.name
            elif not isinstance(f.default, tuple):
                shown = str(f.default).lower() if isinstance(f.default, bool) else repr(f.default)
                assert f"`{shown}`" in row, (f.name, shown)
    path_doc = doc[doc.index("## `[path]`") : doc.index("## `[[shocks]]`")]
    assert "| `returns` | [float] | `[]` |" in path_doc
    assert "`pattern`" in path_doc
    assert PathSection().returns == ()
