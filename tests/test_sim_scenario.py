"""perpex.sim.scenario: scenario TOML files read strictly into `Scenario`, and back; overrides.

Every refusal names the key's dotted path and the reason in one line; the shipped scenarios
load, round-trip exactly, and their calibration says what their comments claim (figures from
/work/shared/CRASHES.md and the data README's "Crash coverage").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import perpex.sim.scenario as scenario_module
import perpex.sim.scenario_writer as scenario_writer
from perpex.parse import start_time_ns
from perpex.sim.agents.base import Dist
from perpex.sim.agents.config import (
    MakerConfig,
    MomentumConfig,
    NoiseConfig,
    StrategyConfig,
    TraderConfig,
    WhaleConfig,
)
from perpex.sim.data import SHIPPED, load_candles
from perpex.sim.scenario import (
    ScenarioError,
    dumps_scenario,
    load_scenario,
    loads_scenario,
    parse_set,
    read_scenario,
    scenario_to_raw,
    shipped_scenarios,
    with_overrides,
)
from perpex.sim.scenario_model import (
    DataSection,
    ExchangeSection,
    PathSection,
    Scenario,
    ShockSpec,
)

SCENARIO_DIR = Path(scenario_module.__file__).parent / "scenarios"
SHIPPED_NAMES = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
EXPECTED_NAMES = [
    "covid-2020-03-12",
    "funding-drain",
    "liquidation-distance",
    "live",
    "oracle-manipulation",
    "squeeze-2021-07-26",
    "stop-slippage",
    "tariff-2025-10-10",
    "token-decay-sideways",  # issue 14's two
    "token-decay-trend",
]
NS = 10**9


# -- the shipped scenarios ------------------------------------------------------------------------
def test_the_shipped_scenarios_are_those_of_issues_12_and_14() -> None:
    assert SHIPPED_NAMES == EXPECTED_NAMES
    assert [name for name, _ in shipped_scenarios()] == EXPECTED_NAMES


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_shipped_scenario_loads_and_round_trips(name: str) -> None:
    s = load_scenario(name)
    assert s.name == name
    assert s.source == name
    assert read_scenario(scenario_to_raw(s), s.source) == s
    assert loads_scenario(dumps_scenario(s), s.source) == s
    # The file itself: comments first, then a one-line question.
    text = (SCENARIO_DIR / f"{name}.toml").read_text(encoding="utf-8")
    assert text.startswith("#")
    assert len(re.findall(r'^question = ".+\?"$', text, re.MULTILINE)) == 1
    assert dict(shipped_scenarios())[name] == s.question


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_shipped_scenario_loads_by_path_too(name: str) -> None:
    path = SCENARIO_DIR / f"{name}.toml"
    by_path = load_scenario(path)
    assert by_path.source == str(path)
    assert dataclasses.replace(by_path, source=name) == load_scenario(name)


@pytest.mark.parametrize("name", [n for n in EXPECTED_NAMES if load_scenario(n).data is not None])
def test_replays_cover_whole_candles_of_shipped_series(name: str) -> None:
    data = load_scenario(name).data
    assert data is not None
    assert data.candles in SHIPPED and (data.mark == "" or data.mark in SHIPPED)
    start_ns, end_ns = start_time_ns(data.start), start_time_ns(data.end)
    for series in filter(None, (data.candles, data.mark)):
        candles = load_candles(series, start=data.start, end=data.end)
        assert len(candles.time_ns) == (end_ns - start_ns) // candles.interval_ns
        assert int(candles.time_ns[0]) == start_ns


def test_covid_black_thursday_calibration() -> None:
    s = load_scenario("covid-2020-03-12")
    assert s.data == DataSection(
        candles="BTCUSDT-1h", mark="BTCUSDT-1h-mark", funding="binance",
        start="2020-03-12T00:00:00Z", end="2020-03-13T12:00:00Z", steps_per_candle=60,
    )  # fmt: skip
    traders = s.agents.traders
    assert traders is not None and traders.count == 10_000
    assert traders.long_share == 0.7 and traders.reenter_side == "trend"
    assert traders.leverage.kind == "lognormal" and traders.leverage.high >= 100
    assert s.agents.makers is not None and s.agents.makers.count == 4
    assert s.exchange.insurance_fund == 200_000 and s.exchange.clearance_fee == 0.005


def test_squeeze_band_lets_the_wick_trade_and_shorts_sit_between_mark_and_wick() -> None:
    s = load_scenario("squeeze-2021-07-26")
    wick, mark_high, open_2000 = 48_168.6, 39_744.8, 34_427.3  # 1h candles, data README
    assert mark_high * (1 + s.exchange.price_band) > wick
    traders = s.agents.traders
    assert traders is not None and traders.long_share <= 0.3
    lev = traders.leverage
    assert lev.kind == "choice"
    weights = lev.weights or (1.0,) * len(lev.values)
    mmr = 0.004  # bracket 1 (MECHANICS.md): isolated short liq = entry (1 + 1/L) / (1 + mmr)
    between = sum(
        w for v, w in zip(lev.values, weights, strict=True)
        if mark_high < open_2000 * (1 + 1 / v) / (1 + mmr) < wick
    )  # fmt: skip
    assert between / sum(weights) >= 0.8


def test_tariff_replays_15m_candles_with_a_computed_mark() -> None:
    s = load_scenario("tariff-2025-10-10")
    assert s.data is not None and s.data.candles == "BTCUSDT-15m" and s.data.mark == ""
    assert s.data.steps_per_candle == 15
    assert s.agents.makers is not None and s.agents.makers.pull_max == 0.95
    assert s.agents.makers.pull_max >= 0.9 and s.agents.traders is not None
    assert s.agents.traders.long_share == 0.85


def test_synthetic_scenarios_shocks_lie_inside_their_paths() -> None:
    for name in EXPECTED_NAMES:
        s = load_scenario(name)
        if s.path is None:
            continue
        length_s = s.path.steps * s.path.step_seconds
        for shock in s.shocks:
            duration_s = shock.minutes * 60 + shock.seconds
            assert float(shock.at) >= 0 and float(shock.at) + duration_s <= length_s, name


def test_liquidation_distance_every_cohort_in_bracket_one_and_reached_by_the_fall() -> None:
    s = load_scenario("liquidation-distance")
    traders = s.agents.traders
    assert traders is not None and traders.margin.kind == "fixed"
    assert traders.leverage.values == (5, 10, 20, 50, 100) and not traders.leverage.weights
    assert traders.margin.value * max(traders.leverage.values) <= 50_000  # bracket 1 cap
    (fall,) = s.shocks
    assert fall.kind == "drop" and fall.percent > 100 / 5  # the 5x cohort is reached too
    assert traders.long_share == 1.0 and traders.stop_share == 0 and traders.reenter_share == 0


def test_funding_drain_replays_february_2021_rates() -> None:
    s = load_scenario("funding-drain")
    assert s.path is not None and s.path.funding == "binance"
    assert s.path.start == "2021-02-01T00:00:00Z"
    assert s.path.steps * s.path.step_seconds == 28 * 86_400  # all of February
    assert s.agents.traders is not None and s.agents.traders.stop_share == 0


def test_oracle_and_stop_scenarios() -> None:
    oracle = load_scenario("oracle-manipulation")
    assert oracle.agents.whale == WhaleConfig(
        deposit=50_000_000.0, leverage=10, at="3600", side="BUY", notional=200_000_000.0,
        push=0.10, steps=3, hold_steps=20,
    )  # fmt: skip
    assert oracle.exchange.price_band > oracle.agents.whale.push
    # The makers requote around the unmoved index: only a ladder reaching past the push lets
    # the whale's market orders walk the last price that far.
    assert oracle.agents.makers is not None
    assert oracle.agents.makers.max_distance > oracle.agents.whale.push
    stops = load_scenario("stop-slippage")
    assert [(k.kind, k.at) for k in stops.shocks] == [("drop", "3600")]
    assert stops.agents.makers is not None and stops.agents.makers.vol_threshold >= 100
    assert stops.agents.traders is not None and stops.agents.traders.stop_share == 1.0


# -- a bad file is one line naming the key and the reason --------------------------------------
BASE = """\
name = "t"
question = "What?"

