"""The markets `Exchange()` lists by default: Binance BTCUSDT and ETHUSDT perpetuals.

Brackets are the real Binance USDⓈ-M tables of 2024-10-24 (shipped in perpex/data, copied from
../shared/data/binance_usdm_leverage_tiers_BTC_ETH.csv; see the README for the source). Filters
follow Binance's exchangeInfo for the two symbols: tick 0.1 / 0.01, step 0.001, price precision
2, quantity precision 3, PERCENT_PRICE 5 %, maker 0.02 %, taker 0.05 %, min notional 5 USDT.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from perpex.core.markets import Bracket, Market, parse_bracket_csv

BRACKETS_FILE = "binance_leverage_brackets_2024-10-24.csv"
BRACKET_SNAPSHOTS = ("2024-10-24", "2026-05-07")  # binance_leverage_brackets_<date>.csv


@cache
def default_brackets() -> dict[str, tuple[Bracket, ...]]:
    return brackets_of("2024-10-24")


@cache
def brackets_of(snapshot_date: str) -> dict[str, tuple[Bracket, ...]]:
    """A shipped Binance bracket table by its date (`BRACKET_SNAPSHOTS`)."""
    if snapshot_date not in BRACKET_SNAPSHOTS:
        raise ValueError(f"brackets {snapshot_date!r}: shipped are {', '.join(BRACKET_SNAPSHOTS)}")
    name = f"binance_leverage_brackets_{snapshot_date}.csv"
    text = resources.files("perpex").joinpath("data", name).read_text("utf-8")
    return {s: tuple(b) for s, b in parse_bracket_csv(text, snapshot_date).items()}


def default_markets() -> list[Market]:
    brackets = default_brackets()
    return [
        Market(
            symbol="BTCUSDT",
            tick_size="0.1",
            step_size="0.001",
            brackets=brackets["BTCUSDT"],
            maker_fee="0.0002",
            taker_fee="0.0005",
            min_notional="5",
            price_precision=2,
            quantity_precision=3,
            min_price="556.8",
            max_price="4529764.5",
            max_quantity="1000",
            max_market_quantity="120",
        ),
        Market(
            symbol="ETHUSDT",
            tick_size="0.01",
            step_size="0.001",
            brackets=brackets["ETHUSDT"],
            maker_fee="0.0002",
            taker_fee="0.0005",
            min_notional="5",
            price_precision=2,
            quantity_precision=3,
            min_price="39.86",
            max_price="306177",
            max_quantity="10000",
            max_market_quantity="2000",
        ),
    ]
