"""The sweep report (perpex.report.sweep_html), built from fake sweep output directories with the
layout of the sweep contract (meta.json, aggregate.parquet, tasks.parquet; notes/sweep.md).

The main fixture: insurance fund 0 / 50,000 / 200,000 / 1,000,000 USDT × traders' leverage
'moderate' / 'aggressive', 100 seeds a point. With moderate leverage P(ADL) falls with the fund
and is under the 5 % target from 200,000 on; with aggressive leverage it never gets there. Two
tasks of (0 USDT, aggressive) failed.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import plotly.offline
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpex.report import ReportError, build_sweep_report
from perpex.report.sweep_figures import wilson
from perpex.report.sweep_findings import findings
from perpex.report.sweep_load import read_sweep

FUND = "exchange.insurance_fund"
LEVERAGE = "agents.traders.leverage"
QUESTION = "How big must the insurance fund be to keep P(ADL) under 5 % in a covid-like crash?"
SEEDS = 100
FUNDS = (0, 50_000, 200_000, 1_000_000)
ADL_RUNS = {  # ADL runs out of the successful ones, per (fund, leverage label)
    (0, "moderate"): 40,
    (50_000, "moderate"): 10,
    (200_000, "moderate"): 2,
    (1_000_000, "moderate"): 0,
    (0, "aggressive"): 88,
    (50_000, "aggressive"): 60,
    (200_000, "aggressive"): 30,
    (1_000_000, "aggressive"): 12,
}
FAILED = {(0, "aggressive"): ("RuntimeError: the path ran out of candles",) * 2}

Param = tuple[str, list[Any], list[str] | None]  # key, values, labels (None: value as text)


def _label(value: Any) -> str:
    return str(value)


def write_sweep(
    out_dir: Path,
    parameters: list[Param],
    adl_runs: dict[tuple[str, ...], int],
    failed: dict[tuple[str, ...], tuple[str, ...]] | None = None,
    seeds: int = SEEDS,
    target: float = 0.05,
    name: str = "insurance-fund-sizing-test",
) -> None:
    """A sweep's output directory: grid points in file order (last parameter fastest),
    `adl_runs[labels]` of each point's successful runs with ADL, `failed[labels]` the errors of
    its failed tasks (the last seeds)."""
    failed = failed or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_of = [
        labels if labels is not None else [_label(v) for v in values]
        for _, values, labels in parameters
    ]
    meta = {
        "name": name,
        "question": QUESTION,
        "scenario": "covid-2020-03-12",
        "seeds": seeds,
        "target_p_adl": target,
        "metrics": ["liquidations", "adl_events"],
        "parameters": [
            {"key": key, "values": values, "labels": labels}
            for (key, values, _), labels in zip(parameters, labels_of, strict=True)
        ],
    }
    (out_dir / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    agg: dict[str, list[Any]] = {"point": []}
    tasks: dict[str, list[Any]] = {"point": [], "seed_index": [], "seed": []}
    for key, _, _ in parameters:
        agg[key] = []
        tasks[key] = []
    numeric = [all(isinstance(v, int | float) for v in values) for _, values, _ in parameters]
    for (key, _, _), is_number in zip(parameters, numeric, strict=True):
        if is_number:
            agg[f"{key}#value"] = []
    for name_ in ("tasks", "failures", "p_adl", "fund_drawdown_p50", "fund_drawdown_p95",
                  "fund_drawdown_p99", "bad_debt_mean", "bad_debt_p99",
                  "liquidated_notional_p50", "liquidated_notional_p99"):  # fmt: skip
        agg[name_] = []
    tasks |= {"adl_events": [], "error": [], "seconds": []}
    choices = [list(zip(values, labels, strict=True)) for (_, values, _), labels in
               zip(parameters, labels_of, strict=True)]  # fmt: skip
    for point, combo in enumerate(itertools.product(*choices)):
        labels = tuple(label for _, label in combo)
        errors = failed.get(labels, ())
        ok = seeds - len(errors)
        adl = adl_runs[labels]
        agg["point"].append(point)
        for (key, _, _), (value, label), is_number in zip(parameters, combo, numeric, strict=True):
            agg[key].append(label)
            if is_number:
                agg[f"{key}#value"].append(float(value))
        fund = float(combo[0][0]) if parameters[0][0] == FUND else 1e6
        agg["tasks"].append(seeds)
        agg["failures"].append(len(errors))
        agg["p_adl"].append(adl / ok)
        agg["fund_drawdown_p50"].append(min(fund, 10_000.0 * adl / ok * 10))
        agg["fund_drawdown_p95"].append(min(fund, 400_000.0 * adl / ok))
        agg["fund_drawdown_p99"].append(min(fund, 600_000.0 * adl / ok))
        agg["bad_debt_mean"].append(50_000.0 * adl / ok)
        agg["bad_debt_p99"].append(300_000.0 * adl / ok)
        agg["liquidated_notional_p50"].append(2e6)
        agg["liquidated_notional_p99"].append(9e6)
        for seed_index in range(seeds):
            tasks["point"].append(point)
            tasks["seed_index"].append(seed_index)
            tasks["seed"].append(1_000_003 * point + seed_index)
            for (key, _, _), (_, label) in zip(parameters, combo, strict=True):
                tasks[key].append(label)
            error = errors[seed_index - ok] if seed_index >= ok else None
            tasks["adl_events"].append(None if error else float(seed_index < adl))
            tasks["error"].append(error)
            tasks["seconds"].append(1.0)
    types: dict[str, pa.DataType] = {"point": pa.int64(), "tasks": pa.int64(),
                                     "failures": pa.int64()}  # fmt: skip
    for key, _, _ in parameters:
        types[key] = pa.string()
    agg_table = pa.table(
        {col: pa.array(vals, type=types.get(col, pa.float64())) for col, vals in agg.items()}
    )
    pq.write_table(agg_table, out_dir / "aggregate.parquet")
    task_types = types | {"seed_index": pa.int64(), "seed": pa.int64(), "error": pa.string()}
    task_table = pa.table(
        {col: pa.array(vals, type=task_types.get(col, pa.float64())) for col, vals in tasks.items()}
    )
    pq.write_table(task_table, out_dir / "tasks.parquet")


def two_parameter_sweep(out_dir: Path) -> None:
    write_sweep(
        out_dir,
        [
            (FUND, list(FUNDS), None),
            (
                LEVERAGE,
                [
                    {"kind": "lognormal", "median": 5, "sigma": 0.6},
                    {"kind": "lognormal", "median": 15, "sigma": 0.8},
                ],
                ["moderate", "aggressive"],
            ),
        ],
        {(str(f), lev): n for (f, lev), n in ADL_RUNS.items()},
        failed={(str(f), lev): errs for (f, lev), errs in FAILED.items()},
    )


@pytest.fixture(scope="module")
def two_parameter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out_dir = tmp_path_factory.mktemp("sweep")
    two_parameter_sweep(out_dir)
    out = build_sweep_report(out_dir)
    return out, out.read_text(encoding="utf-8")


def _text(page: str) -> str:
    """The page's words without tags, entities undone, spaces collapsed."""
    body = page.split("</head>", 1)[1]
    body = re.sub(r"<script.*?</script>", " ", body, flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


# -- the page -------------------------------------------------------------------------------


def test_report_written_in_the_sweep_directory(two_parameter: tuple[Path, str]) -> None:
    out, page = two_parameter
    assert out.name == "report.html" and out.is_file()
    assert page.startswith("<!DOCTYPE html>")
    assert not list(out.parent.glob("*.partial"))


def test_self_contained_plotly_inlined_once(two_parameter: tuple[Path, str]) -> None:
    _, page = two_parameter
    banner = plotly.offline.get_plotlyjs()[:200].splitlines()[1].strip()
    assert banner.startswith("* plotly.js v")
    assert page.count(banner) == 1
    assert not re.search(r"<script[^>]*\bsrc=", page, flags=re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref=", page, flags=re.IGNORECASE)
    rest = page.replace(plotly.offline.get_plotlyjs(), "")
    assert "cdn.plot.ly" not in rest and "https://" not in rest


def test_header_states_name_question_grid_seeds_tasks_failures(
    two_parameter: tuple[Path, str],
) -> None:
    _, page = two_parameter
    text = _text(page)
    assert "<h1>insurance-fund-sizing-test</h1>" in page
    assert QUESTION in text
    assert "4 × 2 = 8 points" in text
    assert f"seeds per point {SEEDS}" in text
    assert f"tasks {8 * SEEDS:,}" in text
    assert "failures 2" in text
    assert "agents.traders.leverage: moderate, aggressive (2 values)" in text
    assert "for 1 of the 2 leverage settings" in text
    assert "P(ADL) under 5 %" in text


def test_smallest_fund_sentence_and_the_no_fund_case(two_parameter: tuple[Path, str]) -> None:
    _, page = two_parameter
    text = _text(page)
    # Moderate leverage: 10 % at 50,000, 2 % at 200,000 and 0 % at 1,000,000 (all under 5 %
    # from 200,000 on). 2 ADL in 100 runs: Wilson's 95 % interval is 0.55 % to 7.0 %.
    low, high = wilson(2, 100)
    assert (round(low * 100, 1), round(high * 100, 1)) == (0.6, 7.0)
    assert (
        "With leverage 'moderate', the smallest insurance fund that kept P(ADL) under 5 % was "
        "200,000 USDT (P(ADL) 2.0 % over 100 runs, 95 % interval 0.6 % – 7.0 %)." in text
    )
    # The upper end (7.0 %) is above the 5 % target: the page says the seeds are too few.
    assert "more seeds are needed" in text
    # Aggressive leverage never gets under 5 %: the lowest is 12 % at 1,000,000.
    assert (
        "No insurance fund on the grid kept P(ADL) under 5 % with leverage 'aggressive': the "
        "lowest was at 1,000,000 USDT (P(ADL) 12 % over 100 runs" in text
    )
    assert "none on the grid" in text  # the table's row for it


def test_findings_per_setting(tmp_path: Path) -> None:
    two_parameter_sweep(tmp_path)
    sweep = read_sweep(tmp_path)
    found = findings(sweep)
    assert [sweep.axes[1].labels[f.setting[0]] for f in found] == ["moderate", "aggressive"]
    moderate, aggressive = found
    assert moderate.row is not None and aggressive.row is None
    assert sweep.x_axis.text(int(sweep.positions[moderate.row, 0])) == "200,000"
    assert aggressive.lowest_row is not None
    assert sweep.x_axis.text(int(sweep.positions[aggressive.lowest_row, 0])) == "1,000,000"
    # Failed tasks are not runs: 2 of the 100 tasks at (0, aggressive) failed.
    first = int(sweep.points.tolist().index(1))
    assert int(sweep.runs[first]) == 98 and int(sweep.adl_runs[first]) == 88


def test_heatmaps_with_value_and_runs_in_each_cell(two_parameter: tuple[Path, str]) -> None:
    _, page = two_parameter
    assert 'id="chart-p-adl-1"' in page and 'id="chart-losses-1"' in page
    assert page.count('"type":"heatmap"') == 1
    # Cells carry the share and the runs behind it; the failed tasks are not counted.
    # (plotly writes "<" inside its JSON as \u003c, so the page has no stray tags)
    assert "2.0 %\\u003cbr\\u003en=100" in page
    assert "90 %\\u003cbr\\u003en=98" in page
    # The fund axis is in numeric order, the leverage axis in the sweep file's order.
    assert re.search(r'"x":\["0","50,000","200,000","1,000,000"\]', page)
    assert re.search(r'"y":\["moderate","aggressive"\]', page)


def test_aggregate_table_and_failures_listed(two_parameter: tuple[Path, str]) -> None:
    _, page = two_parameter
    text = _text(page)
    assert "5. The aggregate" in text and "6. Failed tasks" in text
    # Point 4 is (200,000, moderate): 2 of 100 runs with ADL, and its fund drawdown p95.
    assert "4 200,000 moderate 100 0 2.0 % 0.6 % – 7.0 % 2,000 8,000 12,000" in text
    assert text.count("RuntimeError: the path ran out of candles") == 2
    # point 1 is (0 USDT, aggressive); its failed tasks are seeds 98 and 99.
    assert re.search(r"<tr><td class=\"num\">1</td><td>0</td><td>aggressive</td>"
                     r"<td class=\"num\">98</td><td class=\"num\">1000101</td>", page)  # fmt: skip
    assert "2 task(s) raised" in text


def test_numeric_parameter_sorted_by_value_not_file_order(tmp_path: Path) -> None:
    funds = [1_000_000, 0, 200_000]
    write_sweep(
        tmp_path,
        [(FUND, funds, None), ("exchange.clearance_fee", [0.01, 0.005], None)],
        {(str(f), str(c)): 0 for f in funds for c in (0.01, 0.005)},
    )
    sweep = read_sweep(tmp_path)
    assert sweep.axes[0].labels == ("0", "200000", "1000000")
    assert sweep.axes[1].labels == ("0.005", "0.01")
    text = _text(build_sweep_report(tmp_path).read_text(encoding="utf-8"))
    assert "With clearance fee 0.005, the smallest insurance fund" in text
    assert "was 0 USDT (P(ADL) 0.0 % over 100 runs, 95 % interval 0.0 % – 3.7 %)" in text


# -- one parameter: a line chart ------------------------------------------------------------


def test_one_parameter_sweep_draws_a_line_with_error_bars(tmp_path: Path) -> None:
    adl = {"0": 30, "100000": 4, "500000": 1}
    write_sweep(tmp_path, [(FUND, [0, 100_000, 500_000], None)], {(k,): v for k, v in adl.items()})
    page = build_sweep_report(tmp_path, tmp_path / "elsewhere.html").read_text(encoding="utf-8")
    assert '"type":"heatmap"' not in page
    assert 'id="chart-p-adl"' in page and '"type":"scatter"' in page
    assert '"error_y"' in page
    text = _text(page)
    assert "The smallest insurance fund that kept P(ADL) under 5 % was 100,000 USDT" in text


def test_a_lucky_smaller_fund_is_not_named(tmp_path: Path) -> None:
    # 3 % at 50,000 but 8 % at 100,000: only from 200,000 on does P(ADL) stay under 5 %.
    adl = {"0": 20, "50000": 3, "100000": 8, "200000": 1}
    write_sweep(tmp_path, [(FUND, [0, 50_000, 100_000, 200_000], None)],
                {(k,): v for k, v in adl.items()})  # fmt: skip
    text = _text(build_sweep_report(tmp_path).read_text(encoding="utf-8"))
    assert "The smallest insurance fund that kept P(ADL) under 5 % was 200,000 USDT" in text
    assert "50,000 USDT also came in under the target, but a larger insurance fund did not" in text


def test_no_fund_meets_the_target_in_a_one_parameter_sweep(tmp_path: Path) -> None:
    adl = {"0": 50, "100000": 20}
    write_sweep(tmp_path, [(FUND, [0, 100_000], None)], {(k,): v for k, v in adl.items()})
    text = _text(build_sweep_report(tmp_path).read_text(encoding="utf-8"))
    assert "No insurance fund on the grid kept P(ADL) under 5 %: the lowest was at 100,000" in text


# -- Wilson ----------------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    # 0 of 100: the upper end is z²/(n + z²) = 3.70 % (the "rule of three" is 3 %, Wilson a bit
    # wider); 50 of 100: symmetric, 40.38 % to 59.62 %.
    low, high = wilson(0, 100)
    assert low == 0.0 and math.isclose(high, 1.959964**2 / (100 + 1.959964**2), rel_tol=1e-6)
    low, high = wilson(50, 100)
    assert math.isclose(low, 0.40383, abs_tol=1e-5) and math.isclose(high, 0.59617, abs_tol=1e-5)
    assert all(math.isnan(v) for v in wilson(0, 0))


# -- refusals --------------------------------------------------------------------------------


def test_missing_files_raise_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"no meta\.json"):
        build_sweep_report(tmp_path)
    with pytest.raises(ReportError, match="not a directory"):
        build_sweep_report(tmp_path / "absent")
    two_parameter_sweep(tmp_path)
    (tmp_path / "aggregate.parquet").unlink()
    with pytest.raises(ReportError, match=r"no aggregate\.parquet"):
        build_sweep_report(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("target_p_adl"), "no 'target_p_adl'"),
        (lambda m: m.update(target_p_adl=1.5), "must be in \\(0, 1\\)"),
        (lambda m: m.update(seeds="100"), "'seeds' must be an integer"),
        (lambda m: m.update(parameters=[]), "'parameters' is empty"),
        (lambda m: m["parameters"][1].update(labels=["moderate", "wild"]), "does not list"),
    ],
    ids=["no target", "target out of range", "seeds not int", "no parameters", "label unknown"],
)
def test_malformed_meta_raises_report_error(tmp_path: Path, change: Any, message: str) -> None:
    two_parameter_sweep(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))
    change(meta)
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ReportError, match=message):
        build_sweep_report(tmp_path)