[path]
steps = 10

[exchange]
mark_price = "binance"

[agents.makers]
levels = 20

[agents.traders]
count = 10
leverage = { kind = "lognormal", median = 10, sigma = 0.8 }
"""
LOGNORMAL = 'kind = "lognormal", median = 10, sigma = 0.8'


def edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


@dataclass(frozen=True)
class Bad:
    name: str
    text: str
    message: str  # the whole message after "t.toml: ", or a prefix of it ending in "..."


BAD = [
    Bad("unknown top-level key", BASE + 'colour = "red"\n',
        "agents.traders.colour: unknown key (the keys here are count, margin, ..."),
    Bad("unknown top-level key before any table", 'colour = "red"\n' + BASE,
        "colour: unknown key (the keys here are name, question, symbol, ..."),
    Bad("misspelt top-level table", edit("[agents.makers]", "[agent.makers]"),
        "agent: unknown key (did you mean 'agents'?)"),
    Bad("misspelt nested key", edit("count = 10", "levrage = 10"),
        "agents.traders.levrage: unknown key (did you mean 'leverage'?)"),
    Bad("source is not a key", 'source = "x"\n' + BASE, "source: unknown key ..."),
    Bad("string for int", edit("count = 10", 'count = "10"'),
        "agents.traders.count: must be an integer, got '10'"),
    Bad("bool for int", edit("count = 10", "count = true"),
        "agents.traders.count: must be an integer, got true"),
    Bad("float for int", edit("count = 10", "count = 10.0"),
        "agents.traders.count: must be an integer, got 10.0"),
    Bad("nan for float", edit('mark_price = "binance"', "insurance_fund = nan"),
        "exchange.insurance_fund: must be finite, got nan"),
    Bad("inf for float", edit("steps = 10", "sigma = inf"), "path.sigma: must be finite, got inf"),
    Bad("string for float", edit('mark_price = "binance"', 'clearance_fee = "0.5%"'),
        "exchange.clearance_fee: must be a number, got '0.5%'"),
    Bad("int for bool", edit('mark_price = "binance"', "adl = 1"),
        "exchange.adl: must be true or false, got 1"),
    Bad("literal out of set", edit('"binance"', '"median"'),
        "exchange.mark_price: 'median' is not one of 'binance', 'index', 'last'"),
    Bad("literal with a close match", edit('"binance"', '"indx"'),
        "exchange.mark_price: 'indx' is not one of 'binance', 'index', 'last' "
        "(did you mean 'index'?)"),
    Bad("share out of range", edit("count = 10", "long_share = 1.5"),
        "agents.traders.long_share: must be in [0, 1], got 1.5"),
    Bad("makers.levels = 0", edit("levels = 20", "levels = 0"),
        "agents.makers.levels: must be in [1, 50], got 0"),
    Bad("a rule on two keys names the table",
        edit("count = 10", "stop_share = 0.6\nladder_share = 0.6"),
        "agents.traders: stop_share + ladder_share must not exceed 1"),
    Bad("both [data] and [path]", BASE + "[data]\n",
        "a scenario has exactly one of [data] (a replay) and [path]"),
    Bad("neither [data] nor [path]", edit("[path]\nsteps = 10\n", ""),
        "a scenario has exactly one of [data] (a replay) and [path]"),
    Bad("bad Dist kind", edit("kind = \"lognormal\"", 'kind = "pareto"'),
        "agents.traders.leverage.kind: 'pareto' is not one of 'fixed', 'uniform', ..."),
    Bad("Dist with bad params", edit("sigma = 0.8", "sigma = -1"),
        "agents.traders.leverage: lognormal needs median > 0 and sigma >= 0"),
    Bad("Dist with a key its kind does not use",
        edit(LOGNORMAL, 'kind = "fixed", value = 1, median = 3'),
        "agents.traders.leverage.median: not used by kind 'fixed' (it takes value)"),
    Bad("Dist without kind", edit('kind = "lognormal", ', ""),
        "agents.traders.leverage.kind: missing (one of 'fixed', 'uniform', ..."),
    Bad("Dist missing a required key",
        edit(LOGNORMAL, 'kind = "uniform", low = 1'),
        "agents.traders.leverage.high: missing (kind 'uniform' needs low, high)"),
    Bad("Dist unknown key", edit("sigma = 0.8", "sigma = 0.8, sigam = 1"),
        "agents.traders.leverage.sigam: unknown key (did you mean 'sigma'?)"),
    Bad("Dist as a string", edit('{ kind = "lognormal", median = 10, sigma = 0.8 }', '"high"'),
        "agents.traders.leverage: must be a number or a distribution table such as ..."),
    Bad("Dist choice weights", edit(LOGNORMAL, 'kind = "choice", values = [5, 10], weights = [1]'),
        "agents.traders.leverage.weights: must have one entry per value"),
    Bad("shocks not an array of tables", 'shocks = 5\n' + BASE,
        "shocks: must be an array of tables ([[shocks]]), got 5"),
    Bad("shocks holding a number", 'shocks = [1]\n' + BASE, "shocks[0]: must be a table, got 1"),
    Bad("shock percent out of range", BASE + '[[shocks]]\nkind = "drop"\npercent = 120\n',
        "shocks[0].percent: must be in (0, 100) for a drop, got 120.0"),
    Bad("shock key its kind does not use",
        BASE + '[[shocks]]\nkind = "drop"\npercent = 5\nminutes = 1\n'
        '[[shocks]]\nkind = "drop"\npercent = 5\nseconds = 30\n',
        "shocks[1].seconds: must be 0 for a drop (its length is in minutes)"),
    Bad("shock at not a time",
        BASE + '[[shocks]]\nkind = "liquidity_gap"\nat = "soon"\nseconds = 1\n',
        "shocks[0].at: must be seconds from the start (e.g. '3600') or ISO-8601 UTC text, ..."),
    Bad("malformed TOML", edit("count = 10", "count = = 10"),
        "invalid TOML: Invalid value (at line 14, column 9)"),
    Bad("required key missing", BASE.replace('name = "t"\n', ""), "name: missing (a required key)"),
    Bad("empty question", edit('"What?"', '"  "'), "question: must not be empty: ..."),
    Bad("a table as a number",
        'exchange = 5\n' + edit('[exchange]\nmark_price = "binance"\n', ""),
        "exchange: must be a table, got 5"),
    Bad("a TOML date-time for a time string", edit("steps = 10", "start = 2020-03-12T00:00:00Z"),
        "path.start: must be a string, got the TOML date/time 2020-03-12T00:00:00+00:00 ..."),
    Bad("data end before start",
        edit("[path]\nsteps = 10", '[data]\nstart = "2020-03-13"\nend = "2020-03-12"'),
        "data.end: must be after start, got '2020-03-12' <= '2020-03-13'"),
    Bad("data start not a time", edit("[path]\nsteps = 10", '[data]\nstart = "yesterday"'),
        "data.start: must be ISO-8601 UTC text such as '2020-03-12T00:00:00Z', got 'yesterday'"),
    Bad("array of strings for numbers", edit("count = 10", 'ladder_targets = ["a"]'),
        "agents.traders.ladder_targets[0]: must be a number, got 'a'"),
    Bad("number for an array", edit("count = 10", "ladder_targets = 0.01"),
        "agents.traders.ladder_targets: must be an array of numbers, got 0.01"),
    Bad("strategy cls is spelled class", BASE + '[strategy]\ncls = "m:C"\n',
        "strategy.cls: unknown key (did you mean 'class'?)"),
    Bad("strategy class not module:Class", BASE + '[strategy]\nclass = "Breakout"\n',
        "strategy.class: must be 'module:Class' (e.g. 'mystrats:Breakout'), got 'Breakout'"),
    Bad("whale side", BASE + '[agents.whale]\nside = "buy"\n',
        "agents.whale.side: 'buy' is not one of 'BUY', 'SELL'"),
    Bad("name unusable as a file name", edit('"t"', '"a b"'),
        "name: must be letters, digits, '.', '_' or '-', got 'a b'"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_bad_scenario_is_one_line_naming_key_and_reason(case: Bad) -> None:
    with pytest.raises(ScenarioError) as info:
        loads_scenario(case.text, "t.toml")
    message = str(info.value)
    assert "\n" not in message
    expected = "t.toml: " + case.message
    if expected.endswith("..."):
        assert message.startswith(expected.removesuffix("...")), message
    else:
        assert message == expected


def test_the_base_of_the_bad_cases_is_good() -> None:
    s = loads_scenario(BASE, "t.toml")
    assert s.path == PathSection(steps=10)
    assert s.agents.traders == TraderConfig(
        count=10, leverage=Dist("lognormal", median=10.0, sigma=0.8)
    )
    assert s.agents.makers == MakerConfig() and s.agents.whale is None
    assert s.source == "t.toml"


def test_bare_number_is_a_fixed_dist_and_int_is_a_float() -> None:
    s = loads_scenario(edit("count = 10", "margin = 400\ncount = 10"), "t.toml")
    assert s.agents.traders is not None
    assert s.agents.traders.margin == Dist("fixed", value=400.0)
    assert isinstance(s.agents.traders.margin.value, float)
    s = loads_scenario(edit('mark_price = "binance"', "insurance_fund = 0"), "t.toml")
    assert s.exchange.insurance_fund == 0.0 and isinstance(s.exchange.insurance_fund, float)


def test_unknown_shipped_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("covid")
    message = str(info.value)
    assert message.startswith("covid: unknown scenario (did you mean 'covid-2020-03-12'?)")
    assert all(name in message for name in EXPECTED_NAMES)


def test_missing_file_directory_and_bad_bytes(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ScenarioError, match=re.escape(f"{missing}: no such file")):
        load_scenario(missing)
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario("nowhere/missing.toml")
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ScenarioError, match=re.escape(f"{binary}: not UTF-8 text (byte 8)")):
        load_scenario(binary)


def test_a_user_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(BASE, encoding="utf-8")
    s = load_scenario(str(path))
    assert s.name == "t" and s.source == str(path)  # a user's file need not match its name
    path.write_text(edit("count = 10", "count = -1"), encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: agents.traders.count: must be in [0, 100000], got -1"


def test_a_shipped_name_must_match_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "b-second.toml").write_text(BASE.replace('"t"', '"b-second"'), encoding="utf-8")
    (tmp_path / "a-first.toml").write_text(BASE, encoding="utf-8")
    monkeypatch.setattr(scenario_module, "_shipped_dir", lambda: tmp_path)
    assert load_scenario("b-second").name == "b-second"
    with pytest.raises(ScenarioError) as info:
        load_scenario("a-first")
    assert str(info.value) == "a-first.toml: name: 't' must match the file name 'a-first'"
    with pytest.raises(ScenarioError, match=re.escape("a-first.toml: name: 't'")):
        shipped_scenarios()


def test_dumps_escapes_strings_and_writes_every_table() -> None:
    s = dataclasses.replace(
        load_scenario("oracle-manipulation"),
        question='Quotes " and \\ and a tab\there, unicode ± €, a DEL \x7f?',
        strategy=StrategyConfig(deposit=5.5, bar_steps=3, cls="my.strats:Breakout"),
        shocks=(ShockSpec("divergence", at="2024-01-01T00:30:00Z", percent=-5.0, seconds=60.0),),
    )
    text = dumps_scenario(s)
    assert loads_scenario(text, s.source) == s
    assert 'class = "my.strats:Breakout"' in text and "[agents.whale]" in text
    assert "[[shocks]]" in text and "\\u007f" in text


def _default_text(cls: type[Any], name: str) -> str:
    """A field's default as TOML text, the way docs/scenarios.md writes it."""
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return scenario_writer._inline(scenario_writer.to_raw(value))


