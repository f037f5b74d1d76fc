"""The leveraged-token setup of a run (``[tokens]``, MECHANICS.md §6): the holder, the static
yardstick position, the frictionless deep book, and the tokens' samples and summary.

In the first step, once the makers have quoted and the index is out, a holder creates each
token with `hold` USDT through `Exchange.submit` (the pools buy their exposure through the book)
and a second account opens the static yardstick position (`TokenDesk.setup`); each step samples
every token's NAV (``events/tokens.parquet``) and the summary gains a ``tokens`` object. With
`frictionless` a deep book quotes the index one tick either side before the makers (`DeepBook`),
so the pools rebalance at the mark: the runs reproduce §6.3's arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final, Protocol

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    Command,
    CreateTokens,
    Deposit,
    Event,
    MassQuote,
    OrderType,
    PlaceOrder,
    RequestRejected,
    SetLeverage,
    TimeInForce,
    TokensCreated,
)
from perpex.core.tokens import POOL_PREFIX
from perpex.core.units import ATOMS_PER_UNIT, PPM
from perpex.exchange import Exchange
from perpex.sim.events_out import token_columns
from perpex.sim.metrics import TokenMetrics, usdt
from perpex.sim.scenario_model import Scenario, TokensSection
from perpex.sim.world import MarketWorld

# The accounts a run with `[tokens]` adds, and the deep book's setting.
HOLDER_ACCOUNT: Final = "token-holder"  # creates every token at the start and holds it
STATIC_ACCOUNT: Final = "static-position"  # the yardstick: one position, never rebalanced
DEEP_BOOK_ACCOUNT: Final = "deep-book"  # frictionless: quotes the index one tick either side
STATIC_ACCOUNT_LEVERAGE: Final = 20  # its leverage setting: initial margin is never the limit
DEEP_BOOK_MULTIPLE: Final = 4  # the deep book's size per side x all the exposure at the start


class StepSamples(Protocol):
    """The run's per-step samples as the desk reads them: one column per `SAMPLE_COLUMNS` name
    (``step``, ``time_ns``, ``mark_ticks``, ...)."""

    columns: dict[str, np.ndarray[Any, Any]]


def _leverage_ppm(leverage: float) -> int:
    return int(Decimal(repr(leverage)).scaleb(6))  # exact: TokenConfig refuses finer


def _exposure_lots(spec: MarketSpec, leverage: float, hold_atoms: int, price_ticks: int) -> int:
    """Whole lots of |leverage| x `hold_atoms` of notional at `price_ticks` (rounded down)."""
    per_lot_ppm = PPM * price_ticks * spec.atoms_per_tick_lot
    return abs(_leverage_ppm(leverage)) * hold_atoms // per_lot_ppm


class DeepBook:
    """Frictionless liquidity (``[tokens] frictionless``): one account that quotes the step's
    index one tick either side, for far more than any rebalance, before the makers requote.
    A pool's market order then fills within a tick of the mark (1.7e-6 of a 60,000 USDT
    price): §6.3's "trade at the mark" to well inside four decimals."""

    def __init__(self, spec: MarketSpec, tokens: TokensSection, start_ticks: int) -> None:
        self.spec = spec
        hold_atoms = round(tokens.hold * ATOMS_PER_UNIT)
        exposure = sum(_exposure_lots(spec, c.leverage, hold_atoms, start_ticks)
                       for c in tokens.list)  # fmt: skip
        exposure += _exposure_lots(spec, tokens.static_leverage, hold_atoms, start_ticks)
        self.size_lots = min(DEEP_BOOK_MULTIPLE * max(exposure, 1), spec.max_limit_qty_lots)
        # Room for both sides' initial margin at 1x, and for the inventory the pools leave.
        self.deposit_atoms = 4 * self.size_lots * start_ticks * spec.atoms_per_tick_lot

    def _quote(self, index_ticks: int) -> MassQuote:
        size = self.size_lots
        return MassQuote(
            DEEP_BOOK_ACCOUNT,
            self.spec.symbol,
            ((SELL, index_ticks + 1, size), (BUY, max(index_ticks - 1, 1), size)),
        )

    def start(self) -> list[Command]:
        return [
            Deposit(DEEP_BOOK_ACCOUNT, self.deposit_atoms),
            SetLeverage(DEEP_BOOK_ACCOUNT, self.spec.symbol, STATIC_ACCOUNT_LEVERAGE),
        ]

    def step(self, world: MarketWorld) -> list[Command]:
        """The ladder of this step, placed before its index: the mark it will trade at."""
        return [self._quote(world.index_ticks)]


