"""The engine: `Engine.apply` dispatches a command, then runs the passes it sets off, in order.

The state hash, snapshot, restore and invariants are `snapshot`'s and `invariants`' work,
called from here.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. `apply` is the only way
state changes. Every handler validates and plans first and mutates only once nothing can fail
any more (a refusal is an `OrderRejected`/`RequestRejected` event and changes nothing, not
even an id counter). The engine reads no clock, no environment and no random source: the same
commands give the same events and the same `state_hash()` in every process.

The pipeline, one module per step: a command is checked and applied by its handler
(`order_path` for orders, `accounts` for money and settings, `marks` for oracle input, `clock`
for time), fills are settled (`settlement`) and order margin re-priced (`reserve`); then the
passes run, seeing the state only through `state.ExchangeState`: after a mark publication the
liquidation pass (`liquidation`, with `deleverage`) and then the conditional orders this mark
fires (`conditional`), at a funding time the funding pass (`funding_pass`), and after every
command the conditional orders' end-of-command work (the last-price cascade, stops of flat
positions, protection whose entry ended).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Final

from perpex.core import accounts, clock, marks
from perpex.core.amend import amend_order
from perpex.core.conditional import Conditionals
from perpex.core.figures import AccountFigures, account_figures
from perpex.core.funding_config import FundingConfig
from perpex.core.funding_pass import (
    MAX_FUNDING_OVERRIDES,
    MAX_RATE_E8,
    set_funding_rate,
    settle_funding,
)
from perpex.core.invariants import check_records, conservation_atoms
from perpex.core.ledger import Ledger
from perpex.core.liquidation import LiquidationConfig, Liquidator
from perpex.core.markets import MarketSpec
from perpex.core.mass_quote import mass_quote
from perpex.core.messages import (
    AdjustIsolatedMargin,
    AdvanceClock,
    AmendOrder,
    CancelOrder,
    ClockAdvanced,
    Command,
    CreateTokens,
    Deposit,
    DepositInsurance,
    Event,
    MassQuote,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    Reason,
    RedeemTokens,
    RequestRejected,
    SetFundingRate,
    SetLeverage,
    SetMarginMode,
    UpdateIndex,
    UpdateSources,
    Withdraw,
)
from perpex.core.oracle import IndexConfig
from perpex.core.order_path import cancel_order, place_order
from perpex.core.records import Account, MarketState, Order, Position
from perpex.core.snapshot import SNAPSHOT_VERSION, Snapshot, economic_state, snapshot, state_hash
from perpex.core.state import ExchangeState
from perpex.core.store import (
    MARK_MODES,
    MAX_ACCOUNT_NAME,
    MAX_ACCOUNTS,
    MAX_AMOUNT_ATOMS,
    MAX_CLIENT_ORDER_ID,
    MAX_CLOCK_NS,
    MAX_TOTAL_ATOMS,
    EngineError,
)
from perpex.core.tokens import Tokens, TokenSpec, specs_from_record

MAX_TICK_ROUNDS: Final = 100  # pass / stops rounds of one mark publication (each fires stops)
MAX_TOKEN_STOPS: Final = 2_000  # token rebalance and slice times one clock step may cross
# The two commands of the hot path, dispatched before the table: a Final name is a C static
# in the compiled build, where the class itself is a module-dictionary lookup.
_PLACE_ORDER: Final = PlaceOrder
_CANCEL_ORDER: Final = CancelOrder


class Engine:
    """Single-writer state machine over a fixed set of markets."""

    def __init__(
        self,
        markets: Sequence[MarketSpec],
        mark_mode: str = "binance",
        *,
        insurance_fund_atoms: int = 0,
        liquidation: LiquidationConfig | None = None,
        index: IndexConfig | None = None,
        funding: Mapping[str, FundingConfig] | None = None,
        tokens: Sequence[TokenSpec] = (),
    ) -> None:
        # The seed is the first money from outside: within the total every balance rests on.
        if not 0 <= insurance_fund_atoms <= MAX_TOTAL_ATOMS:
            raise EngineError(f"insurance_fund_atoms {insurance_fund_atoms} out of range")
        self.state = state = ExchangeState(markets, mark_mode, index, funding)
        self.liquidator = Liquidator(state, liquidation or LiquidationConfig())
        self.conditionals = Conditionals(state)  # stops, take-profits, ladders
        self.tokens = Tokens(state, tokens)  # leveraged tokens and their pools
        if insurance_fund_atoms:  # the common fund's seed comes from outside, like a deposit
            state.funds.seed(state.ledger.external, insurance_fund_atoms)
        self._handlers: dict[type[Command], Callable[[Any], list[Event]]] = {
            Deposit: partial(accounts.deposit, state),
            Withdraw: partial(accounts.withdraw, state),
            SetLeverage: partial(accounts.set_leverage, state),
            SetMarginMode: partial(accounts.set_margin_mode, state),
            AdjustIsolatedMargin: partial(accounts.adjust_isolated_margin, state),
            UpdateIndex: self._update_index,
            UpdateSources: self._update_index,
            AdvanceClock: self._advance_clock,
            SetFundingRate: partial(set_funding_rate, state),
            DepositInsurance: partial(accounts.deposit_insurance, state),
            PlaceConditionalOrder: self.conditionals.place,
            PlaceExitLadder: self.conditionals.place_ladder,
            MassQuote: partial(mass_quote, state),
            CreateTokens: self.tokens.create,
            RedeemTokens: self.tokens.redeem,
            AmendOrder: partial(amend_order, state),
        }

    # == dispatch =============================================================================
    def apply(self, command: Command) -> list[Event]:
        # Orders and cancels (most commands) go straight to the order path, before the table
        # of the other commands: no lookup and no generic call of a bound method.
        if type(command) is _PLACE_ORDER:
            if command.stop_loss_ticks or command.take_profit_ticks:  # the pair, then the entry
                events = self.conditionals.place_protected(command)
            else:
                events = place_order(self.state, command)
        elif type(command) is _CANCEL_ORDER:  # an open order, else a conditional one
            found = cancel_order(self.state, command)
            events = found if found is not None else self._cancel_not_open(command)
        else:
            handler = self._handlers.get(type(command))
            if handler is None:
                raise EngineError(f"unknown command {command!r}")
            events = handler(command)
        c = self.conditionals  # `c.pending()`, inlined: it runs after every command
        if c.count or c.flat or c.parents or c.ladders_touched:
            c.after_command(events)  # stops of flat positions, last-price triggers
        return events

    def apply_all(self, commands: Iterable[Command]) -> list[Event]:
        events: list[Event] = []
        for command in commands:
            events.extend(self.apply(command))
        return events

    def _cancel_not_open(self, cmd: CancelOrder) -> list[Event]:
        """No open order of that id: a conditional order, perhaps."""
        events = self.conditionals.cancel(cmd)
        if events is None:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.UNKNOWN_ORDER)]
        return events

    # == the passes of a mark publication and of a clock step ===============================
    def _update_index(self, cmd: UpdateIndex | UpdateSources) -> list[Event]:
        state = self.state
        refusal = marks.index_refusal(state, cmd)
        if refusal is not None:
            return [refusal]
        events: list[Event] = []
        old_mark_ticks = marks.set_index(state, cmd, events)
        # Every oracle tick runs the pass, moved or not: accounts queued by the last one wait.
        self._risk_then_stops(cmd.symbol, old_mark_ticks, events)
        return events

    def _risk_then_stops(self, symbol: str, old_mark_ticks: int, events: list[Event]) -> None:
        """A mark publication (DESIGN.md §5): the liquidation pass, then the conditional orders
        this mark fires. Their fills can sink an account (a stale bid filled above the mark);
        that is liquidated in the same tick: the passes run again, at the same marks, and
        whatever their fills fire, until a round of stops trades nothing (bounded)."""
        state = self.state
        self.liquidator.run_pass(symbol, old_mark_ticks, events)
        self._stop_rounds(symbol, events)
        if self.tokens.tokens:  # a pool past its threshold rebalances; one without equity halts
            trades_before = state.next_trade_id
            self.tokens.on_mark(symbol, events)
            if state.next_trade_id != trades_before:  # its fills, like a stop's, can sink a maker
                self._liquidate_all(events)
                self._stop_rounds(symbol, events)

    def _stop_rounds(self, symbol: str, events: list[Event]) -> None:
        """The conditional orders this mark fires; after a round that traded, the liquidation
        passes at the same marks, then the next round (bounded)."""
        state = self.state
        for _ in range(MAX_TICK_ROUNDS):
            trades_before = state.next_trade_id
            self.conditionals.on_mark(symbol, events)
            if state.next_trade_id == trades_before:
                break
            self._liquidate_all(events)

    def _liquidate_all(self, events: list[Event]) -> None:
        """The liquidation pass of every market that has a mark, at that mark."""
        for symbol, market in self.state.markets.items():
            if market.mark_ticks:
                self.liquidator.run_pass(symbol, market.mark_ticks, events)

    def _advance_clock(self, cmd: AdvanceClock) -> list[Event]:
        """The clock stops at each funding time on the way (`clock.plan_steps`). At each stop
        the mark is recomputed at the new time (as Binance republishes it every second) and
        the passes run, moved or not: fills since the last publication can have sunk an
        account at the same mark. Then the funding due at that time is paid at that mark, and
        the liquidation pass runs again for what the payments sank."""
        state = self.state
        steps = clock.plan_steps(state, cmd.ts_ns)
        if isinstance(steps, Reason):
            return [RequestRejected("", "", steps)]
        tokens = self.tokens
        if tokens.tokens:  # the clock also stops at the tokens' rebalance and slice times
            due = tokens.due_times(state.clock_ns, cmd.ts_ns)
            if len(due) > MAX_TOKEN_STOPS:
                return [RequestRejected("", "", Reason.TIME_STEP_TOO_LARGE)]
            steps = sorted(set(steps) | due)
        events: list[Event] = [ClockAdvanced(cmd.ts_ns)]
        token_stops = 0
        i = 0
        while i < len(steps):
            ts_ns = steps[i]
            i += 1
            settlements = clock.step(state, ts_ns)
            for symbol, market in state.markets.items():
                if market.index_ticks:
                    old_mark_ticks = marks.refresh_mark(state, symbol, market, events)
                    self._risk_then_stops(symbol, old_mark_ticks, events)
            for symbol, market, settlement in settlements:
                settle_funding(state, symbol, market, settlement, events)
                self.liquidator.run_pass(symbol, market.mark_ticks, events)
            if tokens.tokens:
                trades_before = state.next_trade_id
                tokens.on_clock(ts_ns, events)
                if state.next_trade_id != trades_before:  # rebalance fills: as at a mark
                    self._liquidate_all(events)
                    for symbol, market in state.markets.items():
                        if market.mark_ticks:
                            self._stop_rounds(symbol, events)
                # a TWAP begun at this stop has slices later in the same step: stop there too
                later = tokens.due_times(ts_ns, cmd.ts_ns).difference(steps[i:])
                token_stops += len(later)
                if later and token_stops <= MAX_TOKEN_STOPS:
                    steps = steps[:i] + sorted(set(steps[i:]) | later)
        return events

    # == reads ================================================================================
    @property
    def markets(self) -> dict[str, MarketState]:
        return self.state.markets

    @property
    def accounts(self) -> dict[str, Account]:
        return self.state.accounts

    @property
    def ledger(self) -> Ledger:
        return self.state.ledger

    @property
    def holders(self) -> dict[str, set[str]]:
        """Accounts with a non-zero position, per symbol."""
        return self.state.holders

    @property
    def clock_ns(self) -> int:
        return self.state.clock_ns

    @property
    def next_order_id(self) -> int:
        return self.state.next_order_id

    @property
    def next_trade_id(self) -> int:
        return self.state.next_trade_id

    @property
    def mark_mode(self) -> str:
        return self.state.mark_mode

    @property
    def index_config(self) -> IndexConfig:
        return self.state.index_config

    def market(self, symbol: str) -> MarketState:
        return self.state.markets[symbol]

    def position_of(self, account: str, symbol: str) -> Position | None:
        return self.state.position_of(account, symbol)

    def settings_of(self, account: str, symbol: str) -> tuple[int, bool]:
        """(leverage, isolated) in force for the pair, defaults when never set."""
        return self.state.settings_of(account, symbol)

    def available_atoms(self, acct: Account) -> int:
        """Cross wallet + cross uPnL - cross IM at mark - order margin (the pre-trade check)."""
        return self.state.available_atoms(acct)

    def account_figures(self, name: str) -> AccountFigures:
        return account_figures(self.state, name)

    @staticmethod
    def predicted_funding_rate_e8(market: MarketState) -> int:
        """The rate the coming settlement will charge if nothing changes (a replayed one if set)."""
        return marks.predicted_funding_rate_e8(market)

    # == canonical state ======================================================================
    def _economic_state(self) -> list[Any]:
        economic = economic_state(self.state, self.liquidator.record(), self.conditionals.record())
        if self.tokens.tokens:  # only then: an engine without tokens hashes as it always did
            economic.append(self.tokens.record())
        return economic

    def state_hash(self) -> str:
        return state_hash(self._economic_state())

    def snapshot(self) -> bytes:
        """The full state (economic state plus counters), enough to rebuild an equal engine."""
        return snapshot(self.state, self._economic_state())

    @classmethod
    def restore(cls, blob: bytes) -> Engine:
        snap = Snapshot(blob)
        tokens = specs_from_record(snap.tokens)
        engine = cls(
            snap.specs, snap.mark_mode, index=snap.index, funding=snap.funding, tokens=tokens
        )
        snap.load_into(engine.state)
        engine.conditionals.load(snap.conditional)
        engine.liquidator.load(snap.liquidation)  # after the ledger: one fund is all of it
        engine.tokens.load(snap.tokens)
        return engine

    # == invariants ===========================================================================
    def check_invariants(self) -> None:
        """Recompute every cached sum and every conservation law; AssertionError on a breach."""
        check_records(self.state)
        self.liquidator.check()
        self.conditionals.check_invariants()
        self.tokens.check()

    def conservation_atoms(self) -> tuple[int, int]:
        """(deposits - withdrawals, margin balances incl. uPnL + fees + insurance + funding)."""
        return conservation_atoms(self.state)


__all__ = [
    "MARK_MODES",
    "MAX_ACCOUNTS",
    "MAX_ACCOUNT_NAME",
    "MAX_AMOUNT_ATOMS",
    "MAX_CLIENT_ORDER_ID",
    "MAX_CLOCK_NS",
    "MAX_FUNDING_OVERRIDES",
    "MAX_RATE_E8",
    "MAX_TICK_ROUNDS",
    "MAX_TOTAL_ATOMS",
    "SNAPSHOT_VERSION",
    "Account",
    "AccountFigures",
    "Engine",
    "EngineError",
    "MarketState",
    "Order",
    "Position",
]
