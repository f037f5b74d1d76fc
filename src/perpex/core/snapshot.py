"""The canonical record of the state: what `state_hash` digests and what a snapshot restores.

Units: as stored (ticks, lots, atoms, ns). The economic state lists everything with economic
meaning in a canonical order (markets and accounts by name, orders by id, the book in queue
order) and leaves out logs, sequence numbers and id counters, so a refused command leaves the
hash unchanged. The snapshot adds the counters. Both are MessagePack (msgspec), whose integers
are 64-bit: `store.MAX_TOTAL_ATOMS` and `store.MAX_CLOCK_NS` keep every stored integer within
them (the argument is at `MAX_TOTAL_ATOMS`).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any, Final

import msgspec

from perpex.core.funding import FundingState
from perpex.core.funding_config import FundingConfig
from perpex.core.markets import BracketSpec, MarketSpec
from perpex.core.messages import OrderType, TimeInForce
from perpex.core.oracle import IndexConfig, MarkState
from perpex.core.records import Account, Order, register
from perpex.core.store import EngineError, Store

SNAPSHOT_VERSION: Final = 5  # 2: liquidation record; 3: oracle state; 4: funding;
# 5: conditional orders (trigger books, exit ladders)


# -- the record -------------------------------------------------------------------------------
def spec_record(spec: MarketSpec) -> list[Any]:
    return [
        spec.symbol,
        str(spec.tick_size),
        str(spec.step_size),
        spec.price_precision,
        spec.quantity_precision,
        spec.atoms_per_tick_lot,
        [
            [b.index, b.floor_atoms, b.cap_atoms, b.max_leverage, b.mmr_ppm, b.cum_atoms]
            for b in spec.brackets
        ],
        spec.maker_fee_ppm,
        spec.taker_fee_ppm,
        spec.min_notional_atoms,
        spec.min_price_ticks,
        spec.max_price_ticks,
        spec.max_limit_qty_lots,
        spec.max_market_qty_lots,
        spec.price_band_ppm,
        spec.max_open_orders,
        spec.default_leverage,
        spec.max_position_lots,
    ]


def order_record(o: Order) -> list[Any]:
    return [
        o.order_id,
        o.account,
        o.symbol,
        o.side,
        int(o.order_type),
        int(o.time_in_force),
        o.price_ticks,
        o.qty_lots,
        o.remaining_lots,
        o.filled_lots,
        o.filled_quote_ticks,
        o.reduce_only,
        o.client_order_id,
        o.reserved_atoms,
    ]


def economic_state(state: Store, liquidation: list[Any], conditional: list[Any]) -> list[Any]:
    """Everything with economic meaning, in a canonical order (no logs, no id counters).
    `liquidation`: the liquidator's record (its config, the queue of the next pass, the fund
    shares); `conditional`: the conditional orders' (trigger books, exit ladders)."""
    markets = []
    for symbol in sorted(state.markets):
        m = state.markets[symbol]
        markets.append(
            [
                spec_record(m.spec),
                m.index_ticks,
                m.mark_ticks,
                m.last_trade_ticks,
                [o.order_id for o in m.book.orders()],  # queue order matters
                m.mark_state.record(),  # the basis samples shape future marks
                sorted([name, price, ts] for name, (price, ts) in m.quotes.items()),
                m.funding_config,
                None if m.funding is None else m.funding.record(),
                sorted(m.funding_overrides.items()),
                m.last_funding_rate_e8,
            ]
        )
    accounts = []
    for name in sorted(state.accounts):
        acct = state.accounts[name]
        positions = []
        for symbol in sorted(acct.positions):
            p = acct.positions[symbol]
            if p.is_default(state.markets[symbol].spec.default_leverage):
                continue
            positions.append(
                [
                    symbol,
                    p.leverage,
                    p.isolated,
                    p.size_lots,
                    p.cost_atoms,
                    p.margin.balance,
                    [order_record(p.open_orders[i]) for i in sorted(p.open_orders)],
                ]
            )
        accounts.append([name, acct.wallet.balance, acct.reserved_atoms, positions])
    ledger = [b.balance for b in state.ledger.system_buckets()]
    index = state.index_config
    oracle = [
        state.mark_mode,
        sorted([name, weight] for name, weight in index.sources.items()),
        index.stale_after_ns,
        index.max_deviation_ppm,
    ]
    return [oracle, state.clock_ns, markets, accounts, ledger, liquidation, conditional]


def state_hash(economic: list[Any]) -> str:
    """The hex digest of an economic state (`economic_state`)."""
    return hashlib.blake2b(msgspec.msgpack.encode(economic), digest_size=32).hexdigest()


def snapshot(state: Store, economic: list[Any]) -> bytes:
    """The full state (economic state plus counters), enough to rebuild an equal engine."""
    return msgspec.msgpack.encode(
        {
            "version": SNAPSHOT_VERSION,
            "state": economic,
            "next_order_id": state.next_order_id,
            "next_trade_id": state.next_trade_id,
            "ledger_transfers": state.ledger.transfers,
        }
    )


