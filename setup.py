"""The optional accelerated build: `PERPEX_MYPYC=1 pip install .` compiles the core with mypyc.

A plain `pip install .` (no variable, no compiler) installs the pure-Python package, which is
the reference: both builds pass the same test suite (`make test`, `make test-compiled`) and give
the same events and state hashes. Everything else about the package lives in pyproject.toml.

What is compiled: every module of `perpex.core` except those that must stay Python:
- modules that define a `msgspec.Struct`: mypyc builds classes without the class keywords
  (`frozen=True`, `array_like=True`), which would change the wire format and the state hash;
- `markets.py`, the user-facing market and bracket tables: compiled code enforces annotations
  with `TypeError`, where the loader must answer a bad table with a `MarketError` naming it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import setup

CORE = Path("src/perpex/core")
NOT_COMPILED = {"__init__.py", "markets.py", "liquidation.py", "adl.py"}
DEFINES_STRUCT = re.compile(r"^class \w+\([^)]*Struct\b", re.MULTILINE)


def compiled_modules() -> list[str]:
    return [
        str(path)
        for path in sorted(CORE.glob("*.py"))
        if path.name not in NOT_COMPILED
        and not DEFINES_STRUCT.search(path.read_text(encoding="utf-8"))
    ]


ext_modules = []
if os.environ.get("PERPEX_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(compiled_modules(), opt_level="3")

setup(ext_modules=ext_modules)
