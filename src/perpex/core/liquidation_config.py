"""The liquidation engine's parameters (part of the state hash and the snapshot).

How many accounts a pass handles, the clearance fee, how far the insurance fund may chase the
book, the margin-call level, partial liquidation, and which symbols have a fund of their own.

Units: rates and distances in ppm. Stored in the liquidation record; validated on
construction, so an engine never holds one it cannot apply.
"""

from __future__ import annotations

import msgspec

from perpex.core.insurance import MAX_FUND_SYMBOLS
from perpex.core.units import PPM


class LiquidationConfig(msgspec.Struct, frozen=True, array_like=True):
    """The liquidation engine's parameters (part of the state hash)."""

    max_liquidations_per_tick: int = 50  # accounts handled per pass; the rest wait in a queue
    clearance_fee_ppm: int = 5_000  # of the liquidated notional (Binance: "up to 0.5 %")
    max_fund_distance_ppm: int = 100_000  # the fund closes no further than 10 % from the mark
    margin_call_ppm: int = 800_000  # MarginCall when MM / margin balance crosses 80 %
    # Partial liquidation (BitMEX, Bybit, OKX; MECHANICS.md §2.3, §3): off (0) by default, as
    # Binance's published process closes the whole position. From this bracket number up (>= 2)
    # a liquidation first sends one Fill-or-Kill order that brings the position's notional at
    # the mark below the cap of the bracket `partial_brackets_down` lower (or, when
    # `partial_fraction_ppm` is set, closes that fraction of it), keeps the whole margin behind
    # the rest, charges the clearance fee on the part closed and rechecks; only if that order
    # cannot fill, or the account is still at or below its MM, does the full process follow.
    partial_from_bracket: int = 0
    partial_brackets_down: int = 1  # BitMEX/Bybit: "a lower risk limit"; OKX drops two tiers
    partial_fraction_ppm: int = 0  # > 0: close this share of the position instead
    # Insurance funds (MECHANICS.md §1.8; Binance: "BTCUSDT and ETHUSDT have their own funds;
    # other perpetuals share one"): the listed symbols with a fund of their own. Every other
    # symbol draws on the common fund. Empty (the default): one fund for all.
    fund_symbols: tuple[str, ...] = ()
    # Auto-deleveraging (MECHANICS.md §2.4). Off: what neither the book nor the fund closed
    # within its bound is closed by the fund through whatever the book still holds, at any
    # price; the fund pays the deficit while it lasts, and what it cannot pay is bad debt left
    # on the trader's account (below zero: the exchange's loss, never collected). Only a book
    # with nothing left on the closing side still falls back to ADL: a position cannot stay
    # open on an account with no margin. A risk team compares the two by stress test.
    adl: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_liquidations_per_tick <= 1_000_000:
            raise ValueError("max_liquidations_per_tick must be in [1, 1000000]")
        if not 0 <= self.clearance_fee_ppm < PPM:
            raise ValueError("clearance_fee_ppm must be in [0, 1000000)")
        if not 0 < self.max_fund_distance_ppm < PPM:
            raise ValueError("max_fund_distance_ppm must be in (0, 1000000)")
        if not 0 < self.margin_call_ppm <= PPM:
            raise ValueError("margin_call_ppm must be in (0, 1000000]")
        if self.partial_from_bracket != 0 and not 2 <= self.partial_from_bracket <= 1_000:
            raise ValueError("partial_from_bracket must be 0 (off) or in [2, 1000]")
        if not 1 <= self.partial_brackets_down <= 1_000:
            raise ValueError("partial_brackets_down must be in [1, 1000]")
        if not 0 <= self.partial_fraction_ppm < PPM:
            raise ValueError("partial_fraction_ppm must be in [0, 1000000)")
        if not isinstance(self.fund_symbols, tuple) or len(self.fund_symbols) > MAX_FUND_SYMBOLS:
            raise ValueError(f"fund_symbols must be a tuple of at most {MAX_FUND_SYMBOLS} symbols")
        if not all(isinstance(s, str) and s for s in self.fund_symbols):
            raise ValueError("fund_symbols must be non-empty symbol names")
        if len(set(self.fund_symbols)) != len(self.fund_symbols):
            raise ValueError("fund_symbols lists a symbol twice")
        if not isinstance(self.adl, bool):
            raise ValueError("adl must be a bool")


__all__ = ["LiquidationConfig"]
