"""perpex: a deterministic perpetual-futures exchange (order book, margin, liquidation, funding).

The public API is what `__all__` lists; everything else is importable but private.
"""

from perpex.core.markets import Bracket, Market, MarketError
from perpex.errors import ExchangeError
from perpex.exchange import Account, Exchange, Order, Position, Token, TokenInfo
from perpex.version import __version__ as __version__

__all__ = [
    "Account",
    "Bracket",
    "Exchange",
    "ExchangeError",
    "Market",
    "MarketError",
    "Order",
    "Position",
    "Token",
    "TokenInfo",
]
