"""`perpex demo`: a scripted session that shows the core at work, printed with rich tables.

Two traders open 20x positions against each other on BTCUSDT, a market maker quotes around
the index, the index moves, and after each move the positions show entry, mark, PnL,
liquidation and bankruptcy prices. (The simulator will replace this with the real main job.)
"""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.table import Table

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


def run_demo(console: Console | None = None) -> Exchange:
    # Tables are 120 columns wide; outside a terminal rich would assume 80 and cut them.
    console = console or Console(width=max(Console().width, 120))
    ex = Exchange()
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
    for i in range(1, 6):
        ex.place_order("maker", SYMBOL, side="BUY", quantity="0.2", price=str(60000 - 10 * i))
        ex.place_order("maker", SYMBOL, side="SELL", quantity="0.2", price=str(60000 + 10 * i))
    book = ex.order_book(SYMBOL, 5)
    depth = Table(title="order book (top 5)", title_justify="left")
    for column in ("bid qty", "bid", "ask", "ask qty"):
        depth.add_column(column, justify="right")
    for (bp, bq), (ap, aq) in zip(book["bids"], book["asks"], strict=False):
        depth.add_row(str(bq), _fmt(bp, 1), _fmt(ap, 1), str(aq))
    console.print(depth)

    for index in ("61500", "58800", "57500"):
        ex.set_index_price(SYMBOL, index)
        console.print(_positions_table(ex, f"index moves to {Decimal(index):,}"))

    ex.check_invariants()
    deposits, balances = ex.engine.conservation_atoms()
    assert deposits == balances
    console.print(
        f"Fees collected: {ex.fees_collected():,.6f} USDT. Conservation holds: deposits = "
        f"margin balances + fees = {Decimal(deposits) / 10**6:,.2f} USDT. "
        f"State hash {ex.state_hash()[:16]}…"
    )
    console.print(
        "[dim]When the mark reaches a liquidation price, the engine closes the position through "
        "the book at no worse than its bankruptcy price; the insurance fund and ADL take what "
        "the book cannot.[/dim]"
    )
    return ex
