"""`perpex demo`: a scripted session that shows the core at work, printed with rich tables.

Two traders open 20x positions against each other on BTCUSDT, a market maker quotes around
the index, the index moves, and after each move the positions show entry, mark, PnL,
liquidation and bankruptcy prices; funding settles at 08:00 UTC, and a last move liquidates
one of them through the book. (The simulator will replace this with the real main job.)
"""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.table import Table

from perpex.core.messages import (
    Deposited,
    FundReason,
    InsuranceFundChanged,
    LiquidationTriggered,
    TradeExecuted,
    Withdrawn,
)
from perpex.exchange import Exchange

SYMBOL = "BTCUSDT"
TRADERS = ("alice", "bob")


def _fmt(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return "--"
    return f"{value:,.{places}f}"


def _positions_table(ex: Exchange, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "trader",
        "size BTC",
        "entry",
        "mark",
        "uPnL",
        "liq. price",
        "bankr. price",
        "margin ratio",
        "available",
    ):
        table.add_column(column, justify="right" if column != "trader" else "left")
    for name in TRADERS:
        p = ex.position(name, SYMBOL)
        a = ex.account(name)
        ratio = f"{a.maintenance_margin / a.margin_balance:.2%}" if a.margin_balance > 0 else "inf"
        table.add_row(
            name,
            f"{p.size:+}",
            _fmt(p.entry_price),
            _fmt(p.mark_price),
            _fmt(p.unrealized_pnl),
            _fmt(p.liquidation_price),
            _fmt(p.bankruptcy_price),
            ratio,
            _fmt(a.available_balance),
        )
    return table


def _money_in(ex: Exchange) -> Decimal:
    """What came in from outside, read from the event log: deposits less withdrawals, and
    the insurance fund's seed."""
    atoms = 0
    for e in ex.events():
        if isinstance(e, Deposited):
            atoms += e.amount_atoms
        elif isinstance(e, Withdrawn):
            atoms -= e.amount_atoms
        elif isinstance(e, InsuranceFundChanged) and e.reason is FundReason.DEPOSIT:
            atoms += e.delta_atoms
    return Decimal(atoms).scaleb(-6)


def _requote(ex: Exchange, index: str) -> None:
    """The market maker pulls its ladder and quotes 5 levels each side around the index."""
    for order in ex.open_orders("maker", SYMBOL):
        ex.cancel_order("maker", SYMBOL, order.order_id)
    mid = Decimal(index)
    for i in range(1, 6):
        ex.place_order("maker", SYMBOL, side="BUY", quantity="0.2", price=str(mid - 10 * i))
        ex.place_order("maker", SYMBOL, side="SELL", quantity="0.2", price=str(mid + 10 * i))


def run_demo(console: Console | None = None) -> Exchange:
    # Tables are 120 columns wide; outside a terminal rich would assume 80 and cut them.
    console = console or Console(width=max(Console().width, 120))
    ex = Exchange(insurance_fund="1000")
    console.rule("[bold]perpex demo: two 20x traders on BTCUSDT")
    ex.set_index_price(SYMBOL, "60000")
    for name, cash in (("alice", "2000"), ("bob", "2000"), ("maker", "1000000")):
        ex.deposit(name, cash)
    for name in TRADERS:
        ex.set_leverage(name, SYMBOL, 20)
    console.print("Index 60,000. alice and bob deposit 2,000 USDT each and choose 20x leverage.")

    # bob rests a sell, alice lifts it: a 0.5 BTC trade between them at 60,000.
    ex.place_order("bob", SYMBOL, side="SELL", type="LIMIT", quantity="0.5", price="60000")
    order = ex.place_order("alice", SYMBOL, side="BUY", type="MARKET", quantity="0.5")
    console.print(
        f"alice buys {order.executed_qty} BTC at {order.avg_price:,.2f} from bob's resting "
        "order (notional 30,000 USDT, initial margin 1,500 at 20x; taker fee 0.05 %, maker 0.02 %)."
    )
    console.print(_positions_table(ex, "after the trade (mark = index = 60,000)"))

    # a market maker quotes a ladder so that the book has depth around the index
    _requote(ex, "60000")
    book = ex.order_book(SYMBOL, 5)
    depth = Table(title="order book (top 5)", title_justify="left")
    for column in ("bid qty", "bid", "ask", "ask qty"):
        depth.add_column(column, justify="right")
    for (bp, bq), (ap, aq) in zip(book["bids"], book["asks"], strict=False):
        depth.add_row(str(bq), _fmt(bp, 1), _fmt(ap, 1), str(aq))
    console.print(depth)

    console.print(
        "The mark follows Binance: the median of the index carried by the predicted funding, "
        "the index plus the 5-minute basis of the book, and the last trade. The maker requotes "
        "around each new index; five minutes later the basis has caught up."
    )
    for index in ("61500", "58800", "57500"):
        ex.set_index_price(SYMBOL, index)
        _requote(ex, index)
        ex.advance_time(300)
        console.print(_positions_table(ex, f"index moves to {Decimal(index):,}, 5 minutes on"))

    ex.advance_time(8 * 3600 - 900)  # to 08:00 UTC: the first funding time
    rate = ex.funding_rate(SYMBOL)
    paid = {name: sum(p.income for p in ex.funding_history(name)) for name in TRADERS}
    console.print(
        f"08:00 UTC funding at {rate.last_funding_rate:.4%} (the premium of our own book, here "
        f"none, plus the 0.01 % interest): alice {paid['alice']:+,.6f}, bob "
        f"{paid['bob']:+,.6f} USDT."
    )

    seen = len(ex.events())
    ex.set_index_price(SYMBOL, "56000")
    console.print(_positions_table(ex, "index gaps to 56,000 (the maker has not requoted yet)"))
    tick = ex.events()[seen:]
    for e in tick:
        if isinstance(e, LiquidationTriggered):
            console.print(
                f"[bold red]{e.account} liquidated[/bold red]: margin balance "
                f"{Decimal(e.margin_balance_atoms) / 10**6:,.2f} <= maintenance margin "
                f"{Decimal(e.maint_margin_atoms) / 10**6:,.2f} USDT."
            )
    fills = [e for e in tick if isinstance(e, TradeExecuted) and e.liquidation]
    for f in fills:
        console.print(
            f"  liquidation fill: {ex.from_lots(SYMBOL, f.qty_lots)} BTC at "
            f"{_fmt(ex.from_ticks(SYMBOL, f.price_ticks))} against the maker's bid"
        )
    for e in tick:
        if isinstance(e, InsuranceFundChanged):
            console.print(
                f"  insurance fund {Decimal(e.delta_atoms) / 10**6:+,.6f} ({e.reason.name.lower()}"
                f") -> {Decimal(e.balance_atoms) / 10**6:,.6f} USDT"
            )

    ex.check_invariants()  # conservation among them: the ledger sums to zero
    deposits = _money_in(ex)
    console.print(
        f"Fees collected: {ex.fees_collected():,.6f} USDT. Conservation holds: deposits = "
        f"margin balances + fees + insurance fund + funding dust = "
        f"{deposits:,.2f} USDT. "
        f"State hash {ex.state_hash()[:16]}…"
    )
    console.print(
        "[dim]A liquidation closes the position through the book at no worse than its "
        "bankruptcy price; the clearance fee and any surplus go to the insurance fund, which "
        "takes over what the book cannot fill, and ADL takes what the fund cannot.[/dim]"
    )
    return ex