def test_every_table_and_key_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "scenarios.md").read_text(encoding="utf-8")
    sections = {
        "## Top level": Scenario,
        "## `[data]`": DataSection,
        "## `[path]`": PathSection,
        "## `[[shocks]]`": ShockSpec,
        "## `[exchange]`": ExchangeSection,
        "## `[agents.makers]`": MakerConfig,
        "## `[agents.traders]`": TraderConfig,
        "## `[agents.momentum]`": MomentumConfig,
        "## `[agents.noise]`": NoiseConfig,
        "## `[agents.whale]`": WhaleConfig,
        "## `[strategy]`": StrategyConfig,
    }
    for heading, cls in sections.items():
        start = doc.index(heading)
        section = doc[start : doc.find("\n## ", start + 1)]
        keys = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
        for key in keys:
            spelled = "class" if (cls, key) == (StrategyConfig, "cls") else key
            if cls is Scenario and key not in ("name", "question", "symbol"):
                assert f"`[{spelled}" in section or f"`[[{spelled}]]`" in section, key
                continue
            assert f"| `{spelled}` |" in section, f"{heading}: {spelled}"
            if cls is not Scenario:  # the documented default is the dataclass's
                row = section.split(f"| `{spelled}` |", 1)[1].split("\n", 1)[0]
                documented = row.split("|")[1].strip()
                default = _default_text(cls, key)
                assert documented == f"`{default}`", f"{heading}: {spelled} = {default}"


