"""perpex.sweep.spec: sweep TOML files read strictly into a `SweepSpec`, its grid and its tasks.

The shipped sweeps load; the grid is the product of the parameters in file order (the last one
fastest); every task's seed comes from (sweep name, grid point, seed index) through crc32 and
`numpy.random.SeedSequence`, so it is the same in every process; ranges expand as the contract
(/work/notes/sweep.md) says; `SUMMARY_KEYS` is what the simulator's summary really holds; and
every bad file is refused in one line naming the file, the key and the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import perpex.sweep.spec as spec_module
from perpex.sim import run
from perpex.sim.agents.base import Dist
from perpex.sim.agents.config import TraderConfig
from perpex.sim.scenario import load_scenario, with_overrides
from perpex.sweep.spec import (
    SUMMARY_KEYS,
    SweepError,
    SweepSpec,
    grid,
    load_sweep,
    scenario_for,
    shipped_sweeps,
    tasks,
)

SWEEP_DIR = Path(spec_module.__file__).parent / "sweeps"
EXPECTED_NAMES = [
    "insurance-fund-sizing",
    "insurance-fund-sizing-jumps",
    "insurance-fund-sizing-small",
]

# A small valid sweep; each bad-file case below changes one thing in it.
GOOD = """\
name = "tiny"
question = "Does a fund of 1,000 USDT change anything?"
scenario = "liquidation-distance"
seeds = 2
target_p_adl = 0.05
metrics = ["liquidations", "adl_events"]

[set]
"agents.traders.count" = 50

[[parameters]]
key = "exchange.insurance_fund"
values = [0, 1_000]

[[parameters]]
key = "agents.traders.leverage"
values = [5, { kind = "lognormal", median = 20, sigma = 0.5 }]
labels = ["5x", "around 20x"]
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the shipped sweeps ---------------------------------------------------------------------------
def test_the_shipped_sweeps_are_listed_with_their_questions() -> None:
    assert sorted(p.stem for p in SWEEP_DIR.glob("*.toml")) == EXPECTED_NAMES
    listed = shipped_sweeps()
    assert [name for name, _ in listed] == EXPECTED_NAMES
    assert all(question.endswith("?") for _, question in listed)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_shipped_sweep_loads_with_a_deterministic_grid_and_tasks(name: str) -> None:
    spec = load_sweep(name)
    assert (spec.name, spec.source) == (name, name)
    assert spec.parameters[0].key == "exchange.insurance_fund"
    text = (SWEEP_DIR / f"{name}.toml").read_text(encoding="utf-8")
    assert text.startswith("#") and f"perpex sweep {name}" in text  # the question and the how
    points = grid(spec)
    assert len(points) == np.prod([len(p.values) for p in spec.parameters])
    every = tasks(spec)
    assert len(every) == len(points) * spec.seeds
    assert every == tasks(load_sweep(name))  # a second read gives the same tasks
    assert len({t.seed for t in every}) == len(every)  # across points and seed indexes
    assert all(0 <= t.seed < 2**63 for t in every)
    # every grid point builds a scenario (the corners are enough to read them all)
    for point in (points[0], points[-1]):
        scenario_for(spec, point)


def test_the_small_sweep_fits_the_demo_budget() -> None:
    spec = load_sweep("insurance-fund-sizing-small")
    # measured: about 1 s a task (docs in the file); 2 cores; `make sweep-demo` < 2 minutes
    assert len(tasks(spec)) <= 40
    assert spec.scenario == "covid-2020-03-12"


def test_the_big_sweeps_can_estimate_a_one_percent_p_adl() -> None:
    # Rule of three: no ADL in n seeds bounds P(ADL) below 3 / n at 95 % confidence.
    for name in ("insurance-fund-sizing", "insurance-fund-sizing-jumps"):
        spec = load_sweep(name)
        assert spec.target_p_adl == 0.01
        assert 3 / spec.seeds <= spec.target_p_adl


def test_the_jump_sweep_has_its_base_scenario_inline() -> None:
    spec = load_sweep("insurance-fund-sizing-jumps")
    assert (spec.scenario, spec.scenario_path) == ("[base]", "[base]")
    assert spec.base is not None and spec.base.path is not None
    assert spec.base.path.kind == "merton"
    assert spec.base.name == spec.name  # [base] takes the sweep's name and question
    assert [p.key for p in spec.parameters] == [
        "exchange.insurance_fund",
        "path.jump_mean",
        "agents.traders.leverage",
    ]


