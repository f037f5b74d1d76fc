"""Scenario files: strict TOML to a `Scenario` and back, the shipped scenarios, ``--set``.

This module loads a scenario file or a shipped scenario by name and is the one place to
import from; the work is done by `perpex.sim.scenario_reader` (TOML data to a `Scenario`),
`perpex.sim.scenario_writer` (back to TOML data and text) and `perpex.sim.scenario_overrides`
(`with_overrides`, ``--set``), on the schema of `perpex.sim.scenario_schema`.

A scenario file's tables and keys are the fields of the frozen dataclasses in
`perpex.sim.scenario_model` and `perpex.sim.agents.config` (``[strategy]``'s `cls` is spelled
``class``; `Scenario.source` is not a key: it records where the scenario came from). The
reader is generic: a field's type hint says which TOML values it takes (an integer for `int`,
never a bool; any finite number for `float`; one of the values of a `Literal`; an array for a
tuple; a table for a nested dataclass; absent for `X | None`; an inline table or a bare number
for a `Dist`), unknown keys are refused, then the dataclass's own `__post_init__` decides which
values are valid. A few rules the dataclasses cannot state alone (times, shocks, the strategy
class) are checked too. Every refusal is one `ScenarioError` line naming where the scenario
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

import difflib
from importlib import resources
from pathlib import Path
from typing import Final

from perpex.sim.scenario_model import Scenario
from perpex.sim.scenario_overrides import parse_set, with_overrides
from perpex.sim.scenario_reader import loads_scenario, read_scenario, read_text
from perpex.sim.scenario_schema import ScenarioError
from perpex.sim.scenario_writer import dumps_scenario, scenario_to_raw

SUFFIX: Final = ".toml"


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
    return read_text(text, source, origin)


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