# -- overrides ------------------------------------------------------------------------------------
def test_with_overrides_sets_keys_and_leaves_the_rest() -> None:
    s = load_scenario("covid-2020-03-12")
    assert s.agents.traders is not None
    o = with_overrides(
        s,
        {
            "exchange.insurance_fund": 0,
            "agents.traders.count": 100,
            "agents.traders.leverage": {"kind": "fixed", "value": 20},
            "data.start": "2020-03-12T08:00:00Z",
        },
    )
    expected = dataclasses.replace(
        s,
        exchange=dataclasses.replace(s.exchange, insurance_fund=0.0),
        agents=dataclasses.replace(
            s.agents,
            traders=dataclasses.replace(
                s.agents.traders, count=100, leverage=Dist("fixed", value=20.0)
            ),
        ),
        data=dataclasses.replace(s.data, start="2020-03-12T08:00:00Z") if s.data else None,
    )
    assert o == expected
    assert o.source == "covid-2020-03-12"
    assert load_scenario("covid-2020-03-12") == s  # the original is untouched


def test_with_overrides_merges_into_a_dist_and_takes_dataclasses() -> None:
    s = load_scenario("covid-2020-03-12")
    o = with_overrides(s, {"agents.traders.leverage.sigma": 1.5})
    assert o.agents.traders is not None and s.agents.traders is not None
    assert o.agents.traders.leverage == dataclasses.replace(s.agents.traders.leverage, sigma=1.5)
    o = with_overrides(s, {"agents.traders.margin": Dist("uniform", low=10.0, high=20.0)})
    assert o.agents.traders is not None
    assert o.agents.traders.margin == Dist("uniform", low=10.0, high=20.0)


