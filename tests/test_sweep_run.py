"""Running sweeps: backends and worker counts agree, a killed sweep resumes, failures are rows.

The sweep here is tiny on purpose: `liquidation-distance` cut to 60 one-minute steps and 40
traders (its 30 % fall moved to start at 10 minutes and last 30), 2 insurance-fund sizes x 2
clearance fees x 2 seeds = 8 tasks of about 0.15 s each. A task of the
"strategy.class = no_such_strategies:Nothing" grid value fails at run time (the sweep file is
valid, but no worker can import the module), which is how a real failure, not a mock, is made.
A value the scenario refuses (a shock that would end after the path) is refused at load time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpex.sweep import runner as sweep_runner
from perpex.sweep.runner import SweepResult, run_sweep
from perpex.sweep.spec import SweepError, SweepSpec, load_sweep, tasks

TINY = """\
name = "{name}"
question = "Does a bigger fund or fee keep a 30 % fall from reaching ADL?"
scenario = "liquidation-distance"
seeds = {seeds}
target_p_adl = 0.05
metrics = ["liquidations", "adl_events", "insurance_fund_end"]

[set]
{fixed}
[[parameters]]
key = "{first_key}"
values = {first_values}

[[parameters]]
key = "exchange.clearance_fee"
values = [0.0, 0.01]
"""


def write_sweep(
    directory: Path,
    name: str = "tiny",
    *,
    seeds: int = 2,
    first_key: str = "exchange.insurance_fund",
    first_values: str = "[0, 2_000]",
) -> Path:
    fixed = {
        "agents.traders.count": "40",
        "path.steps": "60",
        "shocks[0].at": '"600"',
        "shocks[0].minutes": "30.0",
    }
    fixed.pop(first_key, None)  # the grid's parameter, not a fixed value
    text = TINY.format(
        name=name,
        seeds=seeds,
        fixed="".join(f'"{key}" = {value}\n' for key, value in fixed.items()),
        first_key=first_key,
        first_values=first_values,
    )
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


MISSING = "no_such_strategies:Nothing"
MISSING_ERROR = f"ValueError: strategy '{MISSING}': no module named 'no_such_strategies'"


def test_a_shock_the_path_cannot_hold_is_refused_at_load_time(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, first_key="shocks[0].minutes", first_values="[30.0, 120.0]")
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert str(info.value).startswith(
        f"{path}: parameters[0].values[1]: shocks[0]: it ends at 2024-01-01T02:10:00Z, after "
        "the path: the path runs from"
    )


def failing_sweep(directory: Path, *, failing_first: bool = False) -> SweepSpec:
    """No strategy (fine) or one in a module no worker can import (ValueError at run time)."""
    values = f'["{MISSING}", ""]' if failing_first else f'["", "{MISSING}"]'
    return load_sweep(
        write_sweep(directory, "failing", first_key="strategy.class", first_values=values)
    )


def sweep(spec: SweepSpec, out: Path, **options: Any) -> SweepResult:
    options.setdefault("workers", 1)
    return run_sweep(spec, out=out, progress=False, **options)


def log_lines(out: Path) -> list[dict[str, Any]]:
    text = (out / "tasks.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def without_seconds(table: pa.Table) -> pa.Table:
    return table.drop_columns(["seconds"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SweepSpec:
    return load_sweep(write_sweep(tmp_path_factory.mktemp("sweep")))


@pytest.fixture(scope="module")
def local_two_workers(tiny: SweepSpec, tmp_path_factory: pytest.TempPathFactory) -> SweepResult:
    return sweep(tiny, tmp_path_factory.mktemp("local2"), workers=2)


# -- the result files --------------------------------------------------------------------------
def test_the_files_hold_one_row_per_task_and_one_per_grid_point(
    tiny: SweepSpec, local_two_workers: SweepResult
) -> None:
    out = local_two_workers.out_dir
    assert (local_two_workers.tasks, local_two_workers.ran, local_two_workers.failed) == (8, 8, 0)
    assert local_two_workers.stopped is None
    task_rows = pq.read_table(out / "tasks.parquet").to_pylist()
    assert [(r["point"], r["seed_index"]) for r in task_rows] == [
        (p, s) for p in range(4) for s in range(2)
    ]
    assert [r["seed"] for r in task_rows] == [t.seed for t in tasks(tiny)]
    assert [r["exchange.insurance_fund"] for r in task_rows[::2]] == ["0", "0", "2000", "2000"]
    assert all(r["error"] is None and r["seconds"] > 0 for r in task_rows)
    # the always-kept metrics are there although the sweep did not ask for them
    assert {"bad_debt", "insurance_fund_min", "liquidated_notional"} <= set(task_rows[0])
    assert len(log_lines(out)) == 8

    agg = pq.read_table(out / "aggregate.parquet")
    assert agg.column_names == [
        "point", "exchange.insurance_fund", "exchange.clearance_fee",
        "exchange.insurance_fund#value", "exchange.clearance_fee#value", "tasks", "failures",
        "p_adl", "fund_drawdown_p50", "fund_drawdown_p95", "fund_drawdown_p99",
        "bad_debt_mean", "bad_debt_p99", "liquidated_notional_p50", "liquidated_notional_p99",
    ]  # fmt: skip
    rows = agg.to_pylist()
    assert rows == local_two_workers.aggregate
    assert [r["tasks"] for r in rows] == [2, 2, 2, 2]
    # no fund, no fee: the fall's bankrupt longs go to ADL (the figures the grid is about)
    assert rows[0]["p_adl"] == 1.0
    # P(ADL) is the share of a point's seeds with an ADL fill, recomputed from its task rows
    for row in rows:
        seeds = [r for r in task_rows if r["point"] == row["point"]]
        assert row["p_adl"] == sum(r["adl_events"] > 0 for r in seeds) / len(seeds)
        drawdowns = sorted(r["insurance_fund_start"] - r["insurance_fund_min"] for r in seeds)
        assert row["fund_drawdown_p50"] == pytest.approx(sum(drawdowns) / 2)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["name"] == "tiny" and meta["seeds"] == 2 and meta["tasks"] == 8
    assert [p["labels"] for p in meta["parameters"]] == [["0", "2000"], ["0.0", "0.01"]]


def test_one_and_two_workers_give_the_same_files(
    tiny: SweepSpec, local_two_workers: SweepResult, tmp_path: Path
) -> None:
    one = sweep(tiny, tmp_path, workers=1)
    two = local_two_workers.out_dir
    assert (tmp_path / "aggregate.parquet").read_bytes() == (two / "aggregate.parquet").read_bytes()
    assert without_seconds(pq.read_table(tmp_path / "tasks.parquet")).equals(
        without_seconds(pq.read_table(two / "tasks.parquet"))
    )
    assert one.aggregate == local_two_workers.aggregate


def test_ray_gives_the_same_aggregate_as_the_local_pool(
    tiny: SweepSpec, local_two_workers: SweepResult, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    result = sweep(tiny, tmp_path, backend="ray", workers=2)
    assert (result.ran, result.failed, result.stopped) == (8, 0, None)
    local = local_two_workers.out_dir
    assert pq.read_table(tmp_path / "aggregate.parquet").equals(
        pq.read_table(local / "aggregate.parquet")
    )
    assert without_seconds(pq.read_table(tmp_path / "tasks.parquet")).equals(
        without_seconds(pq.read_table(local / "tasks.parquet"))
    )


# -- resume --------------------------------------------------------------------------------------
def _sweep_command(path: Path, out: Path) -> list[str]:
    """``perpex sweep`` in a process of its own."""
    return [
        sys.executable, "-m", "perpex.cli", "sweep", str(path), "--workers", "1",
        "--out", str(out),
    ]  # fmt: skip


def test_a_killed_sweep_resumes_without_redoing_finished_tasks(tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path, "resumable", seeds=6))  # 24 tasks
    out = tmp_path / "out"
    log = out / "tasks.jsonl"
    # its own session, so that SIGKILL to the group takes the pool's workers with the driver
    proc = subprocess.Popen(
        _sweep_command(tmp_path / "resumable.toml", out),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and log.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    before = log.read_bytes()
    finished = before.count(b"\n")
    assert 3 <= finished < 24
    assert not (out / "aggregate.parquet").exists()

    result = sweep(spec, out, workers=2, resume=True)
    assert (result.skipped, result.ran, result.failed) == (finished, 24 - finished, 0)
    lines = log_lines(out)
    assert len(lines) == 24  # one line per task: nothing finished ran twice
    assert sorted((r["point"], r["seed_index"]) for r in lines) == [
        (t.point, t.seed_index) for t in tasks(spec)
    ]
    fresh = sweep(spec, tmp_path / "fresh", workers=2)
    assert pq.read_table(out / "aggregate.parquet").equals(
        pq.read_table(fresh.out_dir / "aggregate.parquet")
    )
    assert result.aggregate == fresh.aggregate


def test_resume_cuts_a_torn_last_line_and_reruns_only_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_sweep(write_sweep(tmp_path))
    out = tmp_path / "out"
    real_task = sweep_runner.run_task
    calls: list[tuple[int, int]] = []

    def flaky(spec: SweepSpec, point: int, seed_index: int, seed: int) -> dict[str, Any]:
        calls.append((point, seed_index))
        if point == 3:
            raise OSError("disk full")  # not the simulator's fault: it deserves a retry
        return real_task(spec, point, seed_index, seed)

    monkeypatch.setattr(sweep_runner, "run_task", flaky)
    first = sweep(spec, out, backend="inline")
    assert (first.ran, first.failed) == (8, 2)
    assert [e["error"] for e in first.errors] == ["OSError: disk full"] * 2
    log = out / "tasks.jsonl"
    with log.open("ab") as f:
        f.write(b'{"point": 0, "seed_ind')  # a write cut short by a kill
    calls.clear()
    monkeypatch.setattr(sweep_runner, "run_task", real_task)
    counted: list[tuple[int, int]] = []

    def counting(spec: SweepSpec, point: int, seed_index: int, seed: int) -> dict[str, Any]:
        counted.append((point, seed_index))
        return real_task(spec, point, seed_index, seed)

    monkeypatch.setattr(sweep_runner, "run_task", counting)
    second = sweep(spec, out, backend="inline", resume=True)
    assert counted == [(3, 0), (3, 1)]  # only the failed tasks ran again
    assert (second.skipped, second.ran, second.failed) == (6, 2, 0)
    assert log.read_bytes().endswith(b"\n")
    assert len(log_lines(out)) == 10  # 8 first, 2 retries; the torn line is gone
    assert second.aggregate == sweep(spec, tmp_path / "fresh", backend="inline").aggregate


def test_resume_refuses_another_sweeps_directory(tmp_path: Path) -> None:
    sweep(load_sweep(write_sweep(tmp_path)), tmp_path / "out", backend="inline")
    other = load_sweep(write_sweep(tmp_path, seeds=3))
    with pytest.raises(SweepError, match=r"meta\.json: seeds: differs"):
        sweep(other, tmp_path / "out", backend="inline", resume=True)


# -- failures ------------------------------------------------------------------------------------
def test_a_failing_task_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    spec = failing_sweep(tmp_path)
    result = sweep(spec, tmp_path / "out", workers=2)
    assert (result.stopped, result.ran, result.failed) == (None, 8, 4)
    task_rows = pq.read_table(tmp_path / "out" / "tasks.parquet").to_pylist()
    failed = [r for r in task_rows if r["error"] is not None]
    assert [r["strategy.class"] for r in failed] == [MISSING] * 4
    assert [r["seed"] for r in failed] == [t.seed for t in tasks(spec) if t.point >= 2]
    assert all(r["error"].startswith(MISSING_ERROR) for r in failed)
    assert all(r["liquidations"] is None and r["bad_debt"] is None for r in failed)
    agg = result.aggregate
    assert [(r["tasks"], r["failures"]) for r in agg] == [(2, 0), (2, 0), (2, 2), (2, 2)]
    assert agg[3]["p_adl"] != agg[3]["p_adl"]  # NaN: no successful task to estimate it from


def test_fail_fast_stops_at_the_first_failure(tmp_path: Path) -> None:
    spec = failing_sweep(tmp_path, failing_first=True)
    out = tmp_path / "out"
    result = sweep(spec, out, workers=1, fail_fast=True)
    assert result.stopped is not None and MISSING_ERROR in result.stopped
    assert f"seed {tasks(spec)[0].seed}" in result.stopped
    assert result.ran == 1 and result.ran < result.tasks
    assert len(log_lines(out)) == 1
    assert not (out / "aggregate.parquet").exists() and not (out / "tasks.parquet").exists()


# -- the command line ----------------------------------------------------------------------------
def _console_sweep(name: str, out: Path, **options: Any) -> None:
    from perpex.sweep.console import sweep as sweep_body

    defaults: dict[str, Any] = {
        "backend": "local", "workers": 1, "address": None, "resume": False, "fail_fast": False,
    }  # fmt: skip
    sweep_body(name, out=str(out), **(defaults | options))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("no-such-sweep", {}, "no-such-sweep"),
        ("TINY", {"backend": "slurm"}, "--backend slurm: must be one of local, ray"),
        ("TINY", {"workers": 0}, "--workers 0: must be an integer >= 1"),
        ("TINY", {"address": "10.0.0.1:6379"}, "--address 10.0.0.1:6379: only the ray backend"),
    ],
    ids=["unknown sweep", "unknown backend", "no workers", "address without ray"],
)
def test_a_users_mistake_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    options: dict[str, Any],
    message: str,
) -> None:
    if name == "TINY":
        name = str(write_sweep(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        _console_sweep(name, tmp_path / "out", **options)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_an_out_dir_that_is_a_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_the_way = tmp_path / "results"
    in_the_way.write_text("not a directory", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        _console_sweep(str(write_sweep(tmp_path)), in_the_way, backend="inline")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --out {in_the_way}: cannot make the results directory: a file is in the way\n"
    )
    assert in_the_way.read_text(encoding="utf-8") == "not a directory"


def test_the_command_prints_the_aggregate_and_fail_fast_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # the table's headers on one line each
    _console_sweep(str(write_sweep(tmp_path)), tmp_path / "ok", backend="inline")
    printed = capsys.readouterr().out
    assert "tiny: aggregate per grid point" in printed and "P(ADL) %" in printed
    assert "8 run now, 0 resumed, 0 failed" in printed

    failing_sweep(tmp_path, failing_first=True)
    with pytest.raises(SystemExit) as exit_info:
        _console_sweep(str(tmp_path / "failing.toml"), tmp_path / "ff", fail_fast=True)
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.splitlines()[-1]  # under the progress bar
    assert last.startswith(f"error: --fail-fast: point 0 (strategy.class={MISSING}") and (
        MISSING_ERROR in last
    )


def test_sweeps_lists_the_shipped_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    from perpex.sweep.console import sweeps
    from perpex.sweep.spec import shipped_sweeps

    sweeps(as_json=True)
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"name": n, "question": q} for n, q in shipped_sweeps()]
    assert {"insurance-fund-sizing", "insurance-fund-sizing-small"} <= {r["name"] for r in listed}