# -- seeds ----------------------------------------------------------------------------------------
def test_a_task_seed_is_crc32_and_seed_sequence_of_name_point_and_seed_index() -> None:
    spec = load_sweep("insurance-fund-sizing-small")
    task = tasks(spec)[spec.seeds + 1]  # point 1, seed index 1
    assert (task.point, task.seed_index) == (1, 1)
    entropy = [zlib.crc32(b"insurance-fund-sizing-small"), 1, 1]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    assert task.seed == int(state) >> 1


def test_task_seeds_do_not_depend_on_the_python_hash_seed() -> None:
    code = (
        "from perpex.sweep.spec import load_sweep, tasks\n"
        "print([t.seed for t in tasks(load_sweep('insurance-fund-sizing-small'))])"
    )
    here = [t.seed for t in tasks(load_sweep("insurance-fund-sizing-small"))]
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == str(here)


# -- the grid, ranges, labels, scenario_for ------------------------------------------------------
def test_grid_is_the_product_in_file_order_the_last_parameter_fastest(tmp_path: Path) -> None:
    spec = load_sweep(write(tmp_path, GOOD))
    points = grid(spec)
    assert [p.index for p in points] == [0, 1, 2, 3]
    assert [p.labels for p in points] == [
        ("0", "5x"),
        ("0", "around 20x"),
        ("1000", "5x"),
        ("1000", "around 20x"),
    ]
    assert points[3].values == (1_000, {"kind": "lognormal", "median": 20, "sigma": 0.5})
    assert [(t.point, t.seed_index) for t in tasks(spec)] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1),
    ]  # fmt: skip
    assert spec.fixed == (("agents.traders.count", 50),)
    assert spec.scenario_path == "liquidation-distance"
    assert spec.metrics == ("liquidations", "adl_events")


@dataclass(frozen=True)
class RangeCase:
    name: str
    range_toml: str
    values: list[object]


RANGES = [
    RangeCase("num, whole numbers", "{ start = 0, stop = 500_000, num = 6 }",
              [0, 100_000, 200_000, 300_000, 400_000, 500_000]),
    RangeCase("num, not whole", "{ start = 0, stop = 1, num = 4 }",
              [0.0, 0.333333333333, 0.666666666667, 1.0]),
    RangeCase("num = 1 on a point", "{ start = 7, stop = 7, num = 1 }", [7]),
    RangeCase("step, stop hit (no float noise)", "{ start = 0, stop = 0.015, step = 0.005 }",
              [0.0, 0.005, 0.01, 0.015]),
    RangeCase("step, stop hit after 0.1 + 0.2", "{ start = 0.1, stop = 0.3, step = 0.1 }",
              [0.1, 0.2, 0.3]),
    RangeCase("step, stop not hit", "{ start = 0, stop = 1_000, step = 300 }",
              [0, 300, 600, 900]),
    RangeCase("step, whole numbers stay integers", "{ start = 1, stop = 3, step = 1 }",
              [1, 2, 3]),
    RangeCase("step, float start", "{ start = 0.5, stop = 2, step = 0.5 }",
              [0.5, 1.0, 1.5, 2.0]),
]  # fmt: skip


@pytest.mark.parametrize("case", RANGES, ids=lambda c: c.name)
def test_range_expansion(tmp_path: Path, case: RangeCase) -> None:
    text = f"""\
name = "r"
question = "q?"
scenario = "liquidation-distance"
seeds = 1
[[parameters]]
key = "exchange.insurance_fund"
range = {case.range_toml}
"""
    values = load_sweep(write(tmp_path, text)).parameters[0].values
    assert list(values) == case.values
    assert [type(v) for v in values] == [type(v) for v in case.values]


def test_default_labels_say_the_value(tmp_path: Path) -> None:
    text = GOOD.replace('labels = ["5x", "around 20x"]\n', "").replace(
        "[[parameters]]\nkey",
        '[[parameters]]\nkey = "exchange.adl"\nvalues = [true, false]\n\n[[parameters]]\nkey',
        1,
    )
    spec = load_sweep(write(tmp_path, text))
    assert [p.labels for p in spec.parameters] == [
        ("true", "false"),
        ("0", "1000"),
        ("5", "lognormal(median=20, sigma=0.5)"),
    ]


