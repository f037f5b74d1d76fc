"""Example strategies for `perpex sim --strategy perpex.sim.strategies:EmaCross` (and a
template for your own: subclass `perpex.sim.agents.strategy.Strategy`).

Units: what a strategy sees and sends are Decimals (USDT, BTC), as the facade's are.
"""

from __future__ import annotations

from decimal import Decimal

from perpex.core.units import atoms_to_decimal
from perpex.errors import ExchangeError
from perpex.sim.agents.strategy import Bar, Fill, Liquidation, Strategy, StrategyContext

SIZE_ROOM = Decimal("0.98")  # an entry uses at most this share of equity x leverage


class EmaCross(Strategy):
    """The 10x EMA cross: EMA `fast` / `slow` of bar closes; always in the market, long when
    the fast EMA is above the slow one, short below, flipping with market orders.

    The size is fixed at the start: deposit x `leverage` / the mark, in whole steps (capped by
    what the account can still afford after losses). Each entry carries a stop `stop` (a
    fraction) away from the price; after a stop or a liquidation it re-enters at the next bar
    on the side the EMAs give. O(1) per bar.
    """

    def __init__(
        self, fast: int = 10, slow: int = 30, leverage: int = 10, stop: float = 0.03
    ) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")
        if not 0 < stop < 1:
            raise ValueError(f"stop must be in (0, 1), got {stop}")
        self.fast = fast
        self.slow = slow
        self.leverage = leverage
        self.stop = Decimal(repr(stop))
        self._alpha_fast = 2.0 / (fast + 1)
        self._alpha_slow = 2.0 / (slow + 1)
        self.ema_fast: float | None = None
        self.ema_slow: float | None = None
        self.quantity = Decimal(0)
        self.side = 0  # the side the strategy believes it holds: +1, -1, 0
        # What happened, for a summary and the tests.
        self.entries = 0
        self.flips = 0
        self.stops_or_liquidations = 0  # positions found closed by a stop or a liquidation
        self.fills = 0
        self.liquidations = 0
        self.refused = 0  # entries or closes the exchange refused (ExchangeError)

    def on_start(self, ctx: StrategyContext) -> None:
        ctx.set_leverage(self.leverage)
        deposit = ctx.account().wallet_balance
        self.quantity = ctx.floor_qty(deposit * self.leverage / ctx.mark_price())

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        close = float(bar.close)
        if self.ema_fast is None or self.ema_slow is None:
            self.ema_fast = self.ema_slow = close
            return
        self.ema_fast += self._alpha_fast * (close - self.ema_fast)
        self.ema_slow += self._alpha_slow * (close - self.ema_slow)
        want = (self.ema_fast > self.ema_slow) - (self.ema_fast < self.ema_slow)
        # The world's integer view of the account: no Decimal view built on every bar.
        size_lots = ctx.world.position(ctx.account_name).size_lots
        held = (size_lots > 0) - (size_lots < 0)
        if self.side and not held:  # a stop or a liquidation closed it since the last bar
            self.stops_or_liquidations += 1
        self.side = held
        if want == 0 or want == held:
            return
        try:
            if held:  # flip: close the old side first
                quantity = ctx.spec.qty_to_decimal(abs(size_lots))
                ctx.place_order("SELL" if held > 0 else "BUY", "MARKET", quantity, reduce_only=True)
                self.side = 0
                self.flips += 1
            self._enter(ctx, want, bar.close)
        except ExchangeError:
            self.refused += 1

    def _enter(self, ctx: StrategyContext, side: int, price: Decimal) -> None:
        spec = ctx.spec
        equity = atoms_to_decimal(ctx.world.position(ctx.account_name).equity_atoms)
        # What the account can still carry after losses, with room for the fee and the open
        # loss of the fill.
        affordable = ctx.floor_qty(max(equity, Decimal(0)) * self.leverage * SIZE_ROOM / price)
        quantity = min(self.quantity, affordable)
        if quantity <= 0 or quantity * price < atoms_to_decimal(spec.min_notional_atoms):
            return
        stop = ctx.round_price(ctx.mark_price() * (1 - side * self.stop))
        ctx.place_order("BUY" if side > 0 else "SELL", "MARKET", quantity, stop_loss=stop)
        self.side = side
        self.entries += 1

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> None:
        self.fills += 1

    def on_liquidation(self, ctx: StrategyContext, event: Liquidation) -> None:
        self.liquidations += 1


__all__ = ["EmaCross"]