def test_with_overrides_adds_and_removes_tables_and_shocks() -> None:
    covid = load_scenario("covid-2020-03-12")
    assert covid.agents.whale is None
    with_whale = with_overrides(covid, {"agents.whale.side": "SELL"})
    assert with_whale.agents.whale == WhaleConfig(side="SELL")
    assert with_overrides(with_whale, {"agents.whale": None}) == covid
    assert with_overrides(covid, {"agents.whale.side": None}) == covid  # absent stays absent
    # A key removed returns to its default.
    assert with_overrides(covid, {"exchange.insurance_fund": None}).exchange.insurance_fund == (
        ExchangeSection().insurance_fund
    )
    stops = load_scenario("stop-slippage")
    more = with_overrides(
        stops,
        {"shocks[1].kind": "pump", "shocks[1].at": "7200", "shocks[1].percent": 5,
         "shocks[1].minutes": 2, "shocks[2].kind": "liquidity_gap", "shocks[2].at": "9000",
         "shocks[2].seconds": 60, "shocks[0].percent": 6},
    )  # fmt: skip
    assert more.shocks == (
        dataclasses.replace(stops.shocks[0], percent=6.0),
        ShockSpec("pump", at="7200", percent=5.0, minutes=2.0),
        ShockSpec("liquidity_gap", at="9000", seconds=60.0),
    )
    fewer = with_overrides(more, {"shocks[1]": None})
    assert fewer.shocks == (more.shocks[0], more.shocks[2])
    assert with_overrides(stops, {"shocks": None}).shocks == ()
    # Switch a replay to a synthetic path: remove one, add the other.
    synthetic = with_overrides(covid, {"data": None, "path.sigma": 0.002})
    assert synthetic.data is None and synthetic.path == PathSection(sigma=0.002)


