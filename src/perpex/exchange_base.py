"""What the parts of the `Exchange` facade share: its state, and the one way a command goes in.

`Exchange` (perpex.exchange) is assembled from `OrderCalls` (perpex.exchange_orders: placing
and cancelling orders), `ExchangeReads` (perpex.exchange_reads: the views) and its own
construction, money, settings, oracle, clock and driver methods; all of them stand on this.
"""

from __future__ import annotations

import contextlib
from typing import Final, Self

from perpex.checks import Checker
from perpex.convert import MarketEdge
from perpex.core.engine import Engine, EngineError
from perpex.core.funding import FundingSchedule
from perpex.core.markets import MarketSpec
from perpex.core.messages import Command, Event, OrderRejected, RequestRejected
from perpex.errors import ExchangeError, error_for, invalid_symbol
from perpex.journal import JournaledEngine

REJECTIONS: Final = (OrderRejected, RequestRejected)


def internal_error(exc: EngineError) -> ExchangeError:
    # Unreachable when the edge checks hold (they refuse whatever the engine cannot
    # represent); should one slip through, the caller still gets Binance's shape.
    return ExchangeError(-1000, f"An unknown error occured while processing the request. ({exc})")


class ExchangeBase:
    """The facade's state (set by `Exchange.__init__`) and its plumbing."""

    engine: Engine
    journal: JournaledEngine | None
    _specs: dict[str, MarketSpec]
    _markets: dict[str, MarketEdge]
    _check: Checker
    _known_accounts: set[str]  # names that passed `parse.account` (the checker's cache)
    _events: list[Event]
    _funding_history: dict[str, FundingSchedule]

    def _apply(self, command: Command) -> list[Event]:
        return self._apply_outcome(command)[0]

    def _apply_outcome(self, command: Command) -> tuple[list[Event], bool]:
        """(events, duplicate): a resent (account, client_order_id) gets its first answer."""
        try:
            if self.journal is None:
                events = self.engine.apply(command)
            else:
                # Journaled (durable) before it is applied. A resent (account,
                # client_order_id) gets its first answer back and changes nothing, not even
                # the event log.
                outcome = self.journal.submit(command)
                if outcome.duplicate:
                    return outcome.events, True
                events = outcome.events
        except EngineError as exc:
            raise internal_error(exc) from None
        self._events.extend(events)
        return events, False

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group commit: the commands of a `with ex.batch():` block share one transaction (one
        fsync) and are durable when it exits; answers come back at once. No-op without a journal.
        """
        return self.journal.batch() if self.journal is not None else contextlib.nullcontext()

    def close(self) -> None:
        """Snapshot and close the journal, if there is one. Safe to call twice."""
        if self.journal is not None:
            self.journal.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _market(self, symbol: object) -> MarketEdge:
        market = None
        if isinstance(symbol, str):  # a str subclass's own __hash__ never runs
            market = self._markets.get(symbol if type(symbol) is str else str.__str__(symbol))
        if market is None:
            raise invalid_symbol()
        return market

    def _spec(self, symbol: object) -> MarketSpec:
        return self._market(symbol).spec

    def _account(self, name: object) -> str:
        if type(name) is str and name in self._known_accounts:
            return name
        return self._check.account(name)

    @staticmethod
    def _raise_rejection(events: list[Event], **fields: object) -> None:
        # A refusal is the command's only event: an OrderRejected further on belongs to an
        # order a stop placed when this command's price move fired it.
        e = events[0] if events else None
        if isinstance(e, REJECTIONS):
            raise error_for(e.reason, **fields) if fields else error_for(e.reason)