def test_scenario_for_applies_the_base_then_set_then_the_point(tmp_path: Path) -> None:
    # A last parameter replacing the whole [agents.traders] table comes after [set]'s count
    # and after the point's leverage: it wins over both.
    text = GOOD + '\n[[parameters]]\nkey = "agents.traders"\nvalues = [{ count = 7 }]\n'
    spec = load_sweep(write(tmp_path, text))
    base = load_scenario("liquidation-distance")
    point = grid(spec)[3]  # fund 1,000, around 20x, then a traders table of count 7
    s = scenario_for(spec, point)
    assert s.exchange.insurance_fund == 1_000.0
    assert s.agents.traders == TraderConfig(count=7)
    assert s.path == base.path and s.agents.makers == base.agents.makers
    s = scenario_for(spec, grid(spec)[1])  # fund 0, around 20x, count 7 (the base's margin)
    assert s.agents.traders == TraderConfig(count=7)
    without = load_sweep(write(tmp_path, GOOD, "plain.toml"))
    s = scenario_for(without, grid(without)[2])  # fund 1,000, 5x
    assert s == with_overrides(
        with_overrides(base, {"agents.traders.count": 50}),
        {"exchange.insurance_fund": 1_000, "agents.traders.leverage": 5},
    )
    assert s.agents.traders is not None and s.agents.traders.count == 50
    s = scenario_for(without, grid(without)[3])  # fund 1,000, around 20x
    assert s.agents.traders is not None and s.agents.traders.count == 50
    assert s.agents.traders.leverage == Dist("lognormal", median=20.0, sigma=0.5)


def test_a_scenario_path_is_relative_to_the_sweep_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sweeps" / "scenarios").mkdir(parents=True)
    scenario_text = (
        (Path(spec_module.__file__).parents[1] / "sim" / "scenarios")
        .joinpath("liquidation-distance.toml")
        .read_text(encoding="utf-8")
    )
    write(tmp_path / "sweeps" / "scenarios", scenario_text, "mine.toml")
    sweep = write(
        tmp_path / "sweeps", GOOD.replace('"liquidation-distance"', '"scenarios/mine.toml"')
    )
    monkeypatch.chdir(tmp_path)  # not the sweep's directory
    spec = load_sweep(str(sweep))
    assert spec.scenario == "scenarios/mine.toml"
    assert spec.scenario_path == str((tmp_path / "sweeps" / "scenarios" / "mine.toml").resolve())
    assert scenario_for(spec, grid(spec)[0]).exchange.insurance_fund == 0.0


# -- SUMMARY_KEYS ---------------------------------------------------------------------------------
def test_summary_keys_are_exactly_the_keys_of_a_real_run_summary() -> None:
    scenario = with_overrides(load_scenario("liquidation-distance"), {"agents.traders.count": 50})
    summary = run(scenario, seed=1, progress=False, report=False).summary
    assert tuple(summary) == SUMMARY_KEYS


# -- bad sweep files ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    name: str
    old: str  # replaced in GOOD ...
    new: str  # ... by this
    key: str  # the dotted key the message names
    reason: str  # a fragment of the reason


