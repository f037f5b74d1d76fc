"""The scenario schema: which TOML keys each scenario dataclass has, and how a refusal is said.

A scenario file's tables and keys are the fields of the frozen dataclasses in
`perpex.sim.scenario_model` and `perpex.sim.agents.config` (``[strategy]``'s `cls` is spelled
``class``; `Scenario.source` is not a key). The helpers here introspect those dataclasses
(keys, type hints, nested tables) for the reader (`perpex.sim.scenario_reader`), the writer
(`perpex.sim.scenario_writer`) and the overrides (`perpex.sim.scenario_overrides`); a refusal
is an `Invalid` (a key's dotted path and the reason) until the origin is known, then one
`ScenarioError` line ``<origin>: <dotted.key>: <reason>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Final, Union, get_args, get_origin, get_type_hints

from perpex.sim.agents.config import StrategyConfig
from perpex.sim.scenario_model import Scenario

# Dataclass fields whose TOML key differs from the field name (`class` is a Python keyword).
_TOML_NAMES: Final[dict[tuple[type[Any], str], str]] = {(StrategyConfig, "cls"): "class"}
# Fields that are not keys of a file.
_NOT_KEYS: Final[dict[type[Any], frozenset[str]]] = {Scenario: frozenset({"source"})}
# Which keys each kind of `Dist` takes: (required, optional). A key another kind uses is
# refused rather than silently ignored (``{kind = "fixed", median = 10}`` is a mistake).
DIST_KEYS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "fixed": (("value",), ()),
    "uniform": (("low", "high"), ()),
    "loguniform": (("low", "high"), ()),
    "lognormal": (("median", "sigma"), ("low", "high")),
    "choice": (("values",), ("weights",)),
}


class ScenarioError(ValueError):
    """A scenario that cannot be read: one line, ``<origin>: <dotted.key>: <reason>``."""


class Invalid(Exception):
    """A refusal inside the reader, before the origin (file name) is known."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


def scenario_error(origin: str, exc: Invalid) -> ScenarioError:
    where = f"{exc.path}: " if exc.path else ""
    return ScenarioError(f"{origin}: {where}{exc.reason}")


# -- the schema: TOML keys of each dataclass ---------------------------------------------------
_KEYS_CACHE: Final[dict[type[Any], dict[str, dataclasses.Field[Any]]]] = {}
_HINTS_CACHE: Final[dict[type[Any], dict[str, Any]]] = {}


def toml_keys(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
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


def key_hint(cls: type[Any], key: str) -> Any:
    return _hints(cls)[toml_keys(cls)[key].name]


def optional_inner(hint: Any) -> Any:
    """`X` for `X | None`, else `hint` itself."""
    if get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        return inner[0]
    return hint


def table_class(hint: Any) -> type[Any] | None:
    """The dataclass a hint holds (after `| None`), or None for a scalar or an array."""
    inner = optional_inner(hint)
    return inner if isinstance(inner, type) and dataclasses.is_dataclass(inner) else None


def array_item_class(hint: Any) -> type[Any] | None:
    """`X` for `tuple[X, ...]` with X a dataclass (an array of tables), else None."""
    inner = optional_inner(hint)
    if get_origin(inner) is tuple:
        item = get_args(inner)[0]
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return item
    return None


def join_key(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def unknown_key(key: object, keys: Sequence[str]) -> str:
    match = difflib.get_close_matches(str(key), list(keys), n=1)
    if match:
        return f"unknown key (did you mean {match[0]!r}?)"
    return f"unknown key (the keys here are {', '.join(keys)})"


def describe(value: object) -> str:
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


__all__ = [
    "DIST_KEYS",
    "Invalid",
    "ScenarioError",
    "array_item_class",
    "describe",
    "join_key",
    "key_hint",
    "optional_inner",
    "scenario_error",
    "table_class",
    "toml_keys",
    "unknown_key",
]