# -- the way back -----------------------------------------------------------------------------
class Snapshot:
    """A decoded snapshot: what the engine is built with, and the records loaded into it."""

    __slots__ = ("data", "funding", "index", "mark_mode", "specs")

    def __init__(self, blob: bytes) -> None:
        data = msgspec.msgpack.decode(blob)
        if data.get("version") != SNAPSHOT_VERSION:
            raise EngineError(f"snapshot version {data.get('version')} != {SNAPSHOT_VERSION}")
        self.data: dict[str, Any] = data
        oracle, _, markets, *_ = data["state"]
        mark_mode, sources, stale_after_ns, max_deviation_ppm = oracle
        self.mark_mode: str = mark_mode
        self.index = IndexConfig(dict(sources), stale_after_ns, max_deviation_ppm)
        self.specs = [spec_from_record(m[0]) for m in markets]
        self.funding = {m[0][0]: msgspec.convert(m[7], FundingConfig) for m in markets}

    @property
    def liquidation(self) -> list[Any]:
        """The liquidator's record."""
        record: list[Any] = self.data["state"][5]
        return record

    @property
    def tokens(self) -> list[Any]:
        """The leveraged tokens' record ([] for an engine without tokens)."""
        state: list[Any] = self.data["state"]
        return state[7] if len(state) > 7 else []

    @property
    def conditional(self) -> list[Any]:
        """The conditional orders' record."""
        record: list[Any] = self.data["state"][6]
        return record

    def load_into(self, state: Store) -> None:
        """Write the clock, counters, ledger, accounts and markets into a fresh state built
        with `specs`, `mark_mode`, `index` and `funding` (the passes load their own records)."""
        data = self.data
        _, clock_ns, markets, accounts, ledger, *_ = data["state"]
        state.clock_ns = clock_ns
        state.next_order_id = data["next_order_id"]
        state.next_trade_id = data["next_trade_id"]
        state.ledger.transfers = data["ledger_transfers"]
        for bucket, balance in zip(state.ledger.system_buckets(), ledger, strict=True):
            bucket.balance = balance
        orders: dict[int, Order] = {}
        for name, wallet, reserved, positions in accounts:
            acct = state.accounts[name] = Account(name)
            acct.wallet.balance = wallet
            acct.reserved_atoms = reserved
            for symbol, lev, isolated, size, cost, margin, order_records in positions:
                pos = state.position_for_write(acct, symbol)
                pos.leverage, pos.isolated, pos.size_lots, pos.cost_atoms = (
                    lev,
                    isolated,
                    size,
                    cost,
                )
                pos.margin.balance = margin
                if size:
                    state.holders[symbol].add(name)
                for r in order_records:
                    o = Order(
                        r[0],
                        r[1],
                        r[2],
                        r[3],
                        OrderType(r[4]),
                        TimeInForce(r[5]),
                        r[6],
                        r[7],
                        r[11],
                        r[12],
                        r[13],
                    )
                    o.remaining_lots, o.filled_lots, o.filled_quote_ticks = r[8], r[9], r[10]
                    reserved_before = acct.reserved_atoms
                    register(acct, pos, o)
                    acct.reserved_atoms = reserved_before  # already counted in the record
                    orders[o.order_id] = o
        for record in markets:
            m = state.markets[record[0][0]]
            m.index_ticks, m.mark_ticks, m.last_trade_ticks = record[1], record[2], record[3]
            for oid in record[4]:
                m.book.add(orders[oid])
            m.mark_state = MarkState.from_record(record[5], m.mark_state.config)
            m.quotes = {name: (price, ts) for name, price, ts in record[6]}
            if record[8] is not None:
                m.funding = FundingState.from_record(
                    record[8],
                    m.funding_config,
                    impact_notional_atoms=FundingState.for_market(
                        m.spec, 0, m.funding_config
                    ).impact_notional_atoms,
                    atoms_per_tick_lot=m.spec.atoms_per_tick_lot,
                )
            m.funding_overrides = {int(t): int(r) for t, r in record[9]}
            m.last_funding_rate_e8 = record[10]


def spec_from_record(r: list[Any]) -> MarketSpec:
    brackets = tuple(BracketSpec(*b) for b in r[6])
    return MarketSpec(
        symbol=r[0],
        tick_size=Decimal(r[1]),
        step_size=Decimal(r[2]),
        price_precision=r[3],
        quantity_precision=r[4],
        atoms_per_tick_lot=r[5],
        brackets=brackets,
        maker_fee_ppm=r[7],
        taker_fee_ppm=r[8],
        min_notional_atoms=r[9],
        min_price_ticks=r[10],
        max_price_ticks=r[11],
        max_limit_qty_lots=r[12],
        max_market_qty_lots=r[13],
        price_band_ppm=r[14],
        max_open_orders=r[15],
        default_leverage=r[16],
        max_position_lots=r[17],
        _floors=tuple(b.floor_atoms for b in brackets),
    )


__all__ = [
    "SNAPSHOT_VERSION",
    "Snapshot",
    "economic_state",
    "order_record",
    "snapshot",
    "spec_from_record",
    "spec_record",
    "state_hash",
]
