"""A `Scenario` back to raw TOML data (`scenario_to_raw`) and TOML text (`dumps_scenario`).

The inverse of `perpex.sim.scenario_reader`: every key is written (`None` tables left out, a
`Dist` as its kind's keys, `cls` as ``class``), so reading the result gives the scenario back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from perpex.sim.agents.base import Dist
from perpex.sim.scenario_model import Scenario
from perpex.sim.scenario_schema import (
    DIST_KEYS,
    array_item_class,
    join_key,
    key_hint,
    table_class,
    toml_keys,
)


def scenario_to_raw(scenario: Scenario) -> dict[str, Any]:
    """The scenario as a raw TOML dict (every key, `None` tables left out, a `Dist` as its
    kind's keys, `cls` as ``class``): `read_scenario(scenario_to_raw(s), s.source) == s`."""
    return _table_to_raw(scenario)


def _table_to_raw(obj: Any) -> dict[str, Any]:
    cls = type(obj)
    keys = toml_keys(cls)
    if cls is Dist and obj.kind in DIST_KEYS:
        required, optional = DIST_KEYS[obj.kind]
        keys = {k: keys[k] for k in ("kind", *required, *optional)}
    out: dict[str, Any] = {}
    for key, f in keys.items():
        value = getattr(obj, f.name)
        if value is not None:
            out[key] = to_raw(value)
    return out


def to_raw(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _table_to_raw(value)
    if isinstance(value, tuple | list):
        return [to_raw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_raw(v) for k, v in value.items()}
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
        hint = key_hint(cls, key)
        item_cls = array_item_class(hint)
        table_cls = table_class(hint)
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
        name = join_key(header, key)
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


__all__ = ["dumps_scenario", "scenario_to_raw", "to_raw"]
