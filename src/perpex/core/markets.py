"""Market specifications and leverage brackets (tiers), validated and compiled to integers.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. A `Market` is what a user
writes (decimal strings); a `MarketSpec` is what the engine uses (integers only). Compiling one
checks every rule a real exchange's table obeys (MECHANICS.md §1.1-1.3) and proves the bounds
that keep NumPy int64 arithmetic from wrapping.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from perpex.core.units import (
    ATOM,
    ATOMS_PER_UNIT,
    NOTIONAL_BOUND_ATOMS,
    PPM,
    DecimalLike,
    ParseError,
    Rounding,
    decimals_of,
    div,
    to_atoms,
    to_decimal,
    to_ppm,
    to_units,
)


class MarketError(ValueError):
    """A market or bracket table that cannot be loaded; the message names the culprit."""


@dataclass(frozen=True)
class Bracket:
    """One leverage bracket as Binance publishes it (GET /fapi/v1/leverageBracket)."""

    floor: DecimalLike
    cap: DecimalLike
    max_leverage: int
    mmr: DecimalLike
    cum: DecimalLike


@dataclass(frozen=True)
class Market:
    """A linear USDT-margined perpetual, in the decimal vocabulary of Binance's exchangeInfo."""

    symbol: str
    tick_size: DecimalLike
    step_size: DecimalLike
    brackets: list[Bracket] | tuple[Bracket, ...]
    maker_fee: DecimalLike = "0.0002"
    taker_fee: DecimalLike = "0.0005"
    min_notional: DecimalLike = "5"
    price_precision: int | None = None  # decimals accepted in a price (Binance pricePrecision)
    quantity_precision: int | None = None  # decimals accepted in a quantity
    min_price: DecimalLike | None = None
    max_price: DecimalLike = "1000000"
    max_quantity: DecimalLike = "1000"  # LOT_SIZE maxQty, limit orders
    max_market_quantity: DecimalLike = "120"  # MARKET_LOT_SIZE maxQty
    price_band: DecimalLike = "0.05"  # PERCENT_PRICE: limit prices within mark x (1 +- band)
    max_open_orders: int = 200
    default_leverage: int = 20


@dataclass(frozen=True, slots=True)
class BracketSpec:
    index: int  # 1-based, as Binance numbers them
    floor_atoms: int
    cap_atoms: int
    max_leverage: int
    mmr_ppm: int
    cum_atoms: int


@dataclass(frozen=True, slots=True)
class MarketSpec:
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    price_precision: int
    quantity_precision: int
    atoms_per_tick_lot: int
    brackets: tuple[BracketSpec, ...]
    maker_fee_ppm: int
    taker_fee_ppm: int
    min_notional_atoms: int
    min_price_ticks: int
    max_price_ticks: int
    max_limit_qty_lots: int
    max_market_qty_lots: int
    price_band_ppm: int
    max_open_orders: int
    default_leverage: int
    max_position_lots: int  # proven bound: max_price x max_position fits NOTIONAL_BOUND_ATOMS
    _floors: tuple[int, ...] = field(default=(), repr=False, compare=False)

    # -- brackets -------------------------------------------------------------------------
    def bracket_for(self, notional_atoms: int) -> BracketSpec:
        """The last bracket whose floor <= notional (a notional on a boundary takes the higher)."""
        i = bisect.bisect_right(self._floors, notional_atoms) - 1
        return self.brackets[max(i, 0)]

    def maintenance_margin_atoms(self, notional_atoms: int) -> int:
        """MM = notional x MMR - cum of the notional's bracket, rounded up (for the exchange)."""
        b = self.bracket_for(notional_atoms)
        return div(notional_atoms * b.mmr_ppm, PPM, Rounding.CEIL) - b.cum_atoms

    def max_notional_atoms_at(self, leverage: int) -> int:
        """Largest position notional allowed at `leverage` (0 if no bracket allows it)."""
        cap = 0
        for b in self.brackets:
            if b.max_leverage >= leverage:
                cap = b.cap_atoms
        return cap

    @property
    def max_leverage(self) -> int:
        return self.brackets[0].max_leverage

    def notional_atoms(self, price_ticks: int, qty_lots: int) -> int:
        return price_ticks * qty_lots * self.atoms_per_tick_lot

    def price_to_decimal(self, price_ticks: int) -> Decimal:
        return Decimal(price_ticks) * self.tick_size

    def qty_to_decimal(self, qty_lots: int) -> Decimal:
        return Decimal(qty_lots) * self.step_size


def _decimal(value: object, what: str) -> Decimal:
    try:
        return to_decimal(value)
    except ParseError as exc:
        raise MarketError(f"{what}: {exc}") from None


