"""Scenario files: strict TOML to a `Scenario` and back, the shipped scenarios, ``--set``.

A scenario file's tables and keys are the fields of the frozen dataclasses in
`perpex.sim.scenario_model` and `perpex.sim.agents.config` (``[strategy]``'s `cls` is spelled
``class``; `Scenario.source` is not a key: it records where the scenario came from). The
reader is generic: a field's type hint says which TOML values it takes (an integer for `int`,
never a bool; any finite number for `float`; one of the values of a `Literal`; an array for a
tuple; a table for a nested dataclass; absent for `X | None`; an inline table or a bare number
for a `Dist`), unknown keys are refused, then the dataclass's own `__post_init__` decides which
values are valid. A few rules the dataclasses cannot state alone (times, shocks, the strategy
class) are checked here. Every refusal is one `ScenarioError` line naming where the scenario
came from, the key's dotted path and the reason::

    covid.toml: agents.traders.levrage: unknown key (did you mean 'leverage'?)
    covid.toml: exchange.mark_price: 'median' is not one of 'binance', 'index', 'last'
    covid.toml: agents.traders.long_share: must be in [0, 1], got 1.5

Overrides (`with_overrides`, the CLI's ``--set key=value`` through `parse_set`) are applied to
the scenario's raw TOML dict (`scenario_to_raw`) and the whole dict is read again, so an
override is checked exactly as a file is. Units are the dataclasses' own (USDT, fractions,
seconds or steps); nothing here converts them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from perpex.parse import start_time_ns
from perpex.sim.agents.base import Dist
from perpex.sim.agents.config import StrategyConfig, WhaleConfig
from perpex.sim.scenario_model import DataSection, PathSection, Scenario, ShockSpec

T = TypeVar("T")

SUFFIX: Final = ".toml"
# Dataclass fields whose TOML key differs from the field name (`class` is a Python keyword).
_TOML_NAMES: Final[dict[tuple[type[Any], str], str]] = {(StrategyConfig, "cls"): "class"}
# Fields that are not keys of a file.
_NOT_KEYS: Final[dict[type[Any], frozenset[str]]] = {Scenario: frozenset({"source"})}
# Which keys each kind of `Dist` takes: (required, optional). A key another kind uses is
# refused rather than silently ignored (``{kind = "fixed", median = 10}`` is a mistake).
_DIST_KEYS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "fixed": (("value",), ()),
    "uniform": (("low", "high"), ()),
    "loguniform": (("low", "high"), ()),
    "lognormal": (("median", "sigma"), ("low", "high")),
    "choice": (("values",), ("weights",)),
}
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CLASS_RE: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_KEY_SEGMENT_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")
# A ``--set`` value TOML cannot read is taken as a string when it is one bare word.
_BARE_WORD_RE: Final = re.compile(r"[^\s\"'\[\]{}=,#]+")
# "<field> must ..." from a `__post_init__`: the reason belongs to that field's key.
_FIELD_REASON_RE: Final = re.compile(r"([a-z_][a-z0-9_]*) (must\b.*)", re.DOTALL)


class ScenarioError(ValueError):
    """A scenario that cannot be read: one line, ``<origin>: <dotted.key>: <reason>``."""


class _Invalid(Exception):
    """A refusal inside the reader, before the origin (file name) is known."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


def _error(origin: str, exc: _Invalid) -> ScenarioError:
    where = f"{exc.path}: " if exc.path else ""
    return ScenarioError(f"{origin}: {where}{exc.reason}")


# -- the schema: TOML keys of each dataclass ---------------------------------------------------
_KEYS_CACHE: Final[dict[type[Any], dict[str, dataclasses.Field[Any]]]] = {}
_HINTS_CACHE: Final[dict[type[Any], dict[str, Any]]] = {}