BASE_TABLE = '[base.path]\nkind = "gbm"\n[base.agents.traders]\ncount = 10\n'
BAD = [
    Bad("unknown key, with a suggestion", "metrics =", "metrcs =", "metrcs",
        "unknown key (did you mean 'metrics'?)"),
    Bad("unknown parameter key", "labels =", "lables =", "parameters[1].lables",
        "unknown key (did you mean 'labels'?)"),
    Bad("missing name", 'name = "tiny"\n', "", "name", "missing"),
    Bad("missing question", 'question = "Does a fund of 1,000 USDT change anything?"\n', "",
        "question", "missing"),
    Bad("missing scenario", 'scenario = "liquidation-distance"\n', "", "scenario", "missing"),
    Bad("both scenario and [base]", "[set]", f"{BASE_TABLE}[set]", "scenario",
        "give either scenario or [base], not both"),
    Bad("a bad [base]", 'scenario = "liquidation-distance"\n', '[base.path]\nkind = "gbm"\n'
        "sigm = 0.1\n", "base", "path.sigm: unknown key (did you mean 'sigma'?)"),
    Bad("seeds 0", "seeds = 2", "seeds = 0", "seeds", "must be an integer in [1, 10000], got 0"),
    Bad("too many seeds", "seeds = 2", "seeds = 10_001", "seeds", "got 10001"),
    Bad("seeds a float", "seeds = 2", "seeds = 2.0", "seeds", "must be an integer"),
    Bad("seeds a bool", "seeds = 2", "seeds = true", "seeds", "got true"),
    Bad("too many tasks", "values = [0, 1_000]", "range = { start = 0, stop = 99_999, num = "
        "50_000 }", "seeds", "200,000 tasks (grid points x seeds) is more than 100,000"),
    Bad("empty values", "values = [0, 1_000]", "values = []", "parameters[0].values",
        "must be a non-empty array"),
    Bad("both values and range", "values = [0, 1_000]",
        "values = [0]\nrange = { start = 0, stop = 1, num = 2 }", "parameters[0].values",
        "give either values or range"),
    Bad("range with num and step", "values = [0, 1_000]",
        "range = { start = 0, stop = 1_000, num = 2, step = 500 }", "parameters[0].range",
        "give either num or step"),
    Bad("range not numbers", "values = [0, 1_000]", 'range = { start = "0", stop = 1, num = 2 }',
        "parameters[0].range.start", "must be a number, got '0'"),
    Bad("range with no values", "values = [0, 1_000]", "range = { start = 0, stop = 1, num = 0 }",
        "parameters[0].range.num", "must be an integer in [1, 100000], got 0"),
    Bad("range with a negative step", "values = [0, 1_000]",
        "range = { start = 0, stop = 1, step = -1 }", "parameters[0].range.step", "must be > 0"),
    Bad("range backwards", "values = [0, 1_000]", "range = { start = 5, stop = 1, num = 3 }",
        "parameters[0].range.stop", "must be >= start"),
    Bad("range with too many values", "values = [0, 1_000]",
        "range = { start = 0, stop = 1_000_000, step = 1 }", "parameters[0].range.step",
        "more than 100,000"),
    Bad("labels count mismatch", 'labels = ["5x", "around 20x"]', 'labels = ["5x"]',
        "parameters[1].labels", "has 1 labels for 2 values"),
    Bad("a label twice", 'labels = ["5x", "around 20x"]', 'labels = ["5x", "5x"]',
        "parameters[1].labels[1]", "the same label as parameters[1].labels[0]"),
    Bad("a value twice", "values = [0, 1_000]", "values = [0, 0]", "parameters[0].values[1]",
        "the same value as parameters[0].values[0]"),
    Bad("duplicate parameter key", 'key = "agents.traders.leverage"',
        'key = "exchange.insurance_fund"', "parameters[1].key",
        "'exchange.insurance_fund' repeats parameters[0].key"),
    Bad("a parameter key also in [set]", 'key = "exchange.insurance_fund"',
        'key = "agents.traders.count"', "parameters[0].key", "is also in [set]"),
    Bad("a parameter key unknown to the scenario", 'key = "exchange.insurance_fund"',
        'key = "exchange.insurance_fnd"', "parameters[0].key",
        "exchange.insurance_fnd: unknown key (did you mean 'insurance_fund'?)"),
    Bad("a value the scenario refuses", "values = [0, 1_000]", "values = [0, -1]",
        "parameters[0].values[1]", "exchange.insurance_fund: must be in [0, 1e12]"),
    Bad("a distribution the scenario refuses", 'median = 20, sigma = 0.5',
        'median = 20', "parameters[1].values[1]",
        "agents.traders.leverage.sigma: missing (kind 'lognormal' needs median, sigma)"),
    Bad("an unquoted date as a value", "values = [0, 1_000]", "values = [2020-03-12]",
        "parameters[0].values[0]", "the TOML date/time 2020-03-12 (quote it"),
    Bad("a [set] key unknown to the scenario", '"agents.traders.count" = 50',
        '"agents.traders.cont" = 50', 'set."agents.traders.cont"',
        "unknown key (did you mean 'count'?)"),
    Bad("a [set] value the scenario refuses", '"agents.traders.count" = 50',
        '"agents.traders.count" = 1.5', 'set."agents.traders.count"',
        "agents.traders.count: must be an integer, got 1.5"),
    Bad("metric not a summary key", 'metrics = ["liquidations", "adl_events"]',
        'metrics = ["liquidations", "adl_event"]', "metrics[1]",
        "'adl_event' is not a key of the simulator's summary (did you mean 'adl_events'?)"),
    Bad("a text metric", 'metrics = ["liquidations", "adl_events"]',
        'metrics = ["state_hash"]', "metrics[0]", "is text"),
    Bad("target_p_adl 1", "target_p_adl = 0.05", "target_p_adl = 1.0", "target_p_adl",
        "must be a number in (0, 1), got 1.0"),
    Bad("target_p_adl 0", "target_p_adl = 0.05", "target_p_adl = 0", "target_p_adl",
        "must be a number in (0, 1), got 0"),
    Bad("unknown scenario", '"liquidation-distance"', '"liquidation-distanse"', "scenario",
        "unknown scenario (did you mean 'liquidation-distance'?)"),
    Bad("malformed TOML", "seeds = 2", "seeds = = 2", "invalid TOML", "(at line 4, column"),
    # the path is built once before any task: a window or a shock that cannot be is refused
    Bad("a [set] that cuts the scenario's shock off", '"agents.traders.count" = 50',
        '"path.steps" = 90', "set", "shocks[0]: it ends at 2024-01-01T03:00:00Z, after the "
        "path: the path runs from 2024-01-01T00:00:00Z to 2024-01-01T01:31:00Z"),
    Bad("a shock time outside the path", 'key = "exchange.insurance_fund"\nvalues = [0, 1_000]',
        'key = "shocks[0].at"\nvalues = ["3600", "2030-01-01T00:00:00Z"]',
        "parameters[0].values[1]", "shocks[0].at: 2030-01-01T00:00:00Z is outside the path"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_a_bad_sweep_file_is_refused_in_one_line(tmp_path: Path, case: Bad) -> None:
    assert case.old in GOOD, case.old
    path = write(tmp_path, GOOD.replace(case.old, case.new, 1))
    with pytest.raises(SweepError) as info:
        load_sweep(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {case.key}: "), message
    assert case.reason in message, message


def test_a_data_window_with_no_candles_is_refused_before_any_task(tmp_path: Path) -> None:
    text = GOOD.replace('scenario = "liquidation-distance"', 'scenario = "tariff-2025-10-10"')
    text = text.replace(
        '"agents.traders.count" = 50',
        '"agents.traders.count" = 50\n"data.start" = "2024-01-01T00:00:00Z"\n'
        '"data.end" = "2024-01-02T00:00:00Z"',
    )
    path = write(tmp_path, text)
    with pytest.raises(SweepError) as info:
        load_sweep(str(path))
    assert str(info.value) == (
        f"{path}: set: BTCUSDT-15m: no candle opens in the scenario's window "
        "[2024-01-01T00:00:00Z, 2024-01-02T00:00:00Z) (data.start, data.end); it has candles "
        "from 2025-08-17T00:00:00Z to 2026-05-17T08:45:00Z"
    )


def test_the_good_file_of_the_bad_cases_loads(tmp_path: Path) -> None:
    assert isinstance(load_sweep(write(tmp_path, GOOD)), SweepSpec)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("insurance-fund-sizing-smal", "insurance-fund-sizing-smal: unknown sweep (did you mean "
         "'insurance-fund-sizing-small'?); the shipped ones are insurance-fund-sizing, "),
        ("no/such/sweep.toml", "no/such/sweep.toml: no such file"),
    ],
)  # fmt: skip
def test_an_unknown_name_or_a_missing_file_is_one_line(given: str, expected: str) -> None:
    with pytest.raises(SweepError) as info:
        load_sweep(given)
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_a_shipped_sweep_must_be_named_as_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, GOOD, "other.toml")
    monkeypatch.setattr(spec_module, "_shipped_dir", lambda: tmp_path)
    with pytest.raises(SweepError, match=r"^other\.toml: name: 'tiny' must match the file name"):
        load_sweep("other")
