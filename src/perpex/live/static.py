"""`StaticDriver`: a fixed market for tests and benchmarks of the server.

A fixed index per symbol (mark = index) and one maker ("mm") quoting a ladder of `levels`
levels a side, one tick apart from `spread_ticks` out, `qty_lots` each, re-quoted every tick
(one `MassQuote` a symbol). Deterministic and cheap: what a test needs to know the book
exactly. Its only shock is a drop (`inject("drop", {"percent": P})`: the index falls P %
at once), enough to liquidate on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from perpex.core.messages import Command, MassQuote, UpdateIndex
from perpex.exchange import Exchange

MAKER = "mm"
MAKER_DEPOSIT = "100000000"


@dataclass
class StaticDriver:
    name: str = "static"
    prices: Mapping[str, int] = field(
        default_factory=lambda: {"BTCUSDT": 600_000, "ETHUSDT": 300_000}
    )  # index in ticks per symbol (BTCUSDT 60,000.0 and ETHUSDT 30,000.0 with 0.1 ticks)
    levels: int = 20
    spread_ticks: int = 5
    qty_lots: int = 500
    paused: bool = False
    speed: float = 1.0
    shocks: list[dict[str, Any]] = field(default_factory=list)

    def exchange_options(self) -> Mapping[str, Any]:
        return {"mark_price": "index", "insurance_fund": "1000000"}

    def start(self, ex: Exchange, now_ns: int) -> None:
        if MAKER not in ex.engine.accounts:
            ex.deposit(MAKER, MAKER_DEPOSIT)
        self.step(ex, now_ns)

    def step(self, ex: Exchange, now_ns: int) -> None:
        commands: list[Command] = []
        for symbol, index in self.prices.items():
            commands.append(UpdateIndex(symbol, index))
            gap, lots = self.spread_ticks, self.qty_lots
            quotes = [(1, index - gap - i, lots) for i in range(self.levels)]
            quotes += [(-1, index + gap + i, lots) for i in range(self.levels)]
            commands.append(MassQuote(MAKER, symbol, tuple(quotes)))
        ex.submit(commands)

    def status(self) -> Mapping[str, Any]:
        return {"scenario": self.name, "paused": self.paused, "speed": self.speed}

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def set_speed(self, speed: float) -> None:
        self.speed = speed

    def inject(self, kind: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        if kind != "drop":
            raise ValueError(f"unknown shock kind {kind!r}: the static market takes 'drop'")
        pct = float(params.get("percent", 10))
        if not 0 < pct < 100:
            raise ValueError(f"percent={pct}: must be in (0, 100)")
        self.prices = {s: int(p * (100 - pct) / 100) for s, p in self.prices.items()}
        shock = {"kind": kind, "percent": pct}
        self.shocks.append(shock)
        return shock


__all__ = ["MAKER", "StaticDriver"]
