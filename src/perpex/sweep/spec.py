"""Sweep files: strict TOML to a `SweepSpec`, its grid of parameter points and its seeded tasks.

A sweep names one base scenario (``scenario = "covid-2020-03-12"``, a shipped name or a path
relative to the sweep file; or the whole scenario inline as a ``[base]`` table, whose `name`
and `question` default to the sweep's), fixed overrides (``[set]``, dotted keys as ``--set``
takes them), the parameters to vary (``[[parameters]]``: a dotted `key` and its `values`, or a
`range`), the seeds per grid point and the summary keys to keep (`metrics`). Every value of
every parameter is applied to the base scenario (with ``[set]``) when the file is read, so a
value the scenario refuses is refused here, naming ``parameters[i].values[j]``. Each refusal
is one `SweepError` line ``<file>: <dotted.key>: <reason>``. Units are the scenario's own
(USDT, fractions); nothing here converts them.

The grid is the product of the parameters' values in file order, the last one fastest; a
task is (grid point, seed index) and its seed comes from (the sweep's name, point, seed index)
through crc32 and `numpy.random.SeedSequence`, never Python's `hash`, so it does not depend on
the process, the backend or the worker count.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np

from perpex.sim.scenario import (
    ScenarioError,
    load_scenario,
    parse_set,
    read_scenario,
    with_overrides,
)
from perpex.sim.scenario_model import Scenario
from perpex.sim.scenario_schema import Invalid, describe, unknown_key

SUFFIX: Final = ".toml"
MAX_SEEDS: Final = 10_000
MAX_TASKS: Final = 100_000  # grid points x seeds: beyond this a sweep is a typo, not a plan
# Exactly the keys `perpex.sim.runner._summary` returns, in its order (a test runs the
# simulator and compares).
SUMMARY_KEYS: Final[tuple[str, ...]] = (
    "scenario", "seed", "steps", "liquidations", "long_liquidations", "short_liquidations",
    "liquidated_notional", "long_liquidated_notional", "short_liquidated_notional",
    "long_share_pct", "insurance_fund_start", "insurance_fund_min", "insurance_fund_end",
    "adl_events", "adl_notional", "bad_debt", "funding_paid", "stop_orders_triggered",
    "stop_slippage_mean", "open_interest_start", "open_interest_min", "open_interest_end",
    "accounts_below_zero", "last_price_low", "last_price_high", "mark_price_low",
    "traded_notional", "strategy_pnl", "strategy_max_drawdown", "strategy_liquidations",
    "strategy_stops_triggered", "commands", "events", "state_hash",
)  # fmt: skip
# Summary keys that are text: tasks.parquet keeps metrics as numbers.
_TEXT_KEYS: Final = frozenset({"scenario", "state_hash"})
DEFAULT_METRICS: Final[tuple[str, ...]] = (
    "liquidations", "liquidated_notional", "insurance_fund_min", "adl_events",
    "adl_notional", "bad_debt",
)  # fmt: skip
DEFAULT_TARGET_P_ADL: Final = 0.05

_TOP_KEYS: Final = (
    "name", "question", "scenario", "base", "seeds", "target_p_adl", "metrics", "set",
    "parameters",
)  # fmt: skip
_PARAMETER_KEYS: Final = ("key", "values", "range", "labels")
_RANGE_KEYS: Final = ("start", "stop", "num", "step")
_PATH_KEYS: Final = ("data.", "path.", "shocks")  # keys that change the price path
MAX_PATH_CHECKS: Final = 1_000  # path builds a sweep's load may make (each a few ms)
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BASE_MARK: Final = "[base]"  # `scenario` and `scenario_path` of a sweep with a [base] table


class SweepError(ValueError):
    """A sweep that cannot be read: one line, ``<file>: <dotted.key>: <reason>``."""


@dataclass(frozen=True)
class Parameter:
    """One axis of the grid: a scenario key (as ``--set`` spells it), its values (numbers,
    strings, booleans or tables, as TOML gave them) and one label per value."""

    key: str
    values: tuple[object, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file, read and checked. `fixed` is the ``[set]`` table as (key, value) pairs in
    file order. `scenario` is as written (``"[base]"`` for an inline base scenario) and
    `scenario_path` a shipped name or an absolute path; `base` is the base scenario itself
    (before ``[set]``), so a task need not read it again: use `scenario_for`."""

    name: str
    question: str
    scenario: str
    scenario_path: str
    seeds: int
    target_p_adl: float
    metrics: tuple[str, ...]
    fixed: tuple[tuple[str, object], ...]
    parameters: tuple[Parameter, ...]
    source: str
    base: Scenario | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GridPoint:
    """One setting of every parameter (values and labels in parameter order)."""

    index: int
    values: tuple[object, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """One run: grid point `point` with its `seed_index`-th seed."""

    point: int
    seed_index: int
    seed: int


# -- loading ----------------------------------------------------------------------------------
def _shipped_dir() -> Path:
    return Path(str(resources.files("perpex").joinpath("sweep", "sweeps")))


def _shipped_names() -> list[str]:
    return sorted(p.name.removesuffix(SUFFIX) for p in _shipped_dir().glob(f"*{SUFFIX}"))


def _read_file(path: Path, origin: str, source: str, shipped_name: str = "") -> SweepSpec:
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{origin}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{origin}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{origin}: cannot read: {exc}") from None
    try:
        spec = _read(raw, source, path.resolve().parent)
        if shipped_name and spec.name != shipped_name:
            raise Invalid("name", f"{spec.name!r} must match the file name {shipped_name!r}")
    except Invalid as exc:
        raise SweepError(f"{origin}: {exc.path}: {exc.reason}") from None
    return spec


def load_sweep(name_or_path: str | Path) -> SweepSpec:
    """A shipped sweep by name (``"insurance-fund-sizing-small"``) or a ``.toml`` file by path.

    A string without a ``/`` and without the ``.toml`` suffix is a shipped name first (then an
    existing file of that name); anything else is a path. `SweepSpec.source` holds the name or
    the path as given."""
    if isinstance(name_or_path, str) and not (
        name_or_path.endswith(SUFFIX) or "/" in name_or_path or "\\" in name_or_path
    ):
        names = _shipped_names()
        if name_or_path in names:
            origin = f"{name_or_path}{SUFFIX}"
            return _read_file(_shipped_dir() / origin, origin, name_or_path, name_or_path)
        if Path(name_or_path).is_file():
            return _read_file(Path(name_or_path), name_or_path, name_or_path)
        match = [n for n in names if n.startswith(name_or_path)] or difflib.get_close_matches(
            name_or_path, names, n=1
        )
        hint = f" (did you mean {match[0]!r}?)" if len(match) == 1 else ""
        raise SweepError(
            f"{name_or_path}: unknown sweep{hint}; the shipped ones are {', '.join(names)}"
            " (or give the path of a .toml file)"
        )
    return _read_file(Path(name_or_path), str(name_or_path), str(name_or_path))


def shipped_sweeps() -> list[tuple[str, str]]:
    """(name, question) of every shipped sweep, sorted by name."""
    return [(name, load_sweep(name).question) for name in _shipped_names()]


# -- reading ----------------------------------------------------------------------------------
def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scenario_reason(exc: ScenarioError, origin: str) -> str:
    """A scenario's one-line refusal without its origin (the sweep names its own file)."""
    message = str(exc)
    return message.removeprefix(f"{origin}: ")


def _read(raw: Mapping[str, Any], source: str, directory: Path) -> SweepSpec:
    for key in raw:
        if key not in _TOP_KEYS:
            raise Invalid(str(key), unknown_key(key, _TOP_KEYS))
    name = _text(raw, "name")
    if not _NAME_RE.fullmatch(name):
        raise Invalid("name", f"must be letters, digits, '.', '_' or '-', got {name!r}")
    question = _text(raw, "question")
    scenario, scenario_path, base = _base(raw, name, question, directory)
    seeds = raw.get("seeds")
    if seeds is None:
        raise Invalid("seeds", f"missing (the seeds per grid point, 1 to {MAX_SEEDS})")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
        raise Invalid("seeds", f"must be an integer in [1, {MAX_SEEDS}], got {describe(seeds)}")
    target = raw.get("target_p_adl", DEFAULT_TARGET_P_ADL)
    if not _is_number(target) or not 0 < target < 1:
        raise Invalid("target_p_adl", f"must be a number in (0, 1), got {describe(target)}")
    metrics = _metrics(raw.get("metrics", list(DEFAULT_METRICS)))
    fixed_raw = raw.get("set", {})
    if not isinstance(fixed_raw, Mapping):
        raise Invalid("set", f"must be a table of dotted keys, got {describe(fixed_raw)}")
    fixed = tuple((str(k), v) for k, v in fixed_raw.items())
    for key, _ in fixed:
        _check_key(key, f'set."{key}"')
    try:
        with_set = with_overrides(base, dict(fixed))
    except ScenarioError as exc:
        reason = _scenario_reason(exc, base.source)
        where = next((f'set."{k}"' for k, _ in fixed if reason.startswith(k)), "set")
        raise Invalid(where, reason) from None
    items = raw.get("parameters", [])
    if not isinstance(items, list):
        raise Invalid("parameters", f"must be an array of tables, got {describe(items)}")
    parameters = tuple(_parameter(item, f"parameters[{i}]") for i, item in enumerate(items))
    count = math.prod(len(p.values) for p in parameters) * seeds
    if count > MAX_TASKS:
        raise Invalid("seeds", f"{count:,} tasks (grid points x seeds) is more than {MAX_TASKS:,}")
    fixed_keys = {k for k, _ in fixed}
    for i, p in enumerate(parameters):
        where = f"parameters[{i}]"
        if p.key in fixed_keys:
            raise Invalid(f"{where}.key", f"{p.key!r} is also in [set]: vary it or fix it")
        first = next((j for j, q in enumerate(parameters) if q.key == p.key), i)
        if first != i:
            raise Invalid(f"{where}.key", f"{p.key!r} repeats parameters[{first}].key")
        for j, value in enumerate(p.values):
            try:
                with_overrides(with_set, {p.key: value})
            except ScenarioError as exc:
                raise Invalid(
                    f"{where}.values[{j}]", _scenario_reason(exc, with_set.source)
                ) from None
    _check_paths(with_set, parameters)
    return SweepSpec(
        name, question, scenario, scenario_path, seeds, float(target), metrics, fixed,
        parameters, source, base,
    )  # fmt: skip


def _check_paths(with_set: Scenario, parameters: tuple[Parameter, ...]) -> None:
    """Every price path the grid asks for can be built (its data window holds candles, its
    shocks lie inside it): else one line naming the [set] or the values, before any task runs,
    instead of every task of those points failing alike. One build per combination of the
    parameters that change the path (none: the [set] alone); a grid with more than
    `MAX_PATH_CHECKS` of them is left to its tasks."""
    from perpex.sim.build import build_path
    from perpex.sim.data import DataError

    varying = [(i, p) for i, p in enumerate(parameters) if p.key.startswith(_PATH_KEYS)]
    if math.prod(len(p.values) for _, p in varying) > MAX_PATH_CHECKS:
        return
    for picks in itertools.product(*(range(len(p.values)) for _, p in varying)):
        chosen = [(i, p, j) for (i, p), j in zip(varying, picks, strict=True)]
        where = ", ".join(f"parameters[{i}].values[{j}]" for i, _, j in chosen) or "set"
        try:
            scenario = with_overrides(with_set, {p.key: p.values[j] for _, p, j in chosen})
            build_path(scenario, 0)
        except ScenarioError as exc:
            raise Invalid(where, _scenario_reason(exc, with_set.name)) from None
        except DataError as exc:
            raise Invalid(where, str(exc)) from None


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        raise Invalid(key, "missing (a required key)")
    if not isinstance(value, str) or not value.strip():
        raise Invalid(key, f"must be a non-empty string, got {describe(value)}")
    return value


def _base(
    raw: Mapping[str, Any], name: str, question: str, directory: Path
) -> tuple[str, str, Scenario]:
    """(scenario as written, as resolved, the scenario) from `scenario` or `[base]`."""
    written = raw.get("scenario")
    table = raw.get("base")
    if (written is None) == (table is None):
        reason = "missing" if written is None else "give either scenario or [base], not both"
        raise Invalid("scenario", f"{reason} (a shipped scenario, a path, or a [base] table)")
    if table is not None:
        if not isinstance(table, Mapping):
            raise Invalid("base", f"must be a table holding a scenario, got {describe(table)}")
        origin = f"{name}{_BASE_MARK}"
        try:
            scenario = read_scenario({"name": name, "question": question, **table}, origin)
        except ScenarioError as exc:
            raise Invalid("base", _scenario_reason(exc, origin)) from None
        return _BASE_MARK, _BASE_MARK, scenario
    if not isinstance(written, str) or not written:
        raise Invalid("scenario", f"must be a scenario name or path, got {describe(written)}")
    shipped = not (written.endswith(SUFFIX) or "/" in written or "\\" in written)
    resolved = written if shipped else str((directory / written).resolve())
    try:
        return written, resolved, load_scenario(resolved)
    except ScenarioError as exc:
        raise Invalid("scenario", _scenario_reason(exc, resolved)) from None


def _metrics(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(
            "metrics", f"must be a non-empty array of summary keys, got {describe(value)}"
        )
    for j, key in enumerate(value):
        where = f"metrics[{j}]"
        if not isinstance(key, str):
            raise Invalid(where, f"must be a summary key (a string), got {describe(key)}")
        if key not in SUMMARY_KEYS:
            match = difflib.get_close_matches(key, SUMMARY_KEYS, n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise Invalid(where, f"{key!r} is not a key of the simulator's summary{hint}")
        if key in _TEXT_KEYS:
            raise Invalid(where, f"{key!r} is text; the metrics kept are numbers")
        if key in value[:j]:
            raise Invalid(where, f"{key!r} is listed twice")
    return tuple(value)


def _check_key(key: str, where: str) -> None:
    """Refuse a key the ``--set`` syntax cannot reach (unknown, misspelt, not a table)."""
    item = f"{key}=none"
    try:
        parse_set([item])
    except ScenarioError as exc:
        raise Invalid(where, _scenario_reason(exc, f"--set {item!r}")) from None


def _parameter(item: object, where: str) -> Parameter:
    if not isinstance(item, Mapping):
        raise Invalid(where, f"must be a table ([[parameters]]), got {describe(item)}")
    for key in item:
        if key not in _PARAMETER_KEYS:
            raise Invalid(f"{where}.{key}", unknown_key(key, _PARAMETER_KEYS))
    key = item.get("key")
    if not isinstance(key, str) or not key:
        raise Invalid(f"{where}.key", f"must be a dotted scenario key, got {describe(key)}")
    _check_key(key, f"{where}.key")
    if ("values" in item) == ("range" in item):
        raise Invalid(f"{where}.values", "give either values or range (exactly one)")
    if "range" in item:
        values = _range(item["range"], f"{where}.range")
    else:
        values = item["values"]
        if not isinstance(values, list) or not values:
            got = "an empty array" if values == [] else describe(values)
            raise Invalid(f"{where}.values", f"must be a non-empty array, got {got}")
        for j, value in enumerate(values):
            if not (_is_number(value) or isinstance(value, str | bool | Mapping)):
                raise Invalid(
                    f"{where}.values[{j}]",
                    f"must be a number, a string, a boolean or a table, got {describe(value)}",
                )
        _once([f"{type(v).__name__}:{v!r}" for v in values], f"{where}.values", "value")
    labels = item.get("labels")
    if labels is None:
        labels = [label_of(v) for v in values]
    elif not isinstance(labels, list) or not all(isinstance(s, str) and s for s in labels):
        raise Invalid(f"{where}.labels", "must be an array of non-empty strings")
    elif len(labels) != len(values):
        raise Invalid(
            f"{where}.labels", f"has {len(labels)} labels for {len(values)} values (one each)"
        )
    _once(labels, f"{where}.labels", "label")
    return Parameter(key, tuple(values), tuple(labels))


def _once(keys: list[str], where: str, what: str) -> None:
    """Refuse a repeated value or label (a grid point twice, or two points one label)."""
    first: dict[str, int] = {}
    for j, key in enumerate(keys):
        if first.setdefault(key, j) != j:
            raise Invalid(f"{where}[{j}]", f"the same {what} as {where}[{first[key]}]")


def _range(value: object, where: str) -> list[object]:
    """``{start, stop, num}`` (inclusive linspace) or ``{start, stop, step}`` (start, start +
    step, ... up to stop, which is included when a step lands on it)."""
    if not isinstance(value, Mapping):
        raise Invalid(where, f"must be a table {{start, stop, num or step}}, got {describe(value)}")
    for key in value:
        if key not in _RANGE_KEYS:
            raise Invalid(f"{where}.{key}", unknown_key(key, _RANGE_KEYS))
    for key in ("start", "stop"):
        if key not in value:
            raise Invalid(f"{where}.{key}", "missing (a required key)")
    if ("num" in value) == ("step" in value):
        raise Invalid(where, "give either num or step (exactly one)")
    for key in value:
        number = value[key]
        if not _is_number(number) or not math.isfinite(number):
            raise Invalid(f"{where}.{key}", f"must be a number, got {describe(number)}")
    start, stop = value["start"], value["stop"]
    if stop < start:
        raise Invalid(f"{where}.stop", f"must be >= start, got {stop} < {start}")
    if "num" in value:
        num = value["num"]
        if not isinstance(num, int) or not 1 <= num <= MAX_TASKS:
            raise Invalid(f"{where}.num", f"must be an integer in [1, {MAX_TASKS}], got {num}")
        if num == 1 and stop != start:
            raise Invalid(f"{where}.num", "must be >= 2 when stop differs from start")
        whole = all(isinstance(v, int) for v in (start, stop)) and (
            num == 1 or (stop - start) % (num - 1) == 0
        )
        if whole:
            return [start + (stop - start) // max(num - 1, 1) * i for i in range(num)]
        return [_tidy(start + (stop - start) * i / (num - 1)) for i in range(num)]
    step = value["step"]
    if not step > 0:
        raise Invalid(f"{where}.step", f"must be > 0, got {step}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_TASKS:
        raise Invalid(f"{where}.step", f"gives {count:,} values, more than {MAX_TASKS:,}")
    if all(isinstance(v, int) for v in (start, stop, step)):
        return [start + step * i for i in range(count)]
    return [_tidy(start + step * i) for i in range(count)]


def _tidy(x: float) -> float:
    """A computed range value without float noise (0.30000000000000004 -> 0.3)."""
    return float(f"{x:.12g}")


def label_of(value: object) -> str:
    """A value as a short label: ``200000``, ``0.005``, ``true``, ``lognormal(median=5,
    sigma=0.6)``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}={label_of(v)}" for k, v in value.items() if k != "kind")
        return f"{value['kind']}({inner})" if "kind" in value else f"{{{inner}}}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(label_of(v) for v in value) + "]"
    return str(value)


# -- the grid and the tasks -------------------------------------------------------------------
def grid(spec: SweepSpec) -> list[GridPoint]:
    """Every combination of the parameters' values, in file order, the last parameter fastest
    (one point with no values when the sweep has no parameters)."""
    axes = [range(len(p.values)) for p in spec.parameters]
    return [
        GridPoint(
            index,
            tuple(p.values[j] for p, j in zip(spec.parameters, combo, strict=True)),
            tuple(p.labels[j] for p, j in zip(spec.parameters, combo, strict=True)),
        )
        for index, combo in enumerate(itertools.product(*axes))
    ]


def task_seed(name: str, point: int, seed_index: int) -> int:
    """The seed of a task, from (sweep name, grid point, seed index): in [0, 2^63)."""
    sequence = np.random.SeedSequence([zlib.crc32(name.encode("utf-8")), point, seed_index])
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def tasks(spec: SweepSpec) -> list[Task]:
    """Every (grid point, seed index), by point then seed index, with its seed."""
    return [
        Task(point.index, seed_index, task_seed(spec.name, point.index, seed_index))
        for point in grid(spec)
        for seed_index in range(spec.seeds)
    ]


def scenario_for(spec: SweepSpec, point: GridPoint) -> Scenario:
    """The base scenario, then ``[set]``, then the point's values."""
    base = spec.base if spec.base is not None else load_scenario(spec.scenario_path)
    overrides = dict(spec.fixed)
    overrides.update((p.key, v) for p, v in zip(spec.parameters, point.values, strict=True))
    return with_overrides(base, overrides)


__all__ = [
    "DEFAULT_METRICS",
    "MAX_SEEDS",
    "MAX_TASKS",
    "SUMMARY_KEYS",
    "GridPoint",
    "Parameter",
    "SweepError",
    "SweepSpec",
    "Task",
    "grid",
    "label_of",
    "load_sweep",
    "scenario_for",
    "shipped_sweeps",
    "task_seed",
    "tasks",
]