def _keys(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """TOML key -> field of `cls`, in declaration order."""
    keys = _KEYS_CACHE.get(cls)
    if keys is None:
        hidden = _NOT_KEYS.get(cls, frozenset())
        keys = _KEYS_CACHE[cls] = {
            _TOML_NAMES.get((cls, f.name), f.name): f
            for f in dataclasses.fields(cls)
            if f.name not in hidden
        }
    return keys


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        # The dataclasses use `from __future__ import annotations`: resolve the strings once.
        hints = _HINTS_CACHE[cls] = get_type_hints(cls)
    return hints


def _hint(cls: type[Any], key: str) -> Any:
    return _hints(cls)[_keys(cls)[key].name]


def _optional_inner(hint: Any) -> Any:
    """`X` for `X | None`, else `hint` itself."""
    if get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        return inner[0]
    return hint


def _table_class(hint: Any) -> type[Any] | None:
    """The dataclass a hint holds (after `| None`), or None for a scalar or an array."""
    inner = _optional_inner(hint)
    return inner if isinstance(inner, type) and dataclasses.is_dataclass(inner) else None


def _array_item_class(hint: Any) -> type[Any] | None:
    """`X` for `tuple[X, ...]` with X a dataclass (an array of tables), else None."""
    inner = _optional_inner(hint)
    if get_origin(inner) is tuple:
        item = get_args(inner)[0]
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return item
    return None


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _unknown(key: object, keys: Sequence[str]) -> str:
    match = difflib.get_close_matches(str(key), list(keys), n=1)
    if match:
        return f"unknown key (did you mean {match[0]!r}?)"
    return f"unknown key (the keys here are {', '.join(keys)})"


def _describe(value: object) -> str:
    """A value as the user wrote it, for a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, datetime | date | time):
        return f"the TOML date/time {value.isoformat()} (quote it to give a string)"
    if value is None:
        return "none"
    return repr(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- reading ------------------------------------------------------------------------------------
def _read_table(cls: type[T], raw: object, path: str) -> T:
    if not isinstance(raw, Mapping):
        raise _Invalid(path, f"must be a table, got {_describe(raw)}")
    keys = _keys(cls)
    for key in raw:
        if key not in keys:
            raise _Invalid(_join(path, key), _unknown(key, list(keys)))
    kwargs: dict[str, Any] = {}
    for key, f in keys.items():
        if key in raw:
            kwargs[f.name] = _value(_hint(cls, key), raw[key], _join(path, key))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Invalid(_join(path, key), "missing (a required key)")
    try:
        obj = cls(**kwargs)
        check = _EXTRA_CHECKS.get(cls)
        if check is not None:
            check(obj)
    except ValueError as exc:
        raise _from_value_error(cls, path, exc) from None
    return obj


def _from_value_error(cls: type[Any], path: str, exc: ValueError) -> _Invalid:
    """A `__post_init__` refusal, put on the key it names when it starts with one."""
    message = str(exc)
    match = _FIELD_REASON_RE.fullmatch(message)
    if match:
        for key, f in _keys(cls).items():
            if f.name == match.group(1):
                return _Invalid(_join(path, key), match.group(2))
    return _Invalid(path, message)


def _value(hint: Any, value: object, path: str) -> Any:
    """`value` (from TOML) checked against a field's type hint."""
    if hint is Dist:
        return _read_dist(value, path)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _value(_optional_inner(hint), value, path)
    if origin is Literal:
        return _literal(get_args(hint), value, path)
    if origin is tuple:
        return _array(get_args(hint)[0], value, path)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _read_table(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise _Invalid(path, f"must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(path, f"must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if not _is_number(value):
            raise _Invalid(path, f"must be a number, got {_describe(value)}")
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise _Invalid(path, f"must be finite, got {_describe(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise _Invalid(path, f"must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"{path}: unsupported field type {hint!r}")  # a new field type: teach me


def _literal(allowed: tuple[Any, ...], value: object, path: str) -> Any:
    for option in allowed:
        if type(option) is type(value) and option == value:
            return option
    shown = ", ".join(repr(a) for a in allowed)
    reason = f"{_describe(value)} is not one of {shown}"
    if isinstance(value, str):
        match = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
        if match:
            reason += f" (did you mean {match[0]!r}?)"
    raise _Invalid(path, reason)


def _array(item: Any, value: object, path: str) -> tuple[Any, ...]:
    table = isinstance(item, type) and dataclasses.is_dataclass(item)
    if not isinstance(value, list | tuple):
        what = f"an array of tables ([[{path}]])" if table else "an array of numbers"
        raise _Invalid(path, f"must be {what}, got {_describe(value)}")
    return tuple(_value(item, v, f"{path}[{i}]") for i, v in enumerate(value))


def _read_dist(value: object, path: str) -> Dist:
    if _is_number(value):
        return Dist("fixed", value=_value(float, value, path))
    if not isinstance(value, Mapping):
        raise _Invalid(
            path,
            "must be a number or a distribution table such as "
            f'{{kind = "lognormal", median = 10, sigma = 0.8}}, got {_describe(value)}',
        )
    if "kind" not in value:
        kinds = ", ".join(repr(k) for k in get_args(_hint(Dist, "kind")))
        raise _Invalid(_join(path, "kind"), f"missing (one of {kinds})")
    kind = _value(_hint(Dist, "kind"), value["kind"], _join(path, "kind"))
    if kind in _DIST_KEYS:
        required, optional = _DIST_KEYS[kind]
        takes = (*required, *optional)
        for key in value:
            if key != "kind" and key in _keys(Dist) and key not in takes:
                raise _Invalid(
                    _join(path, key), f"not used by kind {kind!r} (it takes {', '.join(takes)})"
                )
        for key in required:
            if key not in value:
                raise _Invalid(
                    _join(path, key), f"missing (kind {kind!r} needs {', '.join(required)})"
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


def _read(raw: Mapping[str, Any], source: str, origin: str) -> Scenario:
    try:
        scenario = _read_table(Scenario, raw, "")
    except _Invalid as exc:
        raise _error(origin, exc) from None
    return dataclasses.replace(scenario, source=source)


def read_scenario(raw: Mapping[str, Any], source: str = "") -> Scenario:
    """A scenario from a raw TOML dict (what `tomllib` returns); `source` is recorded."""
    return _read(raw, source, source or "<scenario>")


def loads_scenario(text: str, source: str = "<string>") -> Scenario:
    """A scenario from TOML text; `source` names it in errors and is recorded."""
    return _loads(text, source, source)


def _loads(text: str, source: str, origin: str) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{origin}: invalid TOML: {exc}") from None
    return _read(raw, source, origin)


# -- files and shipped scenarios ----------------------------------------------------------------
def _shipped_dir() -> Path:
    return Path(str(resources.files("perpex").joinpath("sim", "scenarios")))


def _shipped_names() -> list[str]:
    return sorted(p.name.removesuffix(SUFFIX) for p in _shipped_dir().glob(f"*{SUFFIX}"))


def _load_file(path: Path, source: str, origin: str) -> Scenario:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{origin}: no such file") from None
    except IsADirectoryError:
        raise ScenarioError(f"{origin}: is a directory, not a .toml file") from None
    except OSError as exc:
        raise ScenarioError(f"{origin}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{origin}: not UTF-8 text (byte {exc.start})") from None
    return _loads(text, source, origin)


def _load_shipped(name: str) -> Scenario:
    origin = f"{name}{SUFFIX}"
    scenario = _load_file(_shipped_dir() / origin, name, origin)
    if scenario.name != name:
        raise ScenarioError(f"{origin}: name: {scenario.name!r} must match the file name {name!r}")
    return scenario


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (``"covid-2020-03-12"``) or a ``.toml`` file by path.

    A string without a ``/`` and without the ``.toml`` suffix is a shipped name first (then
    an existing file of that name); anything else is a path. `Scenario.source` holds the name
    or the path as given."""
    if isinstance(name_or_path, str) and not (
        name_or_path.endswith(SUFFIX) or "/" in name_or_path or "\\" in name_or_path
    ):
        names = _shipped_names()
        if name_or_path in names:
            return _load_shipped(name_or_path)
        if Path(name_or_path).is_file():
            return _load_file(Path(name_or_path), name_or_path, name_or_path)
        match = [n for n in names if n.startswith(name_or_path)] or difflib.get_close_matches(
            name_or_path, names, n=1
        )
        hint = f" (did you mean {match[0]!r}?)" if len(match) == 1 else ""
        raise ScenarioError(
            f"{name_or_path}: unknown scenario{hint}; the shipped ones are "
            f"{', '.join(names)} (or give the path of a .toml file)"
        )
    return _load_file(Path(name_or_path), str(name_or_path), str(name_or_path))


def shipped_scenarios() -> list[tuple[str, str]]:
    """(name, question) of every shipped scenario, sorted by name."""
    return [(name, _load_shipped(name).question) for name in _shipped_names()]


# -- back to raw TOML data ----------------------------------------------------------------------
def scenario_to_raw(scenario: Scenario) -> dict[str, Any]:
    """The scenario as a raw TOML dict (every key, `None` tables left out, a `Dist` as its
    kind's keys, `cls` as ``class``): `read_scenario(scenario_to_raw(s), s.source) == s`."""
    return _table_to_raw(scenario)


def _table_to_raw(obj: Any) -> dict[str, Any]:
    cls = type(obj)
    keys = _keys(cls)
    if cls is Dist and obj.kind in _DIST_KEYS:
        required, optional = _DIST_KEYS[obj.kind]
        keys = {k: keys[k] for k in ("kind", *required, *optional)}
    out: dict[str, Any] = {}
    for key, f in keys.items():
        value = getattr(obj, f.name)
        if value is not None:
            out[key] = _to_raw(value)
    return out


def _to_raw(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _table_to_raw(value)
    if isinstance(value, tuple | list):
        return [_to_raw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_raw(v) for k, v in value.items()}
    return value


def dumps_scenario(scenario: Scenario) -> str:
    """The scenario as TOML text, every key written out (a run's record of what it ran):
    `loads_scenario(dumps_scenario(s), s.source) == s`."""
    lines = [f"# perpex scenario {scenario.name} (from {scenario.source or 'memory'})"]
    _dump_table(Scenario, scenario_to_raw(scenario), "", lines)
    return "\n".join(lines) + "\n"


def _dump_table(cls: type[Any], raw: Mapping[str, Any], header: str, lines: list[str]) -> None:
    scalars: list[str] = []
    tables: list[tuple[str, type[Any], Any, bool]] = []
    for key, value in raw.items():
        hint = _hint(cls, key)
        item_cls = _array_item_class(hint)
        table_cls = _table_class(hint)
        if item_cls is not None:
            tables.append((key, item_cls, value, True))
        elif table_cls is not None and table_cls is not Dist:
            tables.append((key, table_cls, value, False))
        else:
            scalars.append(f"{key} = {_inline(value)}")
    if header and (scalars or not tables):
        lines.extend(["", f"[{header}]"])
    lines.extend(scalars)
    for key, sub_cls, value, many in tables:
        name = _join(header, key)
        if many:
            for item in value:
                lines.extend(["", f"[[{name}]]"])
                _dump_table(sub_cls, item, "", lines)
        else:
            _dump_table(sub_cls, value, name, lines)


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest round-trip text; finite (the reader refuses nan, inf)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# -- overrides ----------------------------------------------------------------------------------
Segment = tuple[str, int | None]


def _parse_key(key: object) -> list[Segment]:
    """``agents.traders.count`` or ``shocks[0].percent`` -> [(name, index or None), ...]."""
    if not isinstance(key, str):
        raise _Invalid("", f"{key!r} is not a dotted key")
    segments: list[Segment] = []
    for part in key.split("."):
        match = _KEY_SEGMENT_RE.fullmatch(part)
        if not match:
            raise _Invalid(
                "",
                f"{key!r} is not a dotted key such as 'agents.traders.count' or"
                " 'shocks[0].percent'",
            )
        segments.append((match.group(1), None if match.group(2) is None else int(match.group(2))))
    return segments


def _check_key(segments: Sequence[Segment]) -> None:
    """Refuse a key that is not in the schema (so that removing a misspelt key is an error)."""
    cls: type[Any] | None = Scenario
    path = ""
    for position, (name, index) in enumerate(segments):
        if cls is None:
            raise _Invalid(path, f"is not a table: it has no key {name!r}")
        keys = _keys(cls)
        if name not in keys:
            raise _Invalid(_join(path, name), _unknown(name, list(keys)))
        hint = _hint(cls, name)
        path = _join(path, name)
        item_cls = _array_item_class(hint)
        last = position == len(segments) - 1
        if index is not None:
            if item_cls is None:
                raise _Invalid(f"{path}[{index}]", f"{path} is not an array of tables")
            cls, path = item_cls, f"{path}[{index}]"
        elif item_cls is not None and not last:
            raise _Invalid(path, f"is an array of tables: give an index, e.g. {path}[0]")
        else:
            cls = _table_class(hint)


def _apply(raw: dict[str, Any], segments: Sequence[Segment], value: object) -> None:
    """Set (or, for None, remove) one key of a raw TOML dict, creating absent tables."""
    node: Any = raw
    path = ""
    for name, index in segments[:-1]:
        path = _join(path, name)
        child = node.get(name)
        if child is None:
            if value is None:
                return  # removing a key of an absent table: nothing to do
            child = node[name] = [] if index is not None else {}
        if index is not None:
            if not isinstance(child, list):
                raise _Invalid(path, "is not an array of tables")
            child = _array_slot(child, index, path, value is None)
            if child is None:
                return
            path = f"{path}[{index}]"
        if not isinstance(child, dict):
            raise _Invalid(path, f"is {_describe(child)}, not a table")
        node = child
    name, index = segments[-1]
    path = _join(path, name)
    if index is None:
        if value is None:
            node.pop(name, None)
        else:
            node[name] = value
        return
    items = node.get(name)
    if items is None:
        if value is None:
            return
        items = node[name] = []
    if not isinstance(items, list):
        raise _Invalid(path, "is not an array of tables")
    if value is None:
        if index < len(items):
            del items[index]
        return
    _array_slot(items, index, path, False)
    items[index] = value


def _array_slot(items: list[Any], index: int, path: str, removing: bool) -> Any:
    """items[index], appending a new table when index is one past the end."""
    if index == len(items) and not removing:
        items.append({})
    elif index >= len(items):
        if removing:
            return None
        raise _Invalid(
            f"{path}[{index}]",
            f"index out of range: there are {len(items)} (use [{len(items)}] to add one)",
        )
    return items[index]


def with_overrides(scenario: Scenario, overrides: Mapping[str, object]) -> Scenario:
    """`scenario` with dotted keys set, in order, then read again as a whole file would be.

    ``{"exchange.insurance_fund": 0, "agents.traders.leverage": {"kind": "fixed", "value": 20},
    "agents.whale.side": "SELL", "shocks[0].percent": 12}``. A key of an absent table creates
    it (the last example adds a whale); ``shocks[N]`` with N the number of shocks appends one.
    The value None removes the key (an optional table such as ``agents.whale``, a shock
    ``shocks[0]``, or a key, which returns to its default). A value may also be a `Dist` or
    another of the scenario's dataclasses."""
    origin = scenario.source or scenario.name
    raw = scenario_to_raw(scenario)
    for key, value in overrides.items():
        try:
            segments = _parse_key(key)
            _check_key(segments)
            _apply(raw, segments, _to_raw(copy.deepcopy(value)))
        except _Invalid as exc:
            raise _error(origin, exc) from None
    return _read(raw, scenario.source, origin)


def parse_set(items: Sequence[str]) -> dict[str, object]:
    """The CLI's ``--set key=value`` items as overrides for `with_overrides`.

    The value is read as a TOML value (``0``, ``0.5``, ``true``, ``"text"``, ``[5, 10]``,
    ``{kind = "fixed", value = 20}``); a bare word TOML cannot read is a string
    (``exchange.mark_price=last``, ``strategy.class=mystrats:Breakout``); a date or time is
    kept as the text typed (``data.start=2020-03-12T00:00:00Z``); an empty value is the empty
    string; ``none`` removes the key (``agents.whale=none``; write ``"none"`` for the word)."""
    out: dict[str, object] = {}
    for item in items:
        origin = f"--set {item!r}"
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ScenarioError(f"{origin}: expected key=value, e.g. exchange.insurance_fund=0")
        try:
            _check_key(_parse_key(key))
        except _Invalid as exc:
            raise _error(origin, exc) from None
        out[key] = _parse_value(text, origin)
    return out


def _parse_value(text: str, origin: str) -> object:
    if text == "none":
        return None
    if text == "":
        return ""
    if "\n" in text or "\r" in text:
        raise ScenarioError(f"{origin}: a value is one line")
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError as exc:
        if _BARE_WORD_RE.fullmatch(text):
            return text
        raise ScenarioError(
            f'{origin}: {text!r} is not a TOML value ({exc}); quote a string: key="..."'
        ) from None
    if list(parsed) != ["v"]:  # cannot happen on one line; a guard against key injection
        raise ScenarioError(f"{origin}: {text!r} is not one TOML value")
    value = parsed["v"]
    if isinstance(value, datetime | date | time):
        return text  # times are strings in a scenario
    return value


__all__ = [
    "ScenarioError",
    "dumps_scenario",
    "load_scenario",
    "loads_scenario",
    "parse_set",
    "read_scenario",
    "scenario_to_raw",
    "shipped_scenarios",
    "with_overrides",
]
