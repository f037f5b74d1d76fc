"""What keeps a served market alive: the `MarketDriver` protocol.

The server does not know the simulator (DESIGN.md §3: `sim` and `server` do not import each
other). `perpex.live` builds a driver from a scenario (its price path, its makers) and hands it
to `create_app`; tests may hand a small one of their own. Every method runs in the sequencer's
writer thread, so a driver may call the exchange freely; what it submits is journaled like any
request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class MarketDriver(Protocol):
    name: str  # the scenario, as shown at start and on the dashboard

    def exchange_options(self) -> Mapping[str, Any]:
        """Keyword arguments for `Exchange(...)` (markets, mark_price, insurance_fund, ...);
        they are part of the journal's configuration, so a restart must give the same."""
        ...

    def start(self, ex: Any, now_ns: int) -> None:
        """After recovery, before the first request: seed the index and the makers' books
        (on a restart too: the makers re-quote around the recovered state)."""
        ...

    def step(self, ex: Any, now_ns: int) -> None:
        """One tick of the wall clock: move the path on by `speed` x the elapsed time, publish
        the index, let the makers re-quote."""
        ...

    def status(self) -> Mapping[str, Any]:
        """JSON-ready: scenario, paused, speed, path time, active shocks (for /admin and the
        dashboard)."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def set_speed(self, speed: float) -> None: ...

    def inject(self, kind: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """A shock of the simulator's kinds (drop, pump, gap, divergence) starting now;
        ValueError for an unknown kind or a bad parameter."""
        ...


__all__ = ["MarketDriver"]