def test_with_overrides_does_not_mutate_the_values_given() -> None:
    leverage: dict[str, Any] = {"kind": "lognormal", "median": 10, "sigma": 1}
    with_overrides(
        load_scenario("covid-2020-03-12"),
        {"agents.traders.leverage": leverage, "agents.traders.leverage.sigma": 2},
    )
    assert leverage == {"kind": "lognormal", "median": 10, "sigma": 1}


OVERRIDE_ERRORS = [
    ({"agents.traders.levrage": 10},
     "agents.traders.levrage: unknown key (did you mean 'leverage'?)"),
    ({"agents.whal": None}, "agents.whal: unknown key (did you mean 'whale'?)"),
    ({"agents.traders.count": "many"}, "agents.traders.count: must be an integer, got 'many'"),
    ({"agents.traders.long_share": 1.5}, "agents.traders.long_share: must be in [0, 1], got 1.5"),
    ({"exchange.mark_price": "median"},
     "exchange.mark_price: 'median' is not one of 'binance', 'index', 'last'"),
    ({"path.sigma": 0.001}, "a scenario has exactly one of [data] (a replay) and [path]"),
    ({"exchange.insurance_fund.x": 1},
     "exchange.insurance_fund: is not a table: it has no key 'x'"),
    ({"shocks[1].percent": 5}, "shocks[1]: index out of range: there are 0 (use [0] to add one)"),
    ({"shocks.percent": 5}, "shocks: is an array of tables: give an index, e.g. shocks[0]"),
    ({"exchange[0].adl": True}, "exchange[0]: exchange is not an array of tables"),
    ({"agents..traders": 1},
     "'agents..traders' is not a dotted key such as 'agents.traders.count' or 'shocks[0].percent'"),
    ({"shocks[0].kind": "drop"}, "shocks[0].percent: must be in (0, 100) for a drop, got 0.0"),
    # a distribution that can draw a value the agents would silently clip is refused
    ({"agents.traders.margin": -100},
     "agents.traders.margin: must draw values in (0, inf), it can draw -100"),
    ({"agents.traders.margin": {"kind": "uniform", "low": 0, "high": 10}},
     "agents.traders.margin: must draw values in (0, inf), it can draw 0 to 10"),
    ({"agents.traders.leverage": 0},
     "agents.traders.leverage: must draw values in [1, inf), it can draw 0"),
    ({"agents.traders.leverage": {"kind": "choice", "values": [0.5, 20]}},
     "agents.traders.leverage: must draw values in [1, inf), it can draw 0.5 to 20"),
    ({"agents.traders.leverage": {"kind": "lognormal", "median": 10, "sigma": 1, "low": 0.5}},
     "agents.traders.leverage: must draw values in [1, inf), it can draw 0.5 to inf"),
    ({"agents.traders.stop_distance": {"kind": "lognormal", "median": 0.02, "sigma": 1,
                                       "high": 2}},
     "agents.traders.stop_distance: must draw values in (0, 0.9], it can draw 0 to 2"),
    ({"agents.traders.stop_distance": 1.5},
     "agents.traders.stop_distance: must draw values in (0, 0.9], it can draw 1.5"),
    ({"agents.traders.hold_steps": -1},
     "agents.traders.hold_steps: must draw values in [0, inf), it can draw -1"),
    ({"agents.traders.reenter_delay": {"kind": "uniform", "low": -5, "high": 5}},
     "agents.traders.reenter_delay: must draw values in [0, inf), it can draw -5 to 5"),
    ({"agents.noise.size_btc": 0},
     "agents.noise.size_btc: must draw values in (0, inf), it can draw 0"),
    ({"agents.momentum.size_btc": -0.5},
     "agents.momentum.size_btc: must draw values in (0, inf), it can draw -0.5"),
]  # fmt: skip


