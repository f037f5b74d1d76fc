"""`ServerState`: what a running server holds, built once at start (`open_state`).

Start-up is recovery (DESIGN.md §6.5): the views (order history, trades, candles) are rebuilt
by replaying the journal's events from seq 1 (`perpex.journal.iter_events`), then the exchange
is opened on the same journal (which recovers from its newest snapshot). Only then does the
sequencer start; the market driver seeds the book; the demo account's key is made on the first
start and kept in the key file.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from perpex.core.markets import MarketSpec
from perpex.core.messages import Event, OrderAccepted, PlaceOrder, SelfTradePrevention
from perpex.errors import ExchangeError
from perpex.exchange import Exchange
from perpex.journal import iter_commands
from perpex.server.account_history import AccountHistory
from perpex.server.backfill import BackfillStore
from perpex.server.config import DEMO_ACCOUNT, ServerConfig
from perpex.server.driver import MarketDriver
from perpex.server.income_history import IncomeHistory
from perpex.server.keystore import KeyStore
from perpex.server.limits import RateLimiter
from perpex.server.market_history import MarketHistory
from perpex.server.sequencer import EventSink, Sequencer, wall_clock_ns
from perpex.server.streams import StreamHub

log = logging.getLogger("perpex.server")


@dataclass
class ServerState:
    config: ServerConfig
    ex: Exchange
    seq: Sequencer
    keys: KeyStore
    limiter: RateLimiter
    market: MarketHistory
    accounts: AccountHistory
    income: IncomeHistory
    hub: StreamHub
    driver: MarketDriver | None
    admin_token: str
    specs: dict[str, MarketSpec]
    started_ns: int
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        """Stop the writer (it finishes what is queued), then snapshot and close the journal."""
        self.seq.stop()
        self.ex.close()
        self.keys.close()


def remember_stp_mode(accounts: AccountHistory, command: PlaceOrder, events: list[Event]) -> None:
    """A journaled order placed with EXPIRE_MAKER or EXPIRE_BOTH: its mode, for its record."""
    for e in events:
        if type(e) is OrderAccepted and e.account == command.account:
            mode = SelfTradePrevention(command.self_trade_prevention).name
            accounts.stp_modes[(e.account, e.order_id)] = mode
            return


def open_state(config: ServerConfig, driver: MarketDriver | None = None) -> ServerState:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    options: dict[str, Any] = dict(driver.exchange_options()) if driver is not None else {}
    journal = config.journal_path
    # The views first, from the whole journal; the markets are the ones the journal records.
    probe = Exchange(**options)  # compiles the markets the same way the journaled one will
    specs = dict(probe._specs)
    # A fresh market's past (the driver's, kept in the data directory for the next start).
    backfill = BackfillStore(config.data_dir / "history", driver)
    market = MarketHistory(list(specs.values()), backfill=backfill.get)
    accounts = AccountHistory(list(specs.values()))
    income = IncomeHistory(list(specs.values()))
    sinks: list[EventSink] = [market, accounts, income]
    existed = journal.exists()
    if existed:
        for command, events in iter_commands(journal):
            if type(command) is PlaceOrder and command.self_trade_prevention:
                remember_stp_mode(accounts, command, events)
            for sink in sinks:
                sink.apply(events)
    accounts.live = True  # from now on it also queues the user stream's order updates
    now_ns = wall_clock_ns()
    start_s = now_ns // 1_000_000_000  # a fresh journal's clock starts now (whole seconds)
    ex = Exchange(
        journal=journal, start_time=start_s, snapshot_every=config.snapshot_every, **options
    )
    opened = ex.take_events()  # a restart: the recovery's replay, which the views have seen
    if not existed:  # a fresh journal: its first commands (the start clock), seen like any
        for sink in sinks:
            sink.apply(opened)
    keys = KeyStore(config.keys_path)
    if keys.by_name(DEMO_ACCOUNT) is None:
        keys.create(DEMO_ACCOUNT, deposit=config.demo_deposit)
    hub = StreamHub(config)
    seq = Sequencer(ex, sinks=sinks, publishers=[hub], max_batch=config.max_batch)
    return ServerState(
        config=config,
        ex=ex,
        seq=seq,
        keys=keys,
        limiter=RateLimiter(config.limits),
        market=market,
        accounts=accounts,
        income=income,
        hub=hub,
        driver=driver,
        admin_token=config.admin_token or secrets.token_urlsafe(24),
        specs=specs,
        started_ns=now_ns,
    )


def fund_new_accounts(state: ServerState) -> None:
    """A sequencer job: each live key's deposit, for an account the exchange has not seen.

    Exactly once: the deposit creates the account, and an existing account is never funded
    again, whether the key was made before the server started or while it runs."""
    ex = state.ex
    for name, deposit in state.keys.pending_deposits():
        if name in ex.engine.accounts or Decimal(deposit) <= 0:
            continue
        try:
            ex.deposit(name, deposit)
        except ExchangeError:  # one bad row must not stop the others' funding
            log.exception("could not fund the account of key %r", name)


__all__ = ["ServerState", "fund_new_accounts", "open_state"]