def compile_brackets(
    symbol: str, brackets: list[Bracket] | tuple[Bracket, ...]
) -> tuple[BracketSpec, ...]:
    """Check a bracket table (contiguous, cum per MECHANICS.md §1.2, leverage non-increasing)."""
    if not brackets:
        raise MarketError(f"{symbol}: the bracket table is empty")
    specs: list[BracketSpec] = []
    for n, b in enumerate(brackets, start=1):
        name = f"{symbol} bracket {n}"
        try:
            floor_atoms = to_atoms(b.floor)
            cap_atoms = to_atoms(b.cap)
            mmr_ppm = to_ppm(b.mmr)
            cum_atoms = to_atoms(b.cum, allow_negative=True)
        except ParseError as exc:
            raise MarketError(f"{name}: {exc}") from None
        if not isinstance(b.max_leverage, int) or isinstance(b.max_leverage, bool):
            raise MarketError(f"{name}: max_leverage must be an integer, got {b.max_leverage!r}")
        if b.max_leverage < 1:
            raise MarketError(f"{name}: max_leverage {b.max_leverage} is below 1")
        if not 0 < mmr_ppm < PPM:
            raise MarketError(f"{name}: mmr {b.mmr} is not in (0, 1)")
        if cap_atoms <= floor_atoms:
            raise MarketError(f"{name}: cap {b.cap} is not above floor {b.floor}")
        if cap_atoms > NOTIONAL_BOUND_ATOMS:
            raise MarketError(f"{name}: cap {b.cap} exceeds the int64 bound of the risk engine")
        if not specs:
            if floor_atoms != 0:
                raise MarketError(f"{name}: the first bracket must start at 0, not {b.floor}")
            if cum_atoms != 0:
                raise MarketError(f"{name}: the first bracket's cum must be 0, not {b.cum}")
        else:
            prev = specs[-1]
            if floor_atoms != prev.cap_atoms:
                raise MarketError(
                    f"{name}: floor {b.floor} does not continue the previous cap "
                    f"{Decimal(prev.cap_atoms) * ATOM}"
                )
            if b.max_leverage > prev.max_leverage:
                raise MarketError(
                    f"{name}: max_leverage {b.max_leverage} exceeds the previous bracket's "
                    f"{prev.max_leverage}"
                )
            if mmr_ppm < prev.mmr_ppm:
                raise MarketError(f"{name}: mmr {b.mmr} is below the previous bracket's")
            # cum_n = cum_{n-1} + floor_n x (mmr_n - mmr_{n-1}), exactly (compared times PPM).
            expected_scaled = prev.cum_atoms * PPM + floor_atoms * (mmr_ppm - prev.mmr_ppm)
            if cum_atoms * PPM != expected_scaled:
                expected = Decimal(expected_scaled) / PPM * ATOM
                raise MarketError(
                    f"{name}: cum {b.cum} is inconsistent with the recursion "
                    f"cum_n = cum_(n-1) + floor_n x (mmr_n - mmr_(n-1)); expected {expected}"
                )
        specs.append(BracketSpec(n, floor_atoms, cap_atoms, b.max_leverage, mmr_ppm, cum_atoms))
    return tuple(specs)


