"""The leveraged trader population: thousands of accounts that each open one position with a
market order of margin x leverage, protect it (a stop at entry, an exit ladder) or not, and
hold it until a stop, a liquidation or their holding time ends it; some come back after a
liquidation (`TraderConfig` says how many of each).

Units: prices in ticks, sizes in lots, money in atoms (1e-6 USDT). Floats only decide (a
size, a stop distance); every command carries whole ticks and lots.

Entries queue by side, first come first served. Each is sized at the price its market order
will reach once the step's earlier entries have walked the visible book (the engine charges
the open loss of a fill away from the mark up front, so sizing at the touch would be refused
in a crowded step), and waits for the next step, when the makers have requoted, if that book
is taken. An entry that filled nothing (refused) is sent again the next step, up to
`MAX_ENTRY_ATTEMPTS` tries in all.

Cost: every trader's parameters are drawn at once, vectorised, in `start`, which also returns
every account's setup (deposit, leverage, margin mode: three cheap engine commands each).
After that the work of a step is O(traders acting in it): entries come from an index by step
(and the queue's head), closes and re-entries from schedules by step, and `observe` does one
set lookup per event and one dict lookup per event of a trader account.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

import numpy as np
import numpy.typing as npt

from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    Command,
    Deposit,
    Event,
    LiquidationTriggered,
    OrderRejected,
    OrderType,
    PlaceExitLadder,
    PlaceOrder,
    PositionChanged,
    RequestRejected,
    SetLeverage,
    SetMarginMode,
    TimeInForce,
)
from perpex.core.units import ATOMS_PER_UNIT, PPM
from perpex.sim.agents.base import World
from perpex.sim.agents.config import TraderConfig

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

PROTECT_NONE = 0  # holds without protection
PROTECT_STOP = 1  # a STOP_MARKET attached to the entry (`PlaceOrder.stop_loss_ticks`)
PROTECT_LADDER = 2  # an exit ladder placed once the entry has filled

# The share of its margin a trader sizes for: the book's estimate misses what moves between
# the step's start and the order (and whole lots and ticks), so a little room is kept.
MARGIN_HAIRCUT = 0.995
# Orders one entry may be split into (each above `max_market_qty_lots` is refused). Each
# carries its own stop, and an account holds at most 10 conditional orders.
MAX_ENTRY_ORDERS = 8
# A margin above this (1e9 USDT) is clipped, so margin x leverage stays far inside int64.
MAX_MARGIN_ATOMS = 10**9 * ATOMS_PER_UNIT
_MARKET = OrderType.MARKET
_IOC = TimeInForce.IOC
# Tries of one entry: one that filled nothing (refused, or no liquidity) is sent again the
# next step, up to this many times in all.
MAX_ENTRY_ATTEMPTS = 3
DEPTH_LEVELS = 200  # levels per side an entry's sizing looks at
MIN_STOP_DISTANCE = 0.0001  # a drawn distance below it (or negative) is raised to it
MAX_STOP_DISTANCE = 0.9


# The events `observe` reads (one set lookup skips the rest).
_SEEN: Final = frozenset({PositionChanged, LiquidationTriggered, OrderRejected, RequestRejected})


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """An entry that filled: the figures the report plots (liquidation distance by leverage)."""

    account: str
    step: int
    time_ns: int
    side: int  # +1 long, -1 short
    leverage: int
    isolated: bool
    entry_ticks: int  # average entry of the position after the step's fills
    liquidation_ticks: int | None  # None: the position has none (or closed in the same step)
    margin_atoms: int
    reentry: bool  # an entry after a liquidation


@dataclass(frozen=True)
class TraderDraws:
    """Every trader's parameters, one array entry per trader (drawn once, at start)."""

    margin_atoms: IntArray
    leverage: IntArray  # whole, in [1, market max], capped by the brackets
    side: IntArray  # +1 long, -1 short
    isolated: BoolArray
    protection: IntArray  # PROTECT_NONE / PROTECT_STOP / PROTECT_LADDER
    stop_distance: FloatArray  # fraction of the entry, for stops and ladders' stops
    entry_step: IntArray
    hold_steps: IntArray  # 0: hold until stopped or liquidated
    reenter_delay: IntArray  # steps from a liquidation to the re-entry, >= 1


