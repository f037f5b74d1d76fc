"""Settings shared by the whole test suite.

Hypothesis runs derandomized by default: `make test` (and so CI) draws the same examples on
every run and every machine, so a red run is reproducible and a green one is not luck. (The
state machine's coverage checks, e.g. "at least one funding payment happened", are statements
about the draws; a random seed could miss one now and then, seed 112 did.) To explore with
fresh random draws, and more of them, run `PERPEX_HYPOTHESIS=explore make test`.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile(
    "explore" if os.environ.get("PERPEX_HYPOTHESIS") == "explore" else "reproducible"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the server's tests (`test_server_*.py`), which `make test-compiled` leaves out."""
    for item in items:
        if item.path.name.startswith("test_server_"):
            item.add_marker(pytest.mark.server)