class TokenDesk:
    """The tokens' side of a run: the holder's creations and the static position in the first
    step (after the makers' first ladders and the first index), one NAV sample per step and
    token, the summary's ``tokens`` object."""

    def __init__(self, ex: Exchange, scenario: Scenario, n_steps: int) -> None:
        assert scenario.tokens is not None
        self.ex = ex
        self.section = scenario.tokens
        self.symbol = scenario.symbol
        self.spec = ex.engine.state.markets[scenario.symbol].spec
        self.names = [c.name for c in self.section.list]
        self.hold_atoms = round(self.section.hold * ATOMS_PER_UNIT)
        self.metrics = TokenMetrics({POOL_PREFIX + name: name for name in self.names})
        self.columns: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {
            name: np.zeros(n_steps, dtype=np.int64) for name, _ in token_columns(self.names)
        }

    def setup(self, world: MarketWorld) -> list[Command]:
        """The holder creates every token with `hold` USDT; the static account deposits `hold`
        and opens |static_leverage| x `hold` of notional at the mark with market orders."""
        tokens = self.section
        commands: list[Command] = [Deposit(HOLDER_ACCOUNT, self.hold_atoms * len(self.names))]
        commands += [CreateTokens(HOLDER_ACCOUNT, name, self.hold_atoms) for name in self.names]
        if tokens.static_leverage:
            commands += [
                Deposit(STATIC_ACCOUNT, self.hold_atoms),
                SetLeverage(STATIC_ACCOUNT, self.symbol, STATIC_ACCOUNT_LEVERAGE),
            ]
            side = BUY if tokens.static_leverage > 0 else SELL
            left = _exposure_lots(self.spec, tokens.static_leverage, self.hold_atoms,
                                  world.mark_ticks)  # fmt: skip
            while left > 0:  # a market order is at most the market's max market quantity
                lots = min(left, self.spec.max_market_qty_lots)
                left -= lots
                order = PlaceOrder(
                    STATIC_ACCOUNT, self.symbol, side, OrderType.MARKET, TimeInForce.IOC, lots, 0
                )
                commands.append(order)
        return commands

    def setting(self) -> dict[str, Any]:
        """The scenario's ``[tokens]`` for meta.json (the report reads it)."""
        t = self.section
        return {
            "hold": t.hold,
            "static_leverage": t.static_leverage,
            "frictionless": t.frictionless,
            "list": [{"name": c.name, "leverage": c.leverage} for c in t.list],
        }

    def check_setup(self, events: Sequence[Event]) -> None:
        """Every token was created: a run whose tokens were refused would sum up nothing."""
        created = [e.token for e in events if isinstance(e, TokensCreated)]
        for name in self.names:
            if name not in created:
                refusals = [
                    e.reason.name
                    for e in events
                    if isinstance(e, RequestRejected) and e.symbol == name
                ]
                raise ValueError(f"token {name} could not be created: {refusals or 'no event'}")

    def sample(self, i: int, world: MarketWorld) -> None:
        tokens = self.ex.engine.tokens
        cols = self.columns
        cols["static_equity_atoms"][i] = world.position(STATIC_ACCOUNT).equity_atoms
        for name in self.names:
            t = tokens.tokens[name]
            cols[f"{name}_nav_atoms"][i] = tokens.nav_atoms(t)
            cols[f"{name}_leverage_ppm"][i] = tokens.leverage_ppm(t)
            cols[f"{name}_position_lots"][i] = tokens.position_lots(t)

    def rows(self, samples: StepSamples) -> list[tuple[Any, ...]]:
        cols = dict(self.columns)
        cols["step"] = samples.columns["step"]
        cols["time_ns"] = samples.columns["time_ns"]
        names = [name for name, _ in token_columns(self.names)]
        return list(zip(*(cols[name].tolist() for name in names), strict=True))

    def summary(self, samples: StepSamples) -> dict[str, Any]:
        """Per token: NAV at creation and at the end (USDT, to the atom), their ratio, the
        rebalancing trades and what they cost the pool (USDT); then the underlying's return
        and the static position's equity return (fractions)."""
        tokens = self.ex.engine.tokens
        m = self.metrics
        out: dict[str, Any] = {}
        for c in self.section.list:
            t = tokens.tokens[c.name]
            nav_start = m.nav_start_atoms.get(c.name, 0)
            nav_end = tokens.nav_atoms(t)
            out[c.name] = {
                "leverage": c.leverage,
                "nav_start": _usdt_exact(nav_start),
                "nav_end": _usdt_exact(nav_end),
                "nav_ratio": round(nav_end / nav_start, 6) if nav_start else 0.0,
                "rebalances": m.rebalances.get(c.name, 0),
                "fees_paid": usdt(m.fees_atoms.get(c.name, 0)),
                "slippage_paid": usdt(m.slippage_atoms.get(c.name, 0)),
                "funding_paid": usdt(m.funding_atoms.get(c.name, 0)),
            }
        marks = samples.columns["mark_ticks"]
        out["underlying_return"] = round(int(marks[-1]) / int(marks[0]) - 1, 6)
        static = self.columns["static_equity_atoms"]
        static_return = int(static[-1]) / self.hold_atoms - 1 if self.section.static_leverage else 0
        out["static_3x_return"] = round(static_return, 6)
        return out


def _usdt_exact(atoms: int) -> float:
    """Atoms as USDT to the atom (1e-6): a NAV ratio to four decimals needs more than cents."""
    return float(Decimal(atoms).scaleb(-6))


__all__ = [
    "DEEP_BOOK_ACCOUNT",
    "DEEP_BOOK_MULTIPLE",
    "HOLDER_ACCOUNT",
    "STATIC_ACCOUNT",
    "STATIC_ACCOUNT_LEVERAGE",
    "DeepBook",
    "StepSamples",
    "TokenDesk",
]