def _lots_for(
    budget_atoms: float, fill_ticks: int, mark_ticks: int, side: int, leverage: int, k: int
) -> int:
    per_lot_atoms = fill_ticks * k / leverage + max(0, side * (fill_ticks - mark_ticks)) * k
    return math.floor(budget_atoms / per_lot_atoms)


def cap_leverage(spec: MarketSpec, margin_atoms: IntArray, leverage: IntArray) -> IntArray:
    """Each leverage lowered until margin x leverage fits the bracket that allows it.

    `max_notional_atoms_at(L) / L` falls strictly as L rises (the cap never rises with the
    leverage), so the leverages a margin may use are 1..Lmax(margin): one binary search each.
    """
    top = spec.max_leverage
    limit_atoms = np.array(
        [spec.max_notional_atoms_at(lev) // lev for lev in range(1, top + 1)], dtype=np.int64
    )
    # Lmax(m) = the number of leverages whose limit is >= m (the limits are decreasing).
    allowed = np.searchsorted(-limit_atoms, -margin_atoms, side="right").astype(np.int64)
    return np.maximum(np.minimum(leverage, allowed), 1)


def draw_traders(
    config: TraderConfig, spec: MarketSpec, n_steps: int, rng: np.random.Generator
) -> TraderDraws:
    """Draw the whole population, vectorised, in a fixed order (the seed fixes the result)."""
    n = config.count
    margin = config.margin.sample(rng, n)
    margin_atoms = np.clip(np.floor(margin * ATOMS_PER_UNIT), 1, MAX_MARGIN_ATOMS).astype(np.int64)
    lev_drawn = np.clip(np.rint(config.leverage.sample(rng, n)), 1, spec.max_leverage)
    leverage = cap_leverage(spec, margin_atoms, lev_drawn.astype(np.int64))
    side = np.where(rng.random(n) < config.long_share, 1, -1).astype(np.int64)
    isolated = rng.random(n) < config.isolated_share
    u = rng.random(n)
    protection = np.where(
        u < config.stop_share,
        PROTECT_STOP,
        np.where(u < config.stop_share + config.ladder_share, PROTECT_LADDER, PROTECT_NONE),
    ).astype(np.int64)
    stop_distance = np.clip(
        config.stop_distance.sample(rng, n), MIN_STOP_DISTANCE, MAX_STOP_DISTANCE
    )
    initial = rng.random(n) < config.initial_share
    later = rng.integers(1, n_steps, n) if n_steps > 1 else np.zeros(n, dtype=np.int64)
    entry_step = np.where(initial, 0, later).astype(np.int64)
    hold_steps = np.maximum(np.rint(config.hold_steps.sample(rng, n)), 0).astype(np.int64)
    reenter_delay = np.maximum(np.rint(config.reenter_delay.sample(rng, n)), 1).astype(np.int64)
    return TraderDraws(
        margin_atoms, leverage, side, isolated, protection, stop_distance, entry_step,
        hold_steps, reenter_delay,
    )  # fmt: skip


class _BookWalk:
    """Where the entries of one step, in the order they go in, will have walked each side of
    the book (the world's depth at the step's start; the makers requote only next step).

    A trader sized at the touch after the traders before it in the same step swept the book
    would be refused for margin (the open loss of a fill away from the mark is charged up
    front); sizing at the price its order will actually reach keeps a crowded step working.
    """

    def __init__(self, world: World) -> None:
        bids, asks = world.depth(DEPTH_LEVELS)
        self._prices = {1: [p for p, _ in asks], -1: [p for p, _ in bids]}
        self._cum_lots = {
            1: list(accumulate(q for _, q in asks)),
            -1: list(accumulate(q for _, q in bids)),
        }
        self._taken_lots = {1: 0, -1: 0}

    def price_ticks(self, side: int, more_lots: int = 0) -> int:
        """The price of the next lot a taker on `side` gets after `more_lots` more (0: empty)."""
        cum = self._cum_lots[side]
        if not cum:
            return 0
        i = bisect_right(cum, self._taken_lots[side] + more_lots)
        return self._prices[side][min(i, len(cum) - 1)]

    def room_lots(self, side: int) -> int:
        """Lots of the visible book on `side` not yet taken by this step's entries."""
        cum = self._cum_lots[side]
        return cum[-1] - self._taken_lots[side] if cum else 0

    def taken_lots(self, side: int) -> int:
        return self._taken_lots[side]

    def take(self, side: int, lots: int) -> None:
        self._taken_lots[side] += lots


class LeveragedTraders:
    """`config.count` accounts named ``t-00000``, ``t-00001``, ... (see the module docstring).

    Read after a run: `entries` (one `EntryRecord` per entry that filled), `liquidations_seen`,
    `reentries` (re-entry orders sent), `rejections` (engine refusals of the population's
    commands), `entry_retries` (entries sent again after filling nothing), `entries_failed`
    (given up after `MAX_ENTRY_ATTEMPTS`), `liquidation_log` ((step, trader index) per
    liquidation) and `draws`.
    """

    def __init__(
        self,
        config: TraderConfig,
        symbol: str,
        n_steps: int,
        *,
        name: str = "traders",
        prefix: str = "t-",
    ) -> None:
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.name = name
        self.config = config
        self.symbol = symbol
        self.n_steps = n_steps
        width = len(str(config.count))
        self.accounts = [f"{prefix}{i:0{width}d}" for i in range(config.count)]
        self._index = {account: i for i, account in enumerate(self.accounts)}
        self.entries: list[EntryRecord] = []
        self.liquidations_seen = 0
        self.reentries = 0
        self.rejections = 0
        self.entry_retries = 0
        self.entries_failed = 0
        self.liquidation_log: list[tuple[int, int]] = []
        self.draws: TraderDraws | None = None
        self._world: World | None = None
        self._rng = np.random.default_rng(0)  # replaced by the runner's in `start`
        # Per-trader state as Python lists: scalar reads and writes in the event loop cost a
        # fraction of a NumPy element access.
        n = config.count
        self._margin: list[int] = []
        self._leverage: list[int] = []
        self._isolated: list[bool] = []
        self._protection: list[int] = []
        self._stop_distance: list[float] = []
        self._hold: list[int] = []
        self._delay: list[int] = []
        self._side: list[int] = []  # side of the current (or next) entry
        self._size_lots = [0] * n  # from PositionChanged
        self._entering = [False] * n  # an entry was sent and has not filled yet
        self._reentry = [False] * n  # the current entry is a re-entry
        self._liquidated = [False] * n  # liquidated since the current entry
        self._episode = [0] * n  # entries sent so far: a scheduled close names its entry
        # Schedules by step: entries (drawn), re-entries and closes (added as things happen).
        self._entries_at: dict[int, IntArray] = {}
        self._reenter_at: dict[int, list[int]] = {}
        self._close_at: dict[int, list[tuple[int, int]]] = {}
        self._ladders_due: list[int] = []
        self._sent: list[int] = []  # traders whose entry went in this step
        self._retry: list[int] = []  # entries that did not fill last step, tried again
        self._attempts = [0] * n  # tries of the current entry
        # Entries due and not sent yet, by side, first come first served (`step`).
        self._waiting: dict[int, deque[int]] = {1: deque(), -1: deque()}
        self._targets: list[int] = []  # the path's target at each step (for "trend")

    @property
    def waiting(self) -> int:
        """Entries due but not sent yet: the book on their side was taken (see `step`)."""
        return len(self._waiting[1]) + len(self._waiting[-1])

    # -- the agent protocol -------------------------------------------------------------------
    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        """Draw the population; every account's deposit, leverage and margin mode."""
        self._world = world
        self._rng = rng
        d = draw_traders(self.config, world.spec, self.n_steps, rng)
        self.draws = d
        self._margin = d.margin_atoms.tolist()
        self._leverage = d.leverage.tolist()
        self._isolated = d.isolated.tolist()
        self._protection = d.protection.tolist()
        self._stop_distance = d.stop_distance.tolist()
        self._hold = d.hold_steps.tolist()
        self._delay = d.reenter_delay.tolist()
        self._side = d.side.tolist()
        order = np.argsort(d.entry_step, kind="stable")
        steps, starts = np.unique(d.entry_step[order], return_index=True)
        self._entries_at = dict(zip(steps.tolist(), np.split(order, starts[1:]), strict=True))
        symbol = self.symbol
        commands: list[Command] = []
        add = commands.append
        for account, margin_atoms, leverage, isolated in zip(
            self.accounts, self._margin, self._leverage, self._isolated, strict=True
        ):
            add(Deposit(account, margin_atoms))
            add(SetLeverage(account, symbol, leverage))
            if isolated:
                add(SetMarginMode(account, symbol, True))
        return commands

    def step(self, world: World) -> list[Command]:
        """Ladders for last step's fills, closes due, then entries and re-entries due."""
        self._world = world
        now = world.step
        self._targets.append(world.target_ticks)
        commands: list[Command] = []
        if self._ladders_due:
            for i in self._ladders_due:
                self._ladder(i, world, commands)
            self._ladders_due = []
        closes = self._close_at.pop(now, None)
        if closes:
            for i, episode in closes:
                if self._episode[i] == episode and self._size_lots[i]:
                    self._close(i, commands)
        if self._retry:
            retry, self._retry = self._retry, []
            for i in retry:
                if not self._size_lots[i] and not self._entering[i]:
                    self.entry_retries += 1
                    self._waiting[self._side[i]].append(i)
        due = self._entries_at.pop(now, None)
        if due is not None:
            for i in due.tolist():
                self._attempts[i] = 0
                self._waiting[self._side[i]].append(i)
        again = self._reenter_at.pop(now, None)
        if again:
            self._reenter(again, commands)
        if self._waiting[1] or self._waiting[-1]:
            # Entries wait their turn, in order, while this step's earlier entries have taken
            # the whole visible book on their side: an order sent into an empty book would
            # fill nothing. The work is O(entries sent), whatever the queue's length.
            walk = _BookWalk(world)
            for side in (1, -1):
                waiting = self._waiting[side]
                while waiting:
                    i = waiting[0]
                    # (One already in the market, by a fill this queue did not see, leaves.)
                    if (
                        not self._size_lots[i]
                        and not self._entering[i]
                        and not self._enter(i, world, walk, commands)
                    ):
                        break  # the book is taken: the rest wait for the next step
                    waiting.popleft()
        return commands

    def observe(self, events: Sequence[Event]) -> None:
        """Positions, fills of entries (recorded; ladders queued), liquidations, refusals."""
        index = self._index
        size_lots = self._size_lots
        entering = self._entering
        side = self._side
        filled: list[int] = []
        seen = _SEEN
        for e in events:
            if type(e) not in seen:  # most of a step's events: trades, orders, marks
                continue
            if isinstance(e, PositionChanged):
                i = index.get(e.account)
                if i is None or e.symbol != self.symbol:
                    continue
                size_lots[i] = e.size_lots
                if entering[i] and e.size_lots * side[i] > 0:
                    entering[i] = False
                    filled.append(i)
            elif isinstance(e, LiquidationTriggered):
                i = index.get(e.account)
                if i is not None and not self._liquidated[i]:
                    self._liquidated[i] = True
                    self._on_liquidation(i)
            elif isinstance(e, OrderRejected | RequestRejected) and e.account in index:
                self.rejections += 1
        for i in filled:
            self._record_entry(i)
        # Entries of this step that did not fill at all (refused, or no liquidity left: a
        # market order is done within its step) are tried again next step, against the
        # makers' new quotes.
        if self._sent:
            for i in self._sent:
                if entering[i]:
                    entering[i] = False
                    if self._attempts[i] < MAX_ENTRY_ATTEMPTS:
                        self._retry.append(i)
                    else:
                        self.entries_failed += 1
            self._sent = []

    # -- actions --------------------------------------------------------------------------------
    def _enter(
        self,
        i: int,
        world: World,
        walk: _BookWalk,
        commands: list[Command],
    ) -> bool:
        """A market order of margin x leverage on the trader's side (a stop attached). False,
        and nothing sent, when what is left of the visible book on that side cannot take it
        (and something was taken from it in this step: an order bigger than the whole book
        goes, the rest of it is the IOC remainder), or the book on that side is empty."""
        spec = world.spec
        side = self._side[i]
        estimate_ticks = world.target_ticks or world.last_ticks or world.mark_ticks
        mark_ticks = world.mark_ticks or estimate_ticks
        room_lots = walk.room_lots(side)
        if estimate_ticks <= 0 or room_lots <= 0:
            return False  # no price to size against, or no book
        k = spec.atoms_per_tick_lot
        leverage = self._leverage[i]
        budget_atoms = self._margin[i] * MARGIN_HAIRCUT
        # Margin per lot as the engine's check counts it: the fill / leverage, plus the open
        # loss of a fill on the wrong side of the mark. Sized at the price the order starts
        # at, then again at the price its last lot would reach (the more careful figure).
        fill_ticks = walk.price_ticks(side) or estimate_ticks
        qty_lots = _lots_for(budget_atoms, fill_ticks, mark_ticks, side, leverage, k)
        far_ticks = walk.price_ticks(side, qty_lots) or fill_ticks
        if far_ticks != fill_ticks:
            qty_lots = _lots_for(budget_atoms, far_ticks, mark_ticks, side, leverage, k)
        min_lots = -(-spec.min_notional_atoms // (estimate_ticks * k))
        qty_lots = min(max(qty_lots, min_lots, 1), spec.max_market_qty_lots * MAX_ENTRY_ORDERS)
        if qty_lots > room_lots and walk.taken_lots(side):
            return False
        walk.take(side, qty_lots)
        stop_ticks = 0
        if self._protection[i] == PROTECT_STOP:
            stop_ticks = self._stop_price(spec, estimate_ticks, mark_ticks, side, i)
        account = self.accounts[i]
        symbol = self.symbol
        max_lots = spec.max_market_qty_lots
        while qty_lots > 0:
            lots = min(qty_lots, max_lots)
            qty_lots -= lots
            commands.append(
                PlaceOrder(
                    account, symbol, side, _MARKET, _IOC, lots, 0, stop_loss_ticks=stop_ticks
                )
            )
        self._entering[i] = True
        self._sent.append(i)
        self._liquidated[i] = False
        self._attempts[i] += 1
        episode = self._episode[i] + 1
        self._episode[i] = episode
        hold = self._hold[i]
        if hold > 0:
            self._close_at.setdefault(world.step + hold, []).append((i, episode))
        return True

    def _stop_price(
        self, spec: MarketSpec, entry_ticks: int, mark_ticks: int, side: int, i: int
    ) -> int:
        """The stop at the trader's distance from the entry, on the losing side of the mark
        (a stop already reached at placement is refused: WOULD_IMMEDIATELY_TRIGGER)."""
        stop_ticks = round(entry_ticks * (1.0 - side * self._stop_distance[i]))
        stop_ticks = (
            min(stop_ticks, mark_ticks - 1) if side > 0 else max(stop_ticks, mark_ticks + 1)
        )
        return min(max(stop_ticks, spec.min_price_ticks), spec.max_price_ticks)

    def _reenter(self, traders: list[int], commands: list[Command]) -> None:
        """Re-entries after a liquidation: a fresh deposit, then an entry on the chosen side
        (queued with the step's other entries)."""
        how = self.config.reenter_side
        trend = 0
        if how == "trend":
            history = self._targets
            back = history[max(0, len(history) - 1 - self.config.trend_window)]
            trend = (history[-1] > back) - (history[-1] < back)
        for i in traders:
            if self._size_lots[i] or self._entering[i]:
                continue  # a partial liquidation left it in the market: no re-entry
            if how == "random" or (how == "trend" and trend == 0):
                self._side[i] = 1 if self._rng.random() < 0.5 else -1
            elif how == "trend":
                self._side[i] = trend
            commands.append(Deposit(self.accounts[i], self._margin[i]))
            self._attempts[i] = 0
            self._waiting[self._side[i]].append(i)
            self._reentry[i] = True
            self.reentries += 1

    def _close(self, i: int, commands: list[Command]) -> None:
        """The holding time is over: a reduce-only market order for the whole position."""
        assert self._world is not None
        size = self._size_lots[i]
        side = -1 if size > 0 else 1
        qty_lots = abs(size)
        max_lots = self._world.spec.max_market_qty_lots
        while qty_lots > 0:
            lots = min(qty_lots, max_lots)
            qty_lots -= lots
            commands.append(
                PlaceOrder(
                    self.accounts[i], self.symbol, side, _MARKET, _IOC, lots, 0, reduce_only=True
                )
            )

    def _ladder(self, i: int, world: World, commands: list[Command]) -> None:
        """Targets at `ladder_targets` from the entry (equal parts), a stop at the trader's
        distance. Targets the mark has already passed are left out (they would fire at once,
        which the engine refuses), and so are targets that would be less than a lot."""
        if not self._size_lots[i]:
            return
        account = self.accounts[i]
        pos = world.position(account)
        size = pos.size_lots
        if not size or not pos.entry_ticks:
            return
        spec = world.spec
        side = 1 if size > 0 else -1
        entry_ticks = pos.entry_ticks
        mark_ticks = world.mark_ticks or entry_ticks
        prices: list[int] = []
        for fraction in self.config.ladder_targets:
            price_ticks = round(entry_ticks * (1.0 + side * fraction))
            if prices:  # strictly away from the entry, in order
                price_ticks = (
                    max(price_ticks, prices[-1] + 1)
                    if side > 0
                    else min(price_ticks, prices[-1] - 1)
                )
            if side * (price_ticks - mark_ticks) > 0 and (
                spec.min_price_ticks <= price_ticks <= spec.max_price_ticks
            ):
                prices.append(price_ticks)
        n = len(prices)
        while n > 1 and abs(size) * (PPM // n) < PPM:  # each part at least one lot
            n -= 1
        if n == 0:
            return
        part_ppm = PPM // n
        parts = [part_ppm] * (n - 1) + [PPM - part_ppm * (n - 1)]
        stop_ticks = self._stop_price(spec, entry_ticks, mark_ticks, side, i)
        commands.append(
            PlaceExitLadder(
                account, self.symbol, tuple(zip(prices[:n], parts, strict=True)), stop_ticks
            )
        )

    # -- what it sees ---------------------------------------------------------------------------
    def _on_liquidation(self, i: int) -> None:
        assert self._world is not None
        now = self._world.step
        self.liquidations_seen += 1
        self.liquidation_log.append((now, i))
        self._entering[i] = False
        if self._rng.random() < self.config.reenter_share:
            self._reenter_at.setdefault(now + self._delay[i], []).append(i)

    def _record_entry(self, i: int) -> None:
        world = self._world
        assert world is not None
        account = self.accounts[i]
        pos = world.position(account)
        liquidation_ticks = world.liquidation_price_ticks(account) if pos.size_lots else None
        if self._protection[i] == PROTECT_LADDER and pos.size_lots:
            self._ladders_due.append(i)
        self.entries.append(
            EntryRecord(
                account=account,
                step=world.step,
                time_ns=world.time_ns,
                side=self._side[i],
                leverage=self._leverage[i],
                isolated=self._isolated[i],
                entry_ticks=pos.entry_ticks,
                liquidation_ticks=liquidation_ticks,
                margin_atoms=self._margin[i],
                reentry=self._reentry[i],
            )
        )


__all__ = [
    "MARGIN_HAIRCUT",
    "MAX_ENTRY_ATTEMPTS",
    "MAX_ENTRY_ORDERS",
    "PROTECT_LADDER",
    "PROTECT_NONE",
    "PROTECT_STOP",
    "EntryRecord",
    "LeveragedTraders",
    "TraderDraws",
    "cap_leverage",
    "draw_traders",
]
