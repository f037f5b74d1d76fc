"""The invariants of the records: every cached sum recomputed, every conservation law checked.

An AssertionError names the first breach (a bug: crash and recover, never continue on corrupt
state).

Units: money in atoms, sizes in lots. What is checked: the ledger sums to zero; SETTLEMENT is
minus the open cost basis; long lots equal short lots per symbol; the insurance funds' shares
split INSURANCE, none below zero; each account's reserved margin, open lots, reduce-only count,
client-id index and margin-order sides match its open orders, every priced margin order
holds what `reserve.reprice_side` would give it, and the closed head of each side is its
oldest orders, holding nothing; the holder index matches the positions; each book holds
exactly the open orders of its symbol. The passes check their own state
(`Liquidator.check`, `Conditionals.check_invariants`).
"""

from __future__ import annotations

from perpex.core.book import BUY, SELL
from perpex.core.reserve import opening_margin_atoms
from perpex.core.store import Store


def check_records(state: Store) -> None:
    """Recompute every cached sum and every conservation law of the records, the ledger
    and the books; AssertionError on a breach. (The passes check their own state.)"""
    ledger_sum = sum(b.balance for b in state.ledger.system_buckets())
    cost_sum = 0
    lots_by_symbol = dict.fromkeys(state.markets, 0)
    resting: dict[str, set[int]] = {s: set() for s in state.markets}
    for acct in state.accounts.values():
        ledger_sum += acct.wallet.balance
        reserved = 0
        for oid, o in acct.orders.items():
            assert o.order_id == oid and o.account == acct.name
            assert acct.positions[o.symbol].open_orders.get(oid) is o
            reserved += o.reserved_atoms
        assert reserved == acct.reserved_atoms, f"{acct.name}: reservations drifted"
        assert len(acct.client_ids) == sum(
            1 for o in acct.orders.values() if o.client_order_id is not None
        )
        for cid, oid in acct.client_ids.items():
            assert acct.orders[oid].client_order_id == cid
        for symbol, pos in acct.positions.items():
            ledger_sum += pos.margin.balance
            cost_sum += pos.cost_atoms
            lots_by_symbol[symbol] += pos.size_lots
            if not pos.size_lots:
                assert pos.cost_atoms == 0, f"{acct.name}/{symbol}: cost without position"
                assert pos.margin.balance == 0, f"{acct.name}/{symbol}: margin left behind"
            if not pos.isolated:
                assert pos.margin.balance == 0, f"{acct.name}/{symbol}: cross with margin"
            buy = sum(o.remaining_lots for o in pos.open_orders.values() if o.side == BUY)
            sell = sum(o.remaining_lots for o in pos.open_orders.values() if o.side == SELL)
            assert (buy, sell) == (pos.open_buy_lots, pos.open_sell_lots), "open lots drifted"
            assert pos.reduce_only_count == sum(
                1 for o in pos.open_orders.values() if o.reduce_only
            )
            for side, margin_orders in ((BUY, pos.margin_buys), (SELL, pos.margin_sells)):
                by_side = margin_orders.orders
                want = [o for o in pos.open_orders.values() if o.side == side]
                assert list(by_side.values()) == [o for o in want if not o.reduce_only], (
                    f"{acct.name}/{symbol}: margin orders drifted"
                )
                assert list(by_side) == sorted(by_side), "margin orders not oldest first"
                assert all(by_side.get(i) is o for i, o in margin_orders.unpriced.items())
                head = [o for o in by_side.values() if o.order_id <= margin_orders.head_last_id]
                assert head == list(by_side.values())[: margin_orders.head_count], (
                    f"{acct.name}/{symbol}: closed head drifted"
                )
                assert sum(o.remaining_lots for o in head) == margin_orders.head_lots
                assert margin_orders.head_lots <= margin_orders.closing_lots
                unpriced = margin_orders.unpriced
                assert not any(o.reserved_atoms or o.order_id in unpriced for o in head)
                k = state.markets[symbol].spec.atoms_per_tick_lot
                head_lots = margin_orders.closing_lots
                for o in by_side.values():  # past the head, the rest holds its margin as priced
                    if head_lots <= 0 and o.order_id not in margin_orders.unpriced:
                        assert margin_orders.mark_ticks, f"{o}: priced at no mark"
                        want_atoms = opening_margin_atoms(
                            o, margin_orders.mark_ticks, margin_orders.leverage, k
                        )
                        assert o.reserved_atoms == want_atoms, f"{o}: margin not as priced"
                    head_lots -= o.remaining_lots
            for o in pos.open_orders.values():
                assert acct.orders.get(o.order_id) is o
                resting[symbol].add(o.order_id)
                assert o.remaining_lots > 0
                assert o.filled_lots + o.remaining_lots <= o.qty_lots
    assert ledger_sum == 0, f"ledger does not sum to zero: {ledger_sum}"
    assert state.ledger.settlement.balance + cost_sum == 0, "settlement != -open cost basis"
    for symbol, lots in lots_by_symbol.items():
        assert lots == 0, f"{symbol}: long lots != short lots ({lots})"
    assert state.ledger.insurance.balance >= 0, "insurance fund below zero"
    state.funds.check()  # the funds' shares split INSURANCE, none below zero
    for symbol in state.markets:
        holders = {
            n for n, a in state.accounts.items() if (p := a.positions.get(symbol)) and p.size_lots
        }
        assert state.holders[symbol] == holders, f"{symbol}: holder index drifted"
    for symbol, m in state.markets.items():
        m.book.validate_internal_state()
        assert {o.order_id for o in m.book.orders()} == resting[symbol], "book != open orders"


def conservation_atoms(state: Store) -> tuple[int, int]:
    """(deposits - withdrawals, margin balances incl. uPnL + fees + insurance + funding)."""
    total = 0
    for acct in state.accounts.values():
        total += acct.wallet.balance
        for pos in acct.positions.values():
            total += pos.margin.balance
            if pos.size_lots:
                market = state.markets[pos.symbol]
                spec, mark = market.spec, market.mark_ticks
                total += pos.size_lots * mark * spec.atoms_per_tick_lot - pos.cost_atoms
    lg = state.ledger
    total += lg.fees.balance + lg.insurance.balance + lg.funding.balance
    return -lg.external.balance, total


__all__ = ["check_records", "conservation_atoms"]