def test_the_open_tails_of_a_lognormal_pass() -> None:
    """Its draws are > 0; the agents round a leverage and clip it to [1, the brackets' max]."""
    lognormal = {"kind": "lognormal", "median": 10, "sigma": 1}
    s = with_overrides(
        load_scenario("covid-2020-03-12"),
        {"agents.traders.margin": lognormal, "agents.traders.leverage": lognormal,
         "agents.traders.stop_distance": {**lognormal, "median": 0.02}},
    )  # fmt: skip
    assert s.agents.traders is not None
    assert s.agents.traders.margin.bounds() == (0.0, float("inf"))


@pytest.mark.parametrize("overrides, message", OVERRIDE_ERRORS, ids=lambda v: str(v)[:40])
def test_with_overrides_errors_name_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        with_overrides(load_scenario("covid-2020-03-12"), overrides)
    assert str(info.value) == f"covid-2020-03-12: {message}"


# -- --set ----------------------------------------------------------------------------------------
SET_CASES = [
    ("exchange.insurance_fund=0", 0),
    ("exchange.clearance_fee=0.01", 0.01),
    ("path.sigma=1e-3", 0.001),
    ("exchange.adl = false", False),
    ("exchange.mark_price=last", "last"),
    ("agents.whale.side=SELL", "SELL"),
    ("strategy.class=my.strats:Breakout", "my.strats:Breakout"),
    ("data.candles=/tmp/my candles.csv", None),  # two words: not a bare word -> error below
    ('agents.traders.leverage={kind="fixed", value=20}', {"kind": "fixed", "value": 20}),
    ("agents.traders.ladder_targets=[0.01, 0.05]", [0.01, 0.05]),
    ("data.start=2020-03-12T00:00:00Z", "2020-03-12T00:00:00Z"),
    ("data.start=2020-03-12", "2020-03-12"),
    ("data.mark=", ""),
    ('data.mark=""', ""),
    ("agents.whale=none", None),
    ('strategy.class="none"', "none"),
    ("shocks[0].percent=5", 5),
]


