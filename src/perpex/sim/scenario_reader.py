"""Reading a scenario: strict TOML data to a `Scenario`, every refusal naming its key.

The reader is generic: a field's type hint says which TOML values it takes (an integer for
`int`, never a bool; any finite number for `float`; one of the values of a `Literal`; an array
for a tuple; a table for a nested dataclass; absent for `X | None`; an inline table or a bare
number for a `Dist`), unknown keys are refused, then the dataclass's own `__post_init__`
decides which values are valid. A few rules the dataclasses cannot state alone (times, shocks,
the strategy class) are checked here. The keys come from `perpex.sim.scenario_schema`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar, Union, get_args, get_origin

from perpex.parse import start_time_ns
from perpex.sim.agents.base import Dist
from perpex.sim.agents.config import StrategyConfig, WhaleConfig
from perpex.sim.scenario_model import DataSection, PathSection, Scenario, ShockSpec
from perpex.sim.scenario_schema import (
    DIST_KEYS,
    Invalid,
    ScenarioError,
    describe,
    join_key,
    key_hint,
    optional_inner,
    scenario_error,
    toml_keys,
    unknown_key,
)

T = TypeVar("T")

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CLASS_RE: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
# "<field> must ..." from a `__post_init__`: the reason belongs to that field's key.
_FIELD_REASON_RE: Final = re.compile(r"([a-z_][a-z0-9_]*) (must\b.*)", re.DOTALL)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- reading ------------------------------------------------------------------------------------
def _read_table(cls: type[T], raw: object, path: str) -> T:
    if not isinstance(raw, Mapping):
        raise Invalid(path, f"must be a table, got {describe(raw)}")
    keys = toml_keys(cls)
    for key in raw:
        if key not in keys:
            raise Invalid(join_key(path, key), unknown_key(key, list(keys)))
    kwargs: dict[str, Any] = {}
    for key, f in keys.items():
        if key in raw:
            kwargs[f.name] = _value(key_hint(cls, key), raw[key], join_key(path, key))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise Invalid(join_key(path, key), "missing (a required key)")
    try:
        obj = cls(**kwargs)
        check = _EXTRA_CHECKS.get(cls)
        if check is not None:
            check(obj)
    except ValueError as exc:
        raise _from_value_error(cls, path, exc) from None
    return obj


def _from_value_error(cls: type[Any], path: str, exc: ValueError) -> Invalid:
    """A `__post_init__` refusal, put on the key it names when it starts with one."""
    message = str(exc)
    match = _FIELD_REASON_RE.fullmatch(message)
    if match:
        for key, f in toml_keys(cls).items():
            if f.name == match.group(1):
                return Invalid(join_key(path, key), match.group(2))
    return Invalid(path, message)


def _value(hint: Any, value: object, path: str) -> Any:
    """`value` (from TOML) checked against a field's type hint."""
    if hint is Dist:
        return _read_dist(value, path)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _value(optional_inner(hint), value, path)
    if origin is Literal:
        return _literal(get_args(hint), value, path)
    if origin is tuple:
        return _array(get_args(hint)[0], value, path)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _read_table(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise Invalid(path, f"must be true or false, got {describe(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(path, f"must be an integer, got {describe(value)}")
        return value
    if hint is float:
        if not _is_number(value):
            raise Invalid(path, f"must be a number, got {describe(value)}")
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise Invalid(path, f"must be finite, got {describe(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise Invalid(path, f"must be a string, got {describe(value)}")
        return value
    raise TypeError(f"{path}: unsupported field type {hint!r}")  # a new field type: teach me


def _literal(allowed: tuple[Any, ...], value: object, path: str) -> Any:
    for option in allowed:
        if type(option) is type(value) and option == value:
            return option
    shown = ", ".join(repr(a) for a in allowed)
    reason = f"{describe(value)} is not one of {shown}"
    if isinstance(value, str):
        match = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
        if match:
            reason += f" (did you mean {match[0]!r}?)"
    raise Invalid(path, reason)


def _array(item: Any, value: object, path: str) -> tuple[Any, ...]:
    table = isinstance(item, type) and dataclasses.is_dataclass(item)
    if not isinstance(value, list | tuple):
        what = f"an array of tables ([[{path}]])" if table else "an array of numbers"
        raise Invalid(path, f"must be {what}, got {describe(value)}")
    return tuple(_value(item, v, f"{path}[{i}]") for i, v in enumerate(value))


def _read_dist(value: object, path: str) -> Dist:
    if _is_number(value):
        return Dist("fixed", value=_value(float, value, path))
    if not isinstance(value, Mapping):
        raise Invalid(
            path,
            "must be a number or a distribution table such as "
            f'{{kind = "lognormal", median = 10, sigma = 0.8}}, got {describe(value)}',
        )
    if "kind" not in value:
        kinds = ", ".join(repr(k) for k in get_args(key_hint(Dist, "kind")))
        raise Invalid(join_key(path, "kind"), f"missing (one of {kinds})")
    kind = _value(key_hint(Dist, "kind"), value["kind"], join_key(path, "kind"))
    if kind in DIST_KEYS:
        required, optional = DIST_KEYS[kind]
        takes = (*required, *optional)
        for key in value:
            if key != "kind" and key in toml_keys(Dist) and key not in takes:
                raise Invalid(
                    join_key(path, key), f"not used by kind {kind!r} (it takes {', '.join(takes)})"
                )
        for key in required:
            if key not in value:
                raise Invalid(
                    join_key(path, key), f"missing (kind {kind!r} needs {', '.join(required)})"
                )
    return _read_table(Dist, value, path)


# -- rules the dataclasses do not state (messages "<field> must ...", like theirs) -------------
def _iso_ns(name: str, text: str) -> int:
    try:
        return start_time_ns(text)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{name} must be ISO-8601 UTC text such as '2020-03-12T00:00:00Z', got {text!r}"
        ) from None


def _check_at(name: str, text: str) -> None:
    """`at`: seconds from the start of the run (a number >= 0) or ISO-8601 UTC text."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            start_time_ns(text)
        except (ValueError, OverflowError):
            raise ValueError(
                f"{name} must be seconds from the start (e.g. '3600') or ISO-8601 UTC text,"
                f" got {text!r}"
            ) from None
        return
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be seconds >= 0 or ISO-8601 UTC text, got {text!r}")


def _check_scenario(s: Scenario) -> None:
    if not _NAME_RE.fullmatch(s.name):
        raise ValueError(f"name must be letters, digits, '.', '_' or '-', got {s.name!r}")
    if not s.question.strip():
        raise ValueError("question must not be empty: say what the scenario asks")


def _check_data(d: DataSection) -> None:
    start_ns = _iso_ns("start", d.start) if d.start else None
    end_ns = _iso_ns("end", d.end) if d.end else None
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise ValueError(f"end must be after start, got {d.end!r} <= {d.start!r}")


def _check_path(p: PathSection) -> None:
    _iso_ns("start", p.start)


def _check_shock(s: ShockSpec) -> None:
    """The ranges of `perpex.sim.shocks`, checked at load time so the message names the key."""
    _check_at("at", s.at)
    unused = {
        "drop": ("seconds",),
        "pump": ("seconds",),
        "liquidity_gap": ("percent", "minutes"),
        "divergence": ("minutes",),
    }[s.kind]
    for name in unused:
        if getattr(s, name) != 0:
            length = "minutes" if s.kind in ("drop", "pump") else "seconds"
            raise ValueError(f"{name} must be 0 for a {s.kind} (its length is in {length})")
    if s.kind == "drop" and not 0 < s.percent < 100:
        raise ValueError(f"percent must be in (0, 100) for a drop, got {s.percent}")
    if s.kind == "pump" and not 0 < s.percent <= 1000:
        raise ValueError(f"percent must be in (0, 1000] for a pump, got {s.percent}")
    if s.kind == "divergence" and (s.percent == 0 or not -100 < s.percent <= 1000):
        raise ValueError(f"percent must be in (-100, 1000] and not 0, got {s.percent}")
    if s.kind in ("drop", "pump") and s.minutes < 0:
        raise ValueError(f"minutes must be >= 0, got {s.minutes}")
    if s.kind in ("liquidity_gap", "divergence") and not s.seconds > 0:
        raise ValueError(f"seconds must be > 0 for a {s.kind}, got {s.seconds}")


def _check_whale(w: WhaleConfig) -> None:
    _check_at("at", w.at)


def _check_strategy(c: StrategyConfig) -> None:
    if c.cls and not _CLASS_RE.fullmatch(c.cls):
        raise ValueError(f"cls must be 'module:Class' (e.g. 'mystrats:Breakout'), got {c.cls!r}")


_EXTRA_CHECKS: Final[dict[type[Any], Callable[[Any], None]]] = {
    Scenario: _check_scenario,
    DataSection: _check_data,
    PathSection: _check_path,
    ShockSpec: _check_shock,
    WhaleConfig: _check_whale,
    StrategyConfig: _check_strategy,
}


def read_raw(raw: Mapping[str, Any], source: str, origin: str) -> Scenario:
    """A scenario from a raw TOML dict; `origin` names it in errors, `source` is recorded."""
    try:
        scenario = _read_table(Scenario, raw, "")
    except Invalid as exc:
        raise scenario_error(origin, exc) from None
    return dataclasses.replace(scenario, source=source)


def read_scenario(raw: Mapping[str, Any], source: str = "") -> Scenario:
    """A scenario from a raw TOML dict (what `tomllib` returns); `source` is recorded."""
    return read_raw(raw, source, source or "<scenario>")


def loads_scenario(text: str, source: str = "<string>") -> Scenario:
    """A scenario from TOML text; `source` names it in errors and is recorded."""
    return read_text(text, source, source)


def read_text(text: str, source: str, origin: str) -> Scenario:
    """A scenario from TOML text; `origin` names it in errors, `source` is recorded."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{origin}: invalid TOML: {exc}") from None
    return read_raw(raw, source, origin)


__all__ = ["loads_scenario", "read_raw", "read_scenario", "read_text"]