def compile_market(m: Market) -> MarketSpec:
    """Validate a `Market` and turn it into integers, proving the int64 bounds on the way."""
    symbol = m.symbol
    if not symbol or not symbol.isalnum() or symbol.upper() != symbol:
        raise MarketError(f"symbol {symbol!r} must be upper-case letters and digits")
    tick = _decimal(m.tick_size, f"{symbol} tick_size")
    step = _decimal(m.step_size, f"{symbol} step_size")
    if tick <= 0 or step <= 0:
        raise MarketError(f"{symbol}: tick_size and step_size must be positive")
    tick_lot_atoms = tick * step / ATOM
    if tick_lot_atoms != tick_lot_atoms.to_integral_value():
        raise MarketError(
            f"{symbol}: tick_size x step_size = {tick * step} is not a whole number of atoms "
            f"({ATOM} USDT); perpex cannot settle this market exactly"
        )
    atoms_per_tick_lot = int(tick_lot_atoms)
    price_precision = decimals_of(tick) if m.price_precision is None else m.price_precision
    qty_precision = decimals_of(step) if m.quantity_precision is None else m.quantity_precision
    if price_precision < decimals_of(tick) or qty_precision < decimals_of(step):
        raise MarketError(f"{symbol}: precision is coarser than the tick or step size")
    brackets = compile_brackets(symbol, m.brackets)

    def units(value: object, unit: Decimal, what: str) -> int:
        try:
            return to_units(value, unit, positive=True)
        except ParseError as exc:
            raise MarketError(f"{symbol} {what}: {exc}") from None

    max_price_ticks = units(m.max_price, tick, "max_price")
    min_price_ticks = 1 if m.min_price is None else units(m.min_price, tick, "min_price")
    max_limit_qty_lots = units(m.max_quantity, step, "max_quantity")
    max_market_qty_lots = units(m.max_market_quantity, step, "max_market_quantity")
    try:
        maker_fee_ppm = to_ppm(m.maker_fee)
        taker_fee_ppm = to_ppm(m.taker_fee)
        band_ppm = to_ppm(m.price_band)
        min_notional_atoms = to_atoms(m.min_notional)
    except ParseError as exc:
        raise MarketError(f"{symbol}: {exc}") from None
    if not (0 <= maker_fee_ppm < PPM and 0 <= taker_fee_ppm < PPM):
        raise MarketError(f"{symbol}: fees must be in [0, 1)")
    if not 0 < band_ppm < PPM:
        raise MarketError(f"{symbol}: price_band must be in (0, 1)")
    if not 1 <= m.default_leverage <= brackets[0].max_leverage:
        raise MarketError(f"{symbol}: default_leverage {m.default_leverage} is not allowed")
    if m.max_open_orders < 1:
        raise MarketError(f"{symbol}: max_open_orders must be at least 1")
    # The bound proof: any position the engine accepts, valued at any price it accepts, is a
    # notional below NOTIONAL_BOUND_ATOMS (2^60), so per-account sums of a few of them fit int64.
    atoms_per_lot_at_max = max_price_ticks * atoms_per_tick_lot
    max_position_lots = NOTIONAL_BOUND_ATOMS // atoms_per_lot_at_max
    if max_position_lots < max(max_limit_qty_lots, max_market_qty_lots):
        raise MarketError(
            f"{symbol}: max_price x max_quantity exceeds the int64 bound; lower max_price"
        )
    return MarketSpec(
        symbol=symbol,
        tick_size=tick,
        step_size=step,
        price_precision=price_precision,
        quantity_precision=qty_precision,
        atoms_per_tick_lot=atoms_per_tick_lot,
        brackets=brackets,
        maker_fee_ppm=maker_fee_ppm,
        taker_fee_ppm=taker_fee_ppm,
        min_notional_atoms=min_notional_atoms,
        min_price_ticks=min_price_ticks,
        max_price_ticks=max_price_ticks,
        max_limit_qty_lots=max_limit_qty_lots,
        max_market_qty_lots=max_market_qty_lots,
        price_band_ppm=band_ppm,
        max_open_orders=m.max_open_orders,
        default_leverage=m.default_leverage,
        max_position_lots=max_position_lots,
        _floors=tuple(b.floor_atoms for b in brackets),
    )


# -- loaders (pure: they take text, the caller reads the file) ------------------------------


def _plain(x: str) -> str:
    """'50000.0' -> '50000': the CSV and JSON carry floats printed by pandas."""
    d = Decimal(x)
    return format(d.normalize(), "f") if d != 0 else "0"


def parse_bracket_csv(text: str, snapshot_date: str | None = None) -> dict[str, list[Bracket]]:
    """Brackets per symbol from the shipped CSV (columns of binance_usdm_leverage_tiers_BTC_ETH)."""
    out: dict[str, list[Bracket]] = {}
    rows = sorted(csv.DictReader(io.StringIO(text)), key=lambda r: (r["symbol"], int(r["tier"])))
    for row in rows:
        if snapshot_date is not None and row["snapshot_date"] != snapshot_date:
            continue
        out.setdefault(row["symbol"], []).append(
            Bracket(
                floor=_plain(row["min_notional_usdt"]),
                cap=_plain(row["max_notional_usdt"]),
                max_leverage=int(Decimal(row["max_leverage"])),
                mmr=_plain(row["maint_margin_rate"]),
                cum=_plain(row["maint_amount_cum_usdt"]),
            )
        )
    return out


def parse_binance_tiers_json(text: str, symbol: str) -> list[Bracket]:
    """Brackets of one symbol from a ccxt `fetch_leverage_tiers` dump ("BTC/USDT:USDT" keys)."""
    data: dict[str, Any] = json.loads(text)
    # Only the perpetual: "BTC/USDT:USDT", never a dated delivery contract "BTC/USDT:USDT-241227".
    key = next(
        (k for k in data if "-" not in k and k.replace("/", "").split(":")[0] == symbol), None
    )
    if key is None:
        raise MarketError(f"{symbol}: not in the leverage-tier file")
    tiers = sorted(data[key], key=lambda t: int(t["tier"]))
    return [
        Bracket(
            floor=_plain(str(t["info"]["notionalFloor"])),
            cap=_plain(str(t["info"]["notionalCap"])),
            max_leverage=int(t["info"]["initialLeverage"]),
            mmr=_plain(str(t["info"]["maintMarginRatio"])),
            cum=_plain(str(t["info"]["cum"])),
        )
        for t in tiers
    ]


__all__ = [
    "ATOMS_PER_UNIT",
    "Bracket",
    "BracketSpec",
    "Market",
    "MarketError",
    "MarketSpec",
    "compile_brackets",
    "compile_market",
    "parse_binance_tiers_json",
    "parse_bracket_csv",
]
