"""Overrides of a scenario's keys: `with_overrides` and the CLI's ``--set key=value`` (`parse_set`).

Overrides are applied to the scenario's raw TOML dict (`scenario_to_raw`) and the whole dict
is read again, so an override is checked exactly as a file is. Units are the dataclasses' own
(USDT, fractions, seconds or steps); nothing here converts them.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Final

from perpex.sim.scenario_model import Scenario
from perpex.sim.scenario_reader import read_raw
from perpex.sim.scenario_schema import (
    Invalid,
    ScenarioError,
    array_item_class,
    describe,
    join_key,
    key_hint,
    scenario_error,
    table_class,
    toml_keys,
    unknown_key,
)
from perpex.sim.scenario_writer import scenario_to_raw, to_raw

_KEY_SEGMENT_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")
# A ``--set`` value TOML cannot read is taken as a string when it is one bare word.
_BARE_WORD_RE: Final = re.compile(r"[^\s\"'\[\]{}=,#]+")

Segment = tuple[str, int | None]


def _parse_key(key: object) -> list[Segment]:
    """``agents.traders.count`` or ``shocks[0].percent`` -> [(name, index or None), ...]."""
    if not isinstance(key, str):
        raise Invalid("", f"{key!r} is not a dotted key")
    segments: list[Segment] = []
    for part in key.split("."):
        match = _KEY_SEGMENT_RE.fullmatch(part)
        if not match:
            raise Invalid(
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
            raise Invalid(path, f"is not a table: it has no key {name!r}")
        keys = toml_keys(cls)
        if name not in keys:
            raise Invalid(join_key(path, name), unknown_key(name, list(keys)))
        hint = key_hint(cls, name)
        path = join_key(path, name)
        item_cls = array_item_class(hint)
        last = position == len(segments) - 1
        if index is not None:
            if item_cls is None:
                raise Invalid(f"{path}[{index}]", f"{path} is not an array of tables")
            cls, path = item_cls, f"{path}[{index}]"
        elif item_cls is not None and not last:
            raise Invalid(path, f"is an array of tables: give an index, e.g. {path}[0]")
        else:
            cls = table_class(hint)


def _apply(raw: dict[str, Any], segments: Sequence[Segment], value: object) -> None:
    """Set (or, for None, remove) one key of a raw TOML dict, creating absent tables."""
    node: Any = raw
    path = ""
    for name, index in segments[:-1]:
        path = join_key(path, name)
        child = node.get(name)
        if child is None:
            if value is None:
                return  # removing a key of an absent table: nothing to do
            child = node[name] = [] if index is not None else {}
        if index is not None:
            if not isinstance(child, list):
                raise Invalid(path, "is not an array of tables")
            child = _array_slot(child, index, path, value is None)
            if child is None:
                return
            path = f"{path}[{index}]"
        if not isinstance(child, dict):
            raise Invalid(path, f"is {describe(child)}, not a table")
        node = child
    name, index = segments[-1]
    path = join_key(path, name)
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
        raise Invalid(path, "is not an array of tables")
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
        raise Invalid(
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
            _apply(raw, segments, to_raw(copy.deepcopy(value)))
        except Invalid as exc:
            raise scenario_error(origin, exc) from None
    return read_raw(raw, scenario.source, origin)


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
        except Invalid as exc:
            raise scenario_error(origin, exc) from None
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


__all__ = ["parse_set", "with_overrides"]
