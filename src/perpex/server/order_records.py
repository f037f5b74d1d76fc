"""What the server remembers of an account's orders, conditional (algo) orders and trades.

Plain mutable records and one account's bounded book of them (`AccountBook`), kept by
`AccountHistory` (the writer thread) and rendered by `orders_wire`. Units as the engine's:
prices in ticks, sizes in lots, money in atoms, times in integer milliseconds (the engine
clock of the `ClockAdvanced` before the event).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

# Binance's order statuses (BINANCE_API.md §4.3) and algo statuses (§4.4).
OPEN_STATUSES: Final = frozenset({"NEW", "PARTIALLY_FILLED"})
OPEN_ALGO_STATUSES: Final = frozenset({"NEW"})
# Every order of these accounts' is in one-way mode (the server refuses hedge mode).
POSITION_SIDE: Final = "BOTH"
# Self-trade prevention: an order's mode unless it asked EXPIRE_MAKER or EXPIRE_BOTH (NONE is
# taken as this: the engine never lets an account trade with itself). Algo orders' too.
STP_MODE: Final = "EXPIRE_TAKER"
LIQUIDATION_TYPE: Final = "LIQUIDATION"
MAX_CLOSED_ORDERS: Final = 10_000  # per account, besides its open orders
MAX_CLOSED_ALGOS: Final = 2_000
MAX_TRADES: Final = 10_000


@dataclass(slots=True)
class OrderRecord:
    """A book order (regular, triggered by an algo order, liquidation or ADL)."""

    order_id: int
    symbol: str
    client_order_id: str
    side: int  # +1 BUY, -1 SELL
    type: str  # LIMIT, MARKET, LIQUIDATION
    orig_type: str  # the algo order's type for a triggered order, else `type`
    time_in_force: str
    price_ticks: int  # 0 for a market order
    qty_lots: int
    reduce_only: bool
    status: str
    created_ms: int
    updated_ms: int
    filled_lots: int = 0
    quote_ticks: int = 0  # Σ price x lots of the fills
    stop_price_ticks: int = 0  # the trigger of the algo order that placed it
    working_type: str = "CONTRACT_PRICE"
    close_position: bool = False
    callback_rate_ppm: int = 0
    activation_price_ticks: int = 0
    algo_id: int = 0  # the algo order that placed it (0: none)
    stp_mode: str = STP_MODE  # selfTradePreventionMode as it applied

    @property
    def remaining_lots(self) -> int:
        return self.qty_lots - self.filled_lots

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(slots=True)
class AlgoRecord:
    """A conditional order (STOP_MARKET, STOP, TAKE_PROFIT(_MARKET), TRAILING_STOP_MARKET)."""

    algo_id: int
    symbol: str
    client_algo_id: str
    side: int
    type: str
    working_type: str
    time_in_force: str
    qty_lots: int  # 0 with close_position
    trigger_price_ticks: int  # 0 for a trailing stop
    price_ticks: int  # STOP and TAKE_PROFIT only
    reduce_only: bool
    close_position: bool
    callback_rate_ppm: int
    activation_price_ticks: int  # 0: none
    status: str
    created_ms: int
    updated_ms: int
    trigger_ms: int = 0
    actual_order_id: int = 0  # the order it placed when it fired (0: none yet, or refused)
    reject_reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ALGO_STATUSES


@dataclass(slots=True, frozen=True)
class TradeRecord:
    """One fill, seen from one account."""

    trade_id: int
    order_id: int
    symbol: str
    side: int  # this account's side
    price_ticks: int
    qty_lots: int
    fee_atoms: int  # > 0 paid
    realized_pnl_atoms: int
    maker: bool
    time_ms: int


class AccountBook:
    """One account's orders, algo orders and trades, bounded (the limits above)."""

    __slots__ = (
        "algos",
        "client_algo_ids",
        "client_ids",
        "closed",
        "closed_algos",
        "notional",
        "open_algos",
        "open_orders",
        "orders",
        "trades",
    )

    def __init__(self) -> None:
        self.orders: dict[int, OrderRecord] = {}  # open and kept closed ones
        self.open_orders: dict[int, OrderRecord] = {}
        self.closed: deque[int] = deque()
        self.client_ids: dict[str, int] = {}  # the newest order with that client id
        self.algos: dict[int, AlgoRecord] = {}
        self.open_algos: dict[int, AlgoRecord] = {}
        self.closed_algos: deque[int] = deque()
        self.client_algo_ids: dict[str, int] = {}
        self.trades: deque[TradeRecord] = deque(maxlen=MAX_TRADES)
        # symbol -> [bid, ask] Σ remaining lots x price of the open orders (Binance's b / a)
        self.notional: dict[str, list[int]] = {}

    def close_order(self, o: OrderRecord) -> None:
        self.open_orders.pop(o.order_id, None)
        self.closed.append(o.order_id)
        while len(self.closed) > MAX_CLOSED_ORDERS:
            old = self.orders.pop(self.closed.popleft(), None)
            if old is not None and self.client_ids.get(old.client_order_id) == old.order_id:
                del self.client_ids[old.client_order_id]

    def close_algo(self, a: AlgoRecord) -> None:
        self.open_algos.pop(a.algo_id, None)
        self.closed_algos.append(a.algo_id)
        while len(self.closed_algos) > MAX_CLOSED_ALGOS:
            old = self.algos.pop(self.closed_algos.popleft(), None)
            if old is not None and self.client_algo_ids.get(old.client_algo_id) == old.algo_id:
                del self.client_algo_ids[old.client_algo_id]

    def add_notional(self, o: OrderRecord, lots: int) -> None:
        sides = self.notional.get(o.symbol)
        if sides is None:
            sides = self.notional[o.symbol] = [0, 0]
        sides[0 if o.side > 0 else 1] += lots * o.price_ticks


__all__ = [
    "LIQUIDATION_TYPE",
    "MAX_CLOSED_ALGOS",
    "MAX_CLOSED_ORDERS",
    "MAX_TRADES",
    "OPEN_ALGO_STATUSES",
    "OPEN_STATUSES",
    "POSITION_SIDE",
    "STP_MODE",
    "AccountBook",
    "AlgoRecord",
    "OrderRecord",
    "TradeRecord",
]
