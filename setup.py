"""The optional accelerated build: `PERPEX_MYPYC=1 pip install .` compiles the core with mypyc.

A plain `pip install .` (no variable, no compiler) installs the pure-Python package, which is
the reference: both builds pass the same test suite (`make test`, `make test-compiled`) and give
the same events and state hashes. Everything else about the package lives in pyproject.toml.

What is compiled: every module of `perpex.core` except those that must stay Python:
- modules that define a `msgspec.Struct`: mypyc builds classes without the class keywords
  (`frozen=True`, `array_like=True`), which would change the wire format and the state hash;
- modules that check what a user hands in (`markets.py`: market and bracket tables;
  `funding_history.py`: a funding history): compiled code enforces annotations with a bare
  `TypeError`, where these must answer a bad table with their own error naming the bad row;
- `liquidation.py` and `adl.py`, whose tests replace module attributes to watch the calls
  between them (a compiled caller would not see the replacement).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import setup

CORE = Path("src/perpex/core")
NOT_COMPILED = {
    "__init__.py",
    "markets.py",  # user tables, see above
    "funding_history.py",  # a user's funding history: bad rows must get its ValueError
    "liquidation.py",  # the tests watch its calls into adl.py (a spy on a module attribute)
    "adl.py",  # ditto; both are NumPy-bound, so compiling them gains little
    "message_enums.py",  # the messages' IntEnums, interpreted as they were inside messages.py
}
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