def test_malformed_aggregate_raises_report_error(tmp_path: Path) -> None:
    two_parameter_sweep(tmp_path)
    table = pq.read_table(tmp_path / "aggregate.parquet").drop_columns(["p_adl"])
    pq.write_table(table, tmp_path / "aggregate.parquet")
    with pytest.raises(ReportError, match="missing column\\(s\\) p_adl"):
        build_sweep_report(tmp_path)
    (tmp_path / "aggregate.parquet").write_text("not parquet", encoding="utf-8")
    with pytest.raises(ReportError, match="cannot read it as parquet"):
        build_sweep_report(tmp_path)


# -- more parameters, no fund parameter, reproducibility ----------------------------------------


def test_three_parameters_pool_the_third_in_each_heatmap(tmp_path: Path) -> None:
    # shock 10 % and 20 %: in each (fund, leverage) cell the two points pool into 200 runs.
    shocks = [0.1, 0.2]
    adl = {
        (str(f), lev, str(s)): n + (4 if s == 0.2 else 0)
        for (f, lev), n in ADL_RUNS.items()
        for s in shocks
    }
    write_sweep(
        tmp_path,
        [
            (FUND, list(FUNDS), None),
            (LEVERAGE, ["lo", "hi"], ["moderate", "aggressive"]),
            ("shocks.0.size", shocks, None),
        ],
        adl,
    )
    meta = json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))
    meta["fixed"] = {"agents.traders.count": 1500}
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    page = build_sweep_report(tmp_path).read_text(encoding="utf-8")
    assert page.count('"type":"heatmap"') == 2  # fund × leverage and fund × shock size
    # (200,000, moderate): 2 + 6 ADL runs in 200: 4.0 %.
    assert "4.0 %\\u003cbr\\u003en=200" in page
    text = _text(page)
    assert "set agents.traders.count 1500" in text
    # Per full setting: moderate with a 0.1 shock is under 5 % from 200,000 (2 %), with a 0.2
    # shock (6 %) only at 1,000,000 (4 %).
    assert (
        "With leverage 'moderate' and size 0.1, the smallest insurance fund that kept P(ADL) "
        "under 5 % was 200,000 USDT" in text
    )
    assert (
        "With leverage 'moderate' and size 0.2, the smallest insurance fund that kept P(ADL) "
        "under 5 % was 1,000,000 USDT (P(ADL) 4.0 % over 100 runs" in text
    )
    assert text.count("No insurance fund on the grid kept P(ADL) under 5 % with leverage") == 2


def test_a_sweep_without_the_fund_says_so(tmp_path: Path) -> None:
    fees = [0.0, 0.005, 0.015]
    write_sweep(
        tmp_path,
        [("exchange.clearance_fee", fees, None)],
        {(str(f),): n for f, n in zip(fees, (9, 5, 1), strict=True)},
    )
    text = _text(build_sweep_report(tmp_path).read_text(encoding="utf-8"))
    assert "This sweep does not vary the insurance fund (exchange.insurance_fund)" in text
    assert "P(ADL) against clearance fee" in text


def test_same_results_give_the_same_page(tmp_path: Path) -> None:
    two_parameter_sweep(tmp_path)
    first = build_sweep_report(tmp_path).read_bytes()
    assert build_sweep_report(tmp_path).read_bytes() == first
