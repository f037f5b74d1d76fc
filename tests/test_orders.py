"""Order semantics as Binance USDⓈ-M defines them, through the public facade.

Scenarios are tables where the rule has variants (time in force, reduce-only, margin-mode
changes, ...). The default markets are used unless a rule needs a custom one (fees maker
0.02 % / taker 0.05 %, tick 0.1, step 0.001, price band 5 %: perpex.defaults, DESIGN.md §7).
Every money figure is derived in the test from those parameters. Every test ends with
`settled(ex)`: the invariant checker and the conservation law (deposits - withdrawals equals
margin balances including uPnL plus fees, insurance and funding).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from perpex import Exchange, ExchangeError, Market, Order
from perpex.core.messages import EndReason, OrderCanceled, TradeExecuted
from perpex.defaults import default_brackets

BTC = "BTCUSDT"
ETH = "ETHUSDT"
MAKER_FEE = Decimal("0.0002")  # perpex.defaults (Binance's regular tier)
TAKER_FEE = Decimal("0.0005")
ATOM = Decimal("0.000001")


def fee(notional: Decimal, rate: Decimal) -> Decimal:
    """Fees round up to the atom, in favour of the exchange (DESIGN.md §2)."""
    return (notional * rate).quantize(ATOM, rounding="ROUND_CEILING")


def settled(ex: Exchange) -> None:
    ex.check_invariants()
    deposits, held = ex.engine.conservation_atoms()
    assert deposits == held


@pytest.fixture
def ex() -> Exchange:
    """Default markets, BTC index 60,000 and ETH 3,000; alice 100k, bob and carol 1M USDT."""
    exchange = Exchange(mark_price="index")
    exchange.set_index_price(BTC, "60000")
    exchange.set_index_price(ETH, "3000")
    exchange.deposit("alice", "100000")
    exchange.deposit("bob", "1000000")
    exchange.deposit("carol", "1000000")
    return exchange


def rest(ex: Exchange, account: str, side: str, qty: str, price: str, symbol: str = BTC) -> Order:
    order = ex.place_order(account, symbol, side, "LIMIT", qty, price)
    assert order.status == "NEW"
    return order


def take(
    ex: Exchange, taker: str, side: str, qty: str, price: str, maker: str = "bob", symbol: str = BTC
) -> Order:
    """`maker` rests the opposite side at `price`, `taker` takes it all."""
    rest(ex, maker, "SELL" if side == "BUY" else "BUY", qty, price, symbol)
    order = ex.place_order(taker, symbol, side, "LIMIT", qty, price)
    assert order.status == "FILLED"
    return order


def book(ex: Exchange, symbol: str = BTC) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    depth = ex.order_book(symbol)
    return (
        [(str(p), str(q)) for p, q in depth["bids"]],
        [(str(p), str(q)) for p, q in depth["asks"]],
    )


def raises(code: int, ex: Exchange, call: object, *args: object, **kwargs: object) -> ExchangeError:
    """The call raises `code` and changes nothing."""
    before = ex.state_hash()
    assert callable(call)
    with pytest.raises(ExchangeError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value
    assert ex.state_hash() == before
    return info.value


# -- time in force ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TifCase:
    name: str
    tif: str
    asks: tuple[tuple[str, str], ...]  # (qty, price) resting from bob, in this order
    qty: str
    price: str
    status: str | None = None  # None: rejected with `code`
    executed: str = "0"
    avg_price: str = "0"
    resting_bid: str | None = None  # what is left of alice's order on the book
    code: int | None = None


TIF_CASES = [
    TifCase("GTC with no liquidity rests", "GTC", (), "1", "59900", "NEW",
            resting_bid="1.000"),
    TifCase("GTC partial fill keeps the rest on the book", "GTC", (("0.4", "60000"),), "1",
            "60000", "PARTIALLY_FILLED", "0.4", "60000", resting_bid="0.600"),
    TifCase("IOC remainder expires", "IOC", (("0.4", "60000"),), "1", "60000", "EXPIRED",
            "0.4", "60000"),
    TifCase("IOC fully filled", "IOC", (("1", "60000"),), "1", "60000", "FILLED", "1", "60000"),
    TifCase("IOC with nothing in reach expires", "IOC", (("1", "60100"),), "1", "60000",
            "EXPIRED"),
    TifCase("FOK fillable across two levels", "FOK", (("0.4", "60000"), ("0.6", "60100")), "1",
            "60100", "FILLED", "1", "60060"),
    TifCase("FOK short of quantity is rejected", "FOK", (("0.4", "60000"),), "1", "60000",
            code=-5021),
    TifCase("FOK with liquidity beyond its limit is rejected", "FOK",
            (("0.4", "60000"), ("0.6", "60200")), "1", "60100", code=-5021),
    TifCase("GTX that would cross is rejected", "GTX", (("1", "60000"),), "1", "60000",
            code=-5022),
    TifCase("GTX below the ask rests as maker", "GTX", (("1", "60000"),), "1", "59999.9", "NEW",
            resting_bid="1.000"),
]


@pytest.mark.parametrize("case", TIF_CASES, ids=lambda c: c.name)
def test_time_in_force(ex: Exchange, case: TifCase) -> None:
    for qty, price in case.asks:
        rest(ex, "bob", "SELL", qty, price)
    if case.code is not None:
        err = raises(case.code, ex, ex.place_order, "alice", BTC, "BUY", "LIMIT", case.qty,
                     case.price, case.tif)
        assert "FOK" in err.msg or "Post Only" in err.msg
        assert ex.open_orders("alice") == []
        settled(ex)
        return
    order = ex.place_order("alice", BTC, "BUY", "LIMIT", case.qty, case.price, case.tif)
    assert order.status == case.status
    assert order.time_in_force == case.tif
    assert order.executed_qty == Decimal(case.executed)
    assert order.avg_price == Decimal(case.avg_price)
    assert ex.position("alice", BTC).size == Decimal(case.executed)
    bids, _ = book(ex)
    if case.resting_bid is None:
        assert bids == []
        assert ex.open_orders("alice") == []
    else:
        assert bids == [(str(Decimal(case.price).quantize(Decimal("0.1"))), case.resting_bid)]
        assert [o.order_id for o in ex.open_orders("alice")] == [order.order_id]
    settled(ex)


# -- market orders -----------------------------------------------------------------------------


def test_market_order_fills_at_maker_prices(ex: Exchange) -> None:
    rest(ex, "bob", "SELL", "0.1", "60000")
    rest(ex, "carol", "SELL", "0.1", "60500")
    order = ex.place_order("alice", BTC, "BUY", "MARKET", "0.15")
    assert (order.status, order.executed_qty) == ("FILLED", Decimal("0.15"))
    trades = [e for e in ex.events() if isinstance(e, TradeExecuted)]
    assert [(t.price_ticks, t.qty_lots) for t in trades] == [(600_000, 100), (605_000, 50)]
    # (0.1 x 60,000 + 0.05 x 60,500) / 0.15, shown with 8 decimals
    assert order.avg_price == Decimal("60166.66666667")
    assert book(ex)[1] == [("60500.0", "0.050")]
    settled(ex)


@pytest.mark.parametrize(
    ("side", "levels", "band_edge"),
    [
        # buys stop at mark x 1.05 = 63,000: the ask at 64,000 is out of reach
        ("BUY", ("60000", "62000", "64000"), "63000"),
        # sells stop at mark x 0.95 = 57,000
        ("SELL", ("60000", "58000", "56000"), "57000"),
    ],
    ids=["buy", "sell"],
)
def test_market_order_stops_at_the_price_band(
    ex: Exchange, side: str, levels: tuple[str, ...], band_edge: str
) -> None:
    maker_side = "SELL" if side == "BUY" else "BUY"
    for price in levels:
        rest(ex, "bob", maker_side, "0.1", price)
    order = ex.place_order("alice", BTC, side, "MARKET", "0.3")
    assert order.status == "EXPIRED"
    assert order.executed_qty == Decimal("0.2")
    assert order.avg_price == (Decimal(levels[0]) + Decimal(levels[1])) / 2
    inside, outside, edge = Decimal(levels[1]), Decimal(levels[2]), Decimal(band_edge)
    assert (inside <= edge < outside) if side == "BUY" else (inside >= edge > outside)
    ended = [e for e in ex.events() if isinstance(e, OrderCanceled)]
    assert [(e.order_id, e.remaining_lots, e.reason) for e in ended] == [
        (order.order_id, 100, EndReason.PRICE_BAND)
    ]
    bids, asks = book(ex)
    assert (asks if side == "BUY" else bids) == [(f"{levels[2]}.0", "0.100")]
    assert ex.open_orders("alice") == []
    settled(ex)


def test_market_order_on_an_empty_book_expires(ex: Exchange) -> None:
    order = ex.place_order("alice", BTC, "BUY", "MARKET", "0.1")
    assert (order.status, order.executed_qty) == ("EXPIRED", Decimal(0))
    assert ex.position("alice", BTC).size == 0
    assert ex.account("alice").open_order_margin == 0
    settled(ex)


# -- self-trade prevention ---------------------------------------------------------------------


def test_self_trade_prevention_expires_the_taker(ex: Exchange) -> None:
    rest(ex, "bob", "SELL", "0.5", "60000")
    own = rest(ex, "alice", "SELL", "0.5", "60100")
    rest(ex, "carol", "SELL", "0.5", "60100")  # behind alice's own order at the same price
    order = ex.place_order("alice", BTC, "BUY", "LIMIT", "1", "60200")
    # the fill ahead of the own order happens; at the own order the taker expires (EXPIRE_TAKER)
    assert (order.status, order.executed_qty) == ("EXPIRED", Decimal("0.5"))
    assert order.avg_price == Decimal("60000")
    ended = [e for e in ex.events() if isinstance(e, OrderCanceled)]
    assert [(e.order_id, e.reason) for e in ended] == [(order.order_id, EndReason.SELF_TRADE)]
    assert [o.order_id for o in ex.open_orders("alice")] == [own.order_id]
    assert book(ex) == ([], [("60100.0", "1.000")])
    assert ex.position("alice", BTC).size == Decimal("0.5")
    settled(ex)


# -- reduce-only -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReduceOnlyCase:
    name: str
    position: str  # alice's signed position before the order ("0": none)
    side: str
    qty: str
    code: int | None = None
    executed: str = "0"
    position_after: str | None = None  # None: unchanged


REDUCE_ONLY_CASES = [
    ReduceOnlyCase("no position: rejected", "0", "SELL", "0.1", code=-2022),
    ReduceOnlyCase("long, reduce-only buy would increase: rejected", "0.5", "BUY", "0.1",
                   code=-2022),
    ReduceOnlyCase("short, reduce-only sell would increase: rejected", "-0.5", "SELL", "0.1",
                   code=-2022),
    ReduceOnlyCase("long 0.5, sell 0.2 reduces", "0.5", "SELL", "0.2", executed="0.2",
                   position_after="0.3"),
    ReduceOnlyCase("long 0.5, sell 1 is clamped to the position", "0.5", "SELL", "1",
                   executed="0.5", position_after="0"),
    ReduceOnlyCase("short 0.5, buy 2 is clamped to the position", "-0.5", "BUY", "2",
                   executed="0.5", position_after="0"),
]


@pytest.mark.parametrize("case", REDUCE_ONLY_CASES, ids=lambda c: c.name)
def test_reduce_only_market_orders(ex: Exchange, case: ReduceOnlyCase) -> None:
    size = Decimal(case.position)
    if size:
        take(ex, "alice", "BUY" if size > 0 else "SELL", str(abs(size)), "60000")
    # plenty of liquidity on both sides, more than the order asks for
    rest(ex, "carol", "BUY", "5", "59900")
    rest(ex, "carol", "SELL", "5", "60100")
    if case.code is not None:
        err = raises(case.code, ex, ex.place_order, "alice", BTC, case.side, "MARKET", case.qty,
                     reduce_only=True)
        assert "ReduceOnly" in err.msg
    else:
        order = ex.place_order("alice", BTC, case.side, "MARKET", case.qty, reduce_only=True)
        assert order.reduce_only
        assert (order.status, order.executed_qty) == ("FILLED", Decimal(case.executed))
    expected = case.position if case.position_after is None else case.position_after
    assert ex.position("alice", BTC).size == Decimal(expected)
    settled(ex)


def test_resting_reduce_only_orders_are_trimmed_then_canceled(ex: Exchange) -> None:
    take(ex, "alice", "BUY", "1", "60000")
    ro = ex.place_order("alice", BTC, "SELL", "LIMIT", "1", "61000", reduce_only=True)
    assert ro.status == "NEW"
    # The position shrinks by 0.6 through an ordinary order: the reduce-only order may now
    # close at most 0.4, so it is trimmed in place.
    rest(ex, "carol", "BUY", "0.6", "60000")
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.6", "60000")
    assert ex.position("alice", BTC).size == Decimal("0.4")
    assert book(ex)[1] == [("61000.0", "0.400")]
    assert [o.order_id for o in ex.open_orders("alice")] == [ro.order_id]
    # The position closes: nothing is left to reduce, the order is canceled.
    rest(ex, "carol", "BUY", "0.4", "60000")
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.4", "60000")
    assert ex.position("alice", BTC).size == 0
    assert ex.open_orders("alice") == []
    assert book(ex)[1] == []
    ended = [e for e in ex.events() if isinstance(e, OrderCanceled) and e.order_id == ro.order_id]
    assert [(e.remaining_lots, e.reason) for e in ended] == [(400, EndReason.REDUCE_ONLY)]
    settled(ex)


def test_resting_reduce_only_order_is_canceled_when_the_position_flips(ex: Exchange) -> None:
    take(ex, "alice", "BUY", "1", "60000")
    ro = ex.place_order("alice", BTC, "SELL", "LIMIT", "1", "61000", reduce_only=True)
    take(ex, "alice", "SELL", "2", "60000", maker="carol")  # long 1 -> short 1
    assert ex.position("alice", BTC).size == Decimal("-1")
    # a sell would now increase the short: the reduce-only order goes
    assert ex.open_orders("alice") == []
    ended = [e for e in ex.events() if isinstance(e, OrderCanceled) and e.order_id == ro.order_id]
    assert [e.reason for e in ended] == [EndReason.REDUCE_ONLY]
    settled(ex)


def test_reduce_only_order_is_exempt_from_min_notional(ex: Exchange) -> None:
    # ETH at 3,000: 0.001 ETH is 3 USDT, below the 5 USDT minimum (-4164) ...
    err = raises(-4164, ex, ex.place_order, "alice", ETH, "BUY", "LIMIT", "0.001", "3000")
    assert "no smaller than 5" in err.msg
    # ... but a reduce-only order of that size is accepted (Binance: "unless reduce only").
    take(ex, "alice", "BUY", "0.01", "3000", symbol=ETH)
    order = ex.place_order("alice", ETH, "SELL", "LIMIT", "0.001", "3000", reduce_only=True)
    assert order.status == "NEW"
    settled(ex)


def test_min_notional_boundary(ex: Exchange) -> None:
    # 0.002 x 2,500 = 5 USDT exactly: allowed; 0.002 x 2,499.99 is not.
    assert rest(ex, "alice", "BUY", "0.002", "2500", ETH).status == "NEW"
    raises(-4164, ex, ex.place_order, "alice", ETH, "BUY", "LIMIT", "0.002", "2499.99")
    # a market order is valued at the mark: 0.001 x 3,000 = 3 USDT
    raises(-4164, ex, ex.place_order, "alice", ETH, "BUY", "MARKET", "0.001")
    settled(ex)


def test_order_margin_is_released_on_partial_fill_and_cancel(ex: Exchange) -> None:
    rest(ex, "bob", "SELL", "0.4", "60000")
    order = ex.place_order("alice", BTC, "BUY", "LIMIT", "1", "60000")
    assert order.status == "PARTIALLY_FILLED"
    acct = ex.account("alice")
    # the resting 0.6 keeps its share of the reservation (0.6 x 60,000 / 20), the filled 0.4
    # is now position margin (0.4 x 60,000 / 20)
    assert (acct.open_order_margin, acct.initial_margin) == (Decimal("1800"), Decimal("1200"))
    canceled = ex.cancel_order("alice", BTC, order.order_id)
    assert (canceled.status, canceled.executed_qty) == ("CANCELED", Decimal("0.4"))
    assert ex.account("alice").open_order_margin == 0
    raises(-2011, ex, ex.cancel_order, "alice", BTC, order.order_id)  # already done
    settled(ex)


def test_cancel_someone_elses_order_is_unknown(ex: Exchange) -> None:
    order = rest(ex, "bob", "SELL", "0.4", "60000")
    err = raises(-2011, ex, ex.cancel_order, "alice", BTC, order.order_id)
    assert "Unknown order" in err.msg
    raises(-2011, ex, ex.cancel_order, "bob", ETH, order.order_id)  # wrong symbol
    assert ex.cancel_order("bob", BTC, order.order_id).status == "CANCELED"
    settled(ex)


# -- client order ids and limits ---------------------------------------------------------------


def test_client_order_id_is_unique_among_open_orders(ex: Exchange) -> None:
    first = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59000", client_order_id="c-1")
    assert first.client_order_id == "c-1"
    err = raises(-4116, ex, ex.place_order, "alice", BTC, "BUY", "LIMIT", "0.1", "59000",
                 client_order_id="c-1")
    assert "duplicated" in err.msg
    # another account may use the same id
    assert rest(ex, "bob", "BUY", "0.1", "59000").status == "NEW"
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59000", client_order_id="c-1")
    # canceled (by client id): the id is free again
    canceled = ex.cancel_order("alice", BTC, client_order_id="c-1")
    assert (canceled.order_id, canceled.status) == (first.order_id, "CANCELED")
    again = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59000", client_order_id="c-1")
    assert again.order_id != first.order_id
    # filled: the id is free again
    rest(ex, "carol", "SELL", "0.1", "60000")
    filled = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "60000", client_order_id="c-2")
    assert filled.status == "FILLED"
    reused = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59000", client_order_id="c-2")
    assert reused.status == "NEW"
    settled(ex)


def test_max_open_orders_per_account() -> None:
    market = Market(symbol=BTC, tick_size="0.1", step_size="0.001",
                    brackets=default_brackets()[BTC], max_open_orders=3)
    ex = Exchange(markets=[market], mark_price="index")
    ex.set_index_price(BTC, "60000")
    ex.deposit("alice", "100000")
    ex.deposit("bob", "100000")
    orders = [rest(ex, "alice", "BUY", "0.1", price) for price in ("59000", "59100", "59200")]
    err = raises(-2025, ex, ex.place_order, "alice", BTC, "SELL", "LIMIT", "0.1", "61000")
    assert "max open order" in err.msg
    assert rest(ex, "bob", "BUY", "0.1", "59000").status == "NEW"  # the limit is per account
    ex.cancel_order("alice", BTC, orders[0].order_id)
    assert rest(ex, "alice", "SELL", "0.1", "61000").status == "NEW"
    settled(ex)


@pytest.mark.parametrize(
    ("order_type", "qty", "price"),
    [("LIMIT", "1000.001", "60000"), ("MARKET", "120.001", None)],
    ids=["limit above LOT_SIZE 1000", "market above MARKET_LOT_SIZE 120"],
)
def test_max_order_quantity(ex: Exchange, order_type: str, qty: str, price: str | None) -> None:
    err = raises(-4005, ex, ex.place_order, "bob", BTC, "BUY", order_type, qty, price)
    assert "max quantity" in err.msg
    settled(ex)


@pytest.mark.parametrize(
    ("side", "bad", "good", "code", "edge"),
    [
        ("BUY", "63000.1", "63000", -4016, "higher than 63000.0"),  # mark x 1.05
        ("SELL", "56999.9", "57000", -4024, "lower than 57000.0"),  # mark x 0.95
    ],
    ids=["buy above band", "sell below band"],
)
def test_limit_price_band(
    ex: Exchange, side: str, bad: str, good: str, code: int, edge: str
) -> None:
    err = raises(code, ex, ex.place_order, "alice", BTC, side, "LIMIT", "0.1", bad)
    assert edge in err.msg
    assert rest(ex, "alice", side, "0.1", good).status == "NEW"
    settled(ex)


# -- fees, PnL, entry price ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "price"),
    [("1", "60000"), ("0.123", "60000.1"), ("0.001", "59999.9")],
    ids=["round", "uneven", "one lot"],
)
def test_fees_maker_and_taker_exact_in_the_wallet(ex: Exchange, qty: str, price: str) -> None:
    take(ex, "alice", "BUY", qty, price)
    notional = Decimal(qty) * Decimal(price)
    taker_fee, maker_fee = fee(notional, TAKER_FEE), fee(notional, MAKER_FEE)
    assert ex.account("alice").wallet_balance == Decimal("100000") - taker_fee
    assert ex.account("bob").wallet_balance == Decimal("1000000") - maker_fee
    assert ex.fees_collected() == taker_fee + maker_fee
    trade = next(e for e in ex.events() if isinstance(e, TradeExecuted))
    assert (trade.taker_fee_atoms, trade.maker_fee_atoms) == (
        int(taker_fee / ATOM),
        int(maker_fee / ATOM),
    )
    settled(ex)


def test_fee_on_an_uneven_notional_rounds_up() -> None:
    # 0.123 x 60,000.1 = 7,380.0123; taker 3.69000615 -> 3.690007, maker 1.47600246 -> 1.476003
    assert fee(Decimal("7380.0123"), TAKER_FEE) == Decimal("3.690007")
    assert fee(Decimal("7380.0123"), MAKER_FEE) == Decimal("1.476003")


@dataclass(frozen=True)
class PnlCase:
    name: str
    open_side: str
    open_qty: str
    close_side: str
    close_qty: str
    close_price: str
    realized: str  # side x closed qty x (close price - 60,000)
    position_after: str
    entry_after: str


PNL_CASES = [
    PnlCase("reduce a long in profit", "BUY", "1", "SELL", "0.4", "61000", "400", "0.6", "60000"),
    PnlCase("reduce a long at a loss", "BUY", "1", "SELL", "0.5", "59000", "-500", "0.5",
            "60000"),
    PnlCase("close a short in profit", "SELL", "1", "BUY", "1", "59000", "1000", "0", "0"),
    PnlCase("flip long to short in one order", "BUY", "1", "SELL", "1.5", "61000", "1000",
            "-0.5", "61000"),
    PnlCase("flip short to long in one order", "SELL", "2", "BUY", "3", "61000", "-2000", "1",
            "61000"),
]


@pytest.mark.parametrize("case", PNL_CASES, ids=lambda c: c.name)
def test_realized_pnl_on_reduce_and_flip(ex: Exchange, case: PnlCase) -> None:
    take(ex, "alice", case.open_side, case.open_qty, "60000")
    ex.set_index_price(BTC, case.close_price)
    wallet_before = ex.account("alice").wallet_balance
    take(ex, "alice", case.close_side, case.close_qty, case.close_price, maker="carol")
    trade = [e for e in ex.events() if isinstance(e, TradeExecuted)][-1]
    assert Decimal(trade.taker_realized_pnl_atoms) * ATOM == Decimal(case.realized)
    close_fee = fee(Decimal(case.close_qty) * Decimal(case.close_price), TAKER_FEE)
    wallet_after = ex.account("alice").wallet_balance
    assert wallet_after == wallet_before + Decimal(case.realized) - close_fee
    pos = ex.position("alice", BTC)
    assert pos.size == Decimal(case.position_after)
    assert pos.entry_price == Decimal(case.entry_after)
    assert pos.unrealized_pnl == pos.size * (Decimal(case.close_price) - pos.entry_price)
    settled(ex)


@pytest.mark.parametrize(
    ("fills", "entry"),
    [
        ((("1", "60000"), ("0.5", "60300")), "60100"),  # (60,000 + 30,150) / 1.5
        ((("1", "60000"), ("1", "60000.1")), "60000.05"),
        ((("0.001", "60000"), ("0.002", "60000.1")), "60000.06666667"),  # shown with 8 decimals
    ],
    ids=["1 + 0.5", "half a tick", "repeating"],
)
def test_entry_price_after_adding(
    ex: Exchange, fills: tuple[tuple[str, str], ...], entry: str
) -> None:
    for qty, price in fills:
        take(ex, "alice", "BUY", qty, price)
    assert ex.position("alice", BTC).entry_price == Decimal(entry)
    settled(ex)


# -- isolated margin -------------------------------------------------------------------------


@dataclass(frozen=True)
class IsolatedCase:
    name: str
    close_qty: str
    close_price: str
    margin_after: str
    cross_after: str


# Open: long 1 at 60,000, 20x: IM 3,000 moves from the cross wallet (100,000 -> 97,000) and
# the taker fee 30 is paid from it, leaving 2,970. Closing pays its fee from the isolated
# margin, adds the realized PnL, and returns the closed share of what is left.
ISOLATED_CASES = [
    # 2,970 - 30 = 2,940 back: 97,000 + 2,940
    IsolatedCase("close flat", "1", "60000", "0", "99940"),
    # 2,970 - 30.5 + 1,000 = 3,939.5 back
    IsolatedCase("close in profit", "1", "61000", "0", "100939.5"),
    # 2,970 - 29.5 - 1,000 = 1,940.5 back
    IsolatedCase("close at a loss", "1", "59000", "0", "98940.5"),
    # half: 2,970 - 15 = 2,955, half of it (1,477.5) returns
    IsolatedCase("close half", "0.5", "60000", "1477.5", "98477.5"),
]


@pytest.mark.parametrize("case", ISOLATED_CASES, ids=lambda c: c.name)
def test_isolated_margin_moves_on_open_and_returns_on_close(
    ex: Exchange, case: IsolatedCase
) -> None:
    ex.set_margin_mode("alice", BTC, "ISOLATED")
    take(ex, "alice", "BUY", "1", "60000")
    open_fee = fee(Decimal("60000"), TAKER_FEE)
    assert ex.position("alice", BTC).isolated_margin == Decimal("3000") - open_fee
    assert ex.account("alice").cross_wallet_balance == Decimal("97000")
    assert ex.account("alice").wallet_balance == Decimal("100000") - open_fee
    ex.set_index_price(BTC, case.close_price)
    take(ex, "alice", "SELL", case.close_qty, case.close_price, maker="carol")
    assert ex.position("alice", BTC).isolated_margin == Decimal(case.margin_after)
    assert ex.account("alice").cross_wallet_balance == Decimal(case.cross_after)
    settled(ex)


def test_add_isolated_margin_and_remove_down_to_the_initial_margin(ex: Exchange) -> None:
    ex.set_margin_mode("alice", BTC, "ISOLATED")
    take(ex, "alice", "BUY", "1", "60000")
    # margin 2,970 (IM 3,000 less the opening fee) is already below the IM: nothing comes out
    err = raises(-4051, ex, ex.add_isolated_margin, "alice", BTC, "-0.000001")
    assert "Isolated balance insufficient" in err.msg
    assert ex.add_isolated_margin("alice", BTC, "1000") == Decimal("3970")
    assert ex.account("alice").cross_wallet_balance == Decimal("96000")
    assert ex.add_isolated_margin("alice", BTC, "-970") == Decimal("3000")  # exactly the IM
    raises(-4051, ex, ex.add_isolated_margin, "alice", BTC, "-0.000001")
    # An open loss counts against the margin: at 59,000 the IM is 2,950 and uPnL -1,000.
    ex.set_index_price(BTC, "59000")
    assert ex.add_isolated_margin("alice", BTC, "1000") == Decimal("4000")
    raises(-4051, ex, ex.add_isolated_margin, "alice", BTC, "-50.000001")
    assert ex.add_isolated_margin("alice", BTC, "-50") == Decimal("3950")  # 3,950 - 1,000 = IM
    # cross wallet: 100,000 - 3,000 - 1,000 + 970 - 1,000 + 50
    assert ex.account("alice").cross_wallet_balance == Decimal("96020")
    # adding more than the cross wallet can spare
    raises(-4050, ex, ex.add_isolated_margin, "alice", BTC, "96020.000001")
    # a cross position has no isolated margin to adjust
    raises(-4054, ex, ex.add_isolated_margin, "bob", BTC, "10")
    settled(ex)


# -- margin mode and leverage ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "mode", "code"),
    [
        ("nothing", "CROSSED", -4046),  # cross is the default
        ("isolated", "ISOLATED", -4046),
        ("open order", "ISOLATED", -4047),
        ("position", "ISOLATED", -4048),
        ("isolated position", "CROSSED", -4048),
    ],
    ids=["cross to cross", "isolated to isolated", "open order", "position",
         "isolated position"],
)
def test_margin_mode_change_refused(ex: Exchange, setup: str, mode: str, code: int) -> None:
    if setup.startswith("isolated"):
        ex.set_margin_mode("alice", BTC, "ISOLATED")
    if setup == "open order":
        rest(ex, "alice", "BUY", "0.1", "59000")
    if setup.endswith("position"):
        take(ex, "alice", "BUY", "0.1", "60000")
    raises(code, ex, ex.set_margin_mode, "alice", BTC, mode)
    settled(ex)


def test_margin_mode_changes_when_flat(ex: Exchange) -> None:
    assert ex.set_margin_mode("alice", BTC, "ISOLATED") == "ISOLATED"
    take(ex, "alice", "BUY", "0.1", "60000")
    take(ex, "alice", "SELL", "0.1", "60000", maker="carol")
    assert ex.set_margin_mode("alice", BTC, "CROSSED") == "CROSSED"
    assert ex.position("alice", BTC).margin_mode == "CROSSED"
    # the mode is per symbol
    assert ex.position("alice", ETH).margin_mode == "CROSSED"
    settled(ex)


@pytest.mark.parametrize("leverage", [0, 126, -1])
def test_set_leverage_out_of_range(ex: Exchange, leverage: int) -> None:
    err = raises(-4028, ex, ex.set_leverage, "alice", BTC, leverage)
    assert f"Leverage {leverage} is not valid" in err.msg
    settled(ex)


def test_set_leverage_refused_when_the_position_exceeds_the_bracket_cap(ex: Exchange) -> None:
    # 2024-10 brackets (MECHANICS.md §1.1 (a)): 125x up to 50,000 notional, 100x to 600,000.
    take(ex, "alice", "BUY", "1", "60000")  # notional 60,000 at the mark
    err = raises(-2027, ex, ex.set_leverage, "alice", BTC, 125)
    assert "maximum allowable position" in err.msg
    assert ex.set_leverage("alice", BTC, 100) == 100
    # Open orders count as exposure too, valued at the mark: bids for 0.8 BTC (48,000) fit
    # under 125x; one more 0.1 makes 54,000, which only 100x allows.
    rest(ex, "carol", "BUY", "0.8", "59000")
    assert ex.set_leverage("carol", BTC, 125) == 125
    assert ex.set_leverage("carol", BTC, 20) == 20
    rest(ex, "carol", "BUY", "0.1", "59000")
    raises(-2027, ex, ex.set_leverage, "carol", BTC, 125)
    settled(ex)


def test_order_over_the_bracket_cap_at_the_current_leverage(ex: Exchange) -> None:
    ex.set_leverage("bob", BTC, 125)  # 125x: notional at most 50,000
    err = raises(-2027, ex, ex.place_order, "bob", BTC, "BUY", "LIMIT", "0.834", "60000")
    assert "maximum allowable position" in err.msg
    assert rest(ex, "bob", "BUY", "0.833", "60000").status == "NEW"  # 49,980
    settled(ex)


# -- initial margin and the open loss ----------------------------------------------------------


def test_initial_margin_includes_the_open_loss_of_a_buy_above_the_mark(ex: Exchange) -> None:
    ex.deposit("dave", "4000")  # leverage 20 (the default), mark 60,000
    # Buy 1 at 61,000: IM 3,050 fits in 4,000, but the open loss 1 x (61,000 - 60,000) = 1,000
    # is charged too (MECHANICS.md §1.3, Binance order cost): 4,050 > 4,000.
    err = raises(-2019, ex, ex.place_order, "dave", BTC, "BUY", "LIMIT", "1", "61000")
    assert "Margin is insufficient" in err.msg
    # A buy below the mark costs only its IM (59,000 / 20 = 2,950).
    below = rest(ex, "dave", "BUY", "1", "59000")
    assert ex.account("dave").open_order_margin == Decimal("2950")
    ex.cancel_order("dave", BTC, below.order_id)
    # With the missing 50 deposited, the order costs exactly what is available.
    ex.deposit("dave", "50")
    rest(ex, "dave", "BUY", "1", "61000")
    acct = ex.account("dave")
    assert (acct.open_order_margin, acct.available_balance) == (Decimal("4050"), Decimal(0))
    settled(ex)


def test_open_loss_of_a_sell_below_the_mark(ex: Exchange) -> None:
    ex.deposit("dave", "3949.999999")
    # Sell 1 at 59,000: IM 2,950 + open loss 1,000 = 3,950
    raises(-2019, ex, ex.place_order, "dave", BTC, "SELL", "LIMIT", "1", "59000")
    ex.deposit("dave", "0.000001")
    rest(ex, "dave", "SELL", "1", "59000")
    assert ex.account("dave").available_balance == 0
    settled(ex)


def test_margin_check_counts_open_orders_and_positions(ex: Exchange) -> None:
    ex.deposit("dave", "6000")
    rest(ex, "dave", "BUY", "1", "59000")  # 2,950 reserved
    take(ex, "dave", "BUY", "0.05", "60000")  # IM 150, fee 1.5
    # available: 6,000 - 1.5 - 150 - 2,950 = 2,898.5; a third order needs 3,000
    assert ex.account("dave").available_balance == Decimal("2898.5")
    raises(-2019, ex, ex.place_order, "dave", BTC, "BUY", "LIMIT", "1", "60000")
    settled(ex)


# -- account figures and withdrawal ----------------------------------------------------------


def test_account_figures_as_binance_defines_them(ex: Exchange) -> None:
    take(ex, "alice", "BUY", "1", "60000")  # cross, 20x; taker fee 30
    rest(ex, "alice", "BUY", "0.5", "59000")  # order margin 29,500 / 20 = 1,475
    ex.set_margin_mode("alice", ETH, "ISOLATED")
    take(ex, "alice", "SELL", "10", "3000", symbol=ETH)  # isolated IM 1,500, fee 15 from it
    ex.set_index_price(BTC, "61000")
    ex.set_index_price(ETH, "3030")
    acct = ex.account("alice")
    cross_wallet = Decimal("100000") - 30 - 1500
    isolated_margin = Decimal("1500") - 15
    btc_upnl, eth_upnl = Decimal("1000"), Decimal("-300")  # 1 x 1,000; -10 x 30
    btc_im, eth_im = Decimal("61000") / 20, Decimal("30300") / 20
    # MM = notional x MMR - cum (2024-10 tables, MECHANICS.md §1.1 (a)): BTC 61,000 is in
    # bracket 2 (0.5 %, cum 50), ETH 30,300 in bracket 1 (0.4 %, cum 0).
    btc_mm = Decimal("61000") * Decimal("0.005") - 50
    eth_mm = Decimal("30300") * Decimal("0.004")
    assert acct.cross_wallet_balance == cross_wallet
    assert acct.wallet_balance == cross_wallet + isolated_margin  # totalWalletBalance
    assert acct.unrealized_pnl == btc_upnl + eth_upnl  # totalUnrealizedProfit
    assert acct.margin_balance == acct.wallet_balance + acct.unrealized_pnl
    assert acct.maintenance_margin == btc_mm + eth_mm  # totalMaintMargin
    assert acct.initial_margin == btc_im + eth_im  # positions, at the mark
    assert acct.open_order_margin == Decimal("1475")
    # available = cross wallet + cross uPnL - cross position IM - open order IM; the isolated
    # position's margin and uPnL stay in the isolated bucket.
    available = cross_wallet + btc_upnl - btc_im - Decimal("1475")
    assert acct.available_balance == available
    # Unrealized profit is margin, not money that can leave (Binance maxWithdrawAmount).
    assert acct.max_withdraw_amount == available - btc_upnl
    pos = ex.position("alice", BTC)
    assert (pos.unrealized_pnl, pos.maintenance_margin, pos.initial_margin) == (
        btc_upnl,
        btc_mm,
        btc_im,
    )
    settled(ex)


def test_withdraw_over_the_available_balance_is_refused(ex: Exchange) -> None:
    take(ex, "alice", "BUY", "1", "60000")
    ex.set_index_price(BTC, "61000")  # uPnL +1,000
    acct = ex.account("alice")
    # available 99,970 + 1,000 - 3,050 = 97,920; withdrawable excludes the profit: 96,920
    assert acct.available_balance == Decimal("97920")
    assert acct.max_withdraw_amount == Decimal("96920")
    err = raises(-2018, ex, ex.withdraw, "alice", "96920.000001")  # below available, over max
    assert "Balance is insufficient" in err.msg
    assert ex.withdraw("alice", "96920") == Decimal("3050")
    raises(-2018, ex, ex.withdraw, "alice", "0.000001")
    # at 59,000 the loss (-1,000) leaves less than the IM (2,950): nothing is available
    ex.set_index_price(BTC, "59000")
    assert ex.account("alice").available_balance == Decimal("3050") - 1000 - 2950
    raises(-2018, ex, ex.withdraw, "alice", "0.000001")
    settled(ex)


def test_withdraw_without_positions(ex: Exchange) -> None:
    raises(-2018, ex, ex.withdraw, "alice", "100000.000001")
    raises(-2018, ex, ex.withdraw, "nobody", "1")
    assert ex.withdraw("alice", "100000") == 0
    settled(ex)