@pytest.mark.parametrize("item, value", [c for c in SET_CASES if "my candles" not in c[0]])
def test_parse_set_values(item: str, value: object) -> None:
    key = item.partition("=")[0].strip()
    parsed = parse_set([item])
    assert parsed == {key: value}
    assert type(parsed[key]) is type(value)


@pytest.mark.parametrize(
    "item, message",
    [
        ("exchange.insurance_fund", "--set 'exchange.insurance_fund': expected key=value, ..."),
        ("=5", "--set '=5': expected key=value, ..."),
        ("agents.traders.levrage=10",
         "--set 'agents.traders.levrage=10': agents.traders.levrage: unknown key "
         "(did you mean 'leverage'?)"),
        ("a..b=1", "--set 'a..b=1': 'a..b' is not a dotted key such as ..."),
        ("agents.traders.leverage={kind=", "--set 'agents.traders.leverage={kind=': "
         "'{kind=' is not a TOML value (..."),
        ('strategy.class="open', "--set 'strategy.class=\"open': '\"open' is not a TOML value ..."),
        ("data.candles=/tmp/my candles.csv", "--set 'data.candles=/tmp/my candles.csv': "
         "'/tmp/my candles.csv' is not a TOML value ..."),
    ],
)  # fmt: skip
def test_parse_set_errors(item: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_set([item])
    if message.endswith("..."):
        assert str(info.value).startswith(message.removesuffix("...")), str(info.value)
    else:
        assert str(info.value) == message


def test_set_end_to_end() -> None:
    s = with_overrides(
        load_scenario("oracle-manipulation"),
        parse_set(["exchange.mark_price=last", "agents.whale.side=SELL",
                   'agents.traders.leverage={kind="fixed", value=20}', "agents.noise=none"]),
    )  # fmt: skip
    assert s.exchange.mark_price == "last"
    assert s.agents.whale is not None and s.agents.whale.side == "SELL"
    assert s.agents.traders is not None and s.agents.traders.leverage == Dist("fixed", value=20.0)
    assert s.agents.noise is None
    with pytest.raises(ScenarioError) as info:
        with_overrides(s, parse_set(["exchange.price_band=2"]))
    assert str(info.value) == ("oracle-manipulation: exchange.price_band: must be in [0.001, 0.9]")
