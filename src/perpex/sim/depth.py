"""The shape of a real order book: how much BTC rests within each distance of the mid.

Source: the Binance USDⓈ-M BTCUSDT REST depth snapshot of 2024-08-08 (``last_update_id``
5123107852948; 1000 bid and 1000 ask levels; best bid 61,800.2, best ask 61,800.3), the file
``binance_usdm_BTCUSDT_2024-08-08_depth_snapshot.parquet`` of the shared data (its README, §3:
derived from ``nkaz001/hftbacktest``'s recording ``examples/usdm/btcusdt_20240808.gz``, MIT).

Derived once by `derive_profile` (re-run it with the Parquet file at hand; the result is
shipped as ``perpex/data/binance_usdm_BTCUSDT_2024-08-08_depth_profile.csv``):

* the mid = (best bid + best ask) / 2 = 61,800.25 USDT;
* for 1 bp buckets of distance from the mid, [k, k+1) bp, the BTC resting on the bids and on
  the asks in that bucket, computed exactly (prices in 0.1 ticks, sizes in 0.001 lots,
  integer bucket arithmetic);
* only buckets the snapshot covers completely: its 1000 levels reach 23.76 bp below the mid
  and 28.47 bp above it, so the bids have 23 buckets (0-23 bp) and the asks 28 (0-28 bp). A
  cell of a side beyond its reach is left empty.

`DepthProfile.cumulative_btc` interpolates the cumulative size linearly inside a bucket and,
beyond the measured reach, extends it at the average density (BTC per bp) of the outer half
of that side's measured buckets (bids 11-23 bp, asks 14-28 bp): 20.6 BTC/bp on the bids, 13.0
on the asks, so about 1,980 and 1,310 BTC within 1 % of the mid (the whole snapshot holds 397
and 385). That extrapolation is an assumption (the snapshot says nothing past ~25 bp); it
keeps the far book from being empty.

Units: distances are fractions of the mid (0.0001 = 1 bp) unless a name says ``_bp``; sizes
in BTC (floats: the makers round them down to lots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

BINANCE_2024_08_08 = "binance-2024-08-08"
FLAT = "flat"
PROFILE_FILE = "binance_usdm_BTCUSDT_2024-08-08_depth_profile.csv"
SNAPSHOT_FILE = "binance_usdm_BTCUSDT_2024-08-08_depth_snapshot.parquet"
BP = 1e-4  # one basis point as a fraction
_TICKS_PER_USDT = 10  # BTCUSDT tick 0.1
_LOTS_PER_BTC = 1000  # BTCUSDT step 0.001
_HEADER = "lo_bp,hi_bp,bid_btc,ask_btc"


def derive_profile(snapshot: str | Path) -> str:
    """The profile CSV's text from the depth snapshot Parquet file (exact: integer ticks,
    lots and bucket arithmetic). Columns used: ``side`` (bid|ask), ``price``, ``qty``."""
    import pyarrow.parquet as pq

    table = pq.read_table(snapshot, columns=["side", "price", "qty"]).to_pydict()
    bids: list[tuple[int, int]] = []  # (price_ticks, qty_lots)
    asks: list[tuple[int, int]] = []
    for side, price, qty in zip(table["side"], table["price"], table["qty"], strict=True):
        level = (round(price * _TICKS_PER_USDT), round(qty * _LOTS_PER_BTC))
        (bids if side == "bid" else asks).append(level)
    best_bid_ticks = max(p for p, _ in bids)
    best_ask_ticks = min(p for p, _ in asks)
    mid2_ticks = best_bid_ticks + best_ask_ticks  # twice the mid, so it stays an integer

    def buckets(levels: list[tuple[int, int]], sign: int) -> tuple[list[int], float]:
        # distance in bp of a level = sign * (2 price - mid2) / mid2 * 10^4
        far_bp = max(sign * (2 * p - mid2_ticks) for p, _ in levels) * 10_000 / mid2_ticks
        full = math.floor(far_bp)  # buckets [k, k+1) with k+1 <= reach are complete
        lots = [0] * full
        for p, q in levels:
            k = sign * (2 * p - mid2_ticks) * 10_000 // mid2_ticks
            if k < full:
                lots[k] += q
        return lots, far_bp

    bid_lots, bid_reach = buckets(bids, -1)
    ask_lots, ask_reach = buckets(asks, 1)
    mid_text = f"{mid2_ticks / (2 * _TICKS_PER_USDT):.2f}"
    lines = [
        "# Binance USD-M BTCUSDT REST depth snapshot of 2024-08-08 (1000 levels a side),",
        f"# {SNAPSHOT_FILE}",
        "# Derived by perpex.sim.depth.derive_profile: BTC resting in [lo_bp, hi_bp) from the",
        "# mid, per side; empty = beyond the snapshot's reach on that side.",
        f"# mid_usdt={mid_text}",
        f"# bid_reach_bp={bid_reach:.3f}",
        f"# ask_reach_bp={ask_reach:.3f}",
        _HEADER,
    ]

    def cell(lots: list[int], k: int) -> str:
        return f"{lots[k] / _LOTS_PER_BTC:.3f}" if k < len(lots) else ""

    for k in range(max(len(bid_lots), len(ask_lots))):
        lines.append(f"{k},{k + 1},{cell(bid_lots, k)},{cell(ask_lots, k)}")
    return "\n".join(lines) + "\n"


def write_profile(snapshot: str | Path, out: str | Path) -> None:
    """Re-derive the shipped CSV: ``write_profile(<shared data>/SNAPSHOT_FILE,
    src/perpex/data/PROFILE_FILE)``."""
    Path(out).write_text(derive_profile(snapshot), encoding="utf-8")


@dataclass(frozen=True, eq=False)
class DepthProfile:
    """Cumulative resting size by distance from the mid, per side, and the ladders it gives.

    `bid_cum_btc[k]` is the BTC on the bids within `k` bp of the mid (index 0 = 0 BTC), up to
    the side's measured reach; past it the size grows by `bid_tail_btc_per_bp` per bp (and
    likewise for asks). A flat profile (`flat=True`) spreads the same total as the real book
    within a ladder's reach evenly over its levels.
    """

    name: str
    mid_usdt: float
    bid_cum_btc: FloatArray
    ask_cum_btc: FloatArray
    bid_tail_btc_per_bp: float
    ask_tail_btc_per_bp: float
    flat: bool = False

    def cumulative_btc(self, side: int, distance: float | FloatArray) -> FloatArray:
        """BTC resting on `side` (+1 bids, -1 asks) within `distance` (fraction) of the mid."""
        cum = self.bid_cum_btc if side > 0 else self.ask_cum_btc
        tail = self.bid_tail_btc_per_bp if side > 0 else self.ask_tail_btc_per_bp
        d_bp = np.maximum(np.asarray(distance, dtype=np.float64), 0.0) / BP
        reach_bp = len(cum) - 1
        inside = np.interp(d_bp, np.arange(len(cum), dtype=np.float64), cum)
        return np.where(d_bp > reach_bp, cum[-1] + (d_bp - reach_bp) * tail, inside)

    @staticmethod
    def ladder_distances(levels: int, max_distance: float, spread: float = 0.0) -> FloatArray:
        """The `levels` distances (fractions of the mid) of a ladder, from `spread` (the best
        level) to `max_distance` (the last one), spaced quadratically: level i of n is at
        spread + (max_distance - spread) (i / (n - 1))^2, so the gaps grow with the distance,
        fine near the mid (where small orders trade) and coarse far out, as in a real book."""
        if levels < 1 or not 0 <= spread <= max_distance:
            raise ValueError("need levels >= 1 and 0 <= spread <= max_distance")
        if levels == 1:
            return np.array([spread], dtype=np.float64)
        steps = np.arange(levels, dtype=np.float64) / (levels - 1)
        return spread + (max_distance - spread) * steps * steps

    def ladder_sizes(
        self, levels: int, max_distance: float, scale: float = 1.0, spread: float = 0.0
    ) -> tuple[FloatArray, FloatArray]:
        """(bid sizes, ask sizes) in BTC, best level first, of a ladder at
        `ladder_distances(levels, max_distance, spread)`: level i holds what the real book
        holds between level i-1's distance and its own (level 0: everything within its own),
        so the ladder's cumulative size at each level's distance is the book's there, times
        `scale`. Flat: the same total within `max_distance`, equal per level."""
        d = self.ladder_distances(levels, max_distance, spread)
        out: list[FloatArray] = []
        for side in (1, -1):
            cum = self.cumulative_btc(side, d) * scale
            if self.flat:
                out.append(np.full(levels, cum[-1] / levels))
            else:
                out.append(np.diff(cum, prepend=0.0))
        return out[0], out[1]


def parse_profile(text: str, name: str = BINANCE_2024_08_08) -> DepthProfile:
    """A `DepthProfile` from the CSV `derive_profile` writes (1 bp buckets from 0)."""
    meta: dict[str, str] = {}
    sides: tuple[list[float], list[float]] = ([], [])
    header_seen = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            if sep:
                meta[key.strip()] = value.strip()
            continue
        if not header_seen:
            if line != _HEADER:
                raise ValueError(f"depth profile: header {line!r}, expected {_HEADER!r}")
            header_seen = True
            continue
        lo, hi, *cells = line.split(",")
        if int(hi) != int(lo) + 1 or len(cells) != 2:
            raise ValueError(f"depth profile: bad row {line!r}")
        for sizes, value in zip(sides, cells, strict=True):
            if value:
                if len(sizes) != int(lo):
                    raise ValueError(f"depth profile: gap before row {line!r}")
                sizes.append(float(value))
    if "mid_usdt" not in meta or not sides[0] or not sides[1]:
        raise ValueError("depth profile: needs mid_usdt and buckets on both sides")
    cums = [np.concatenate(([0.0], np.cumsum(s))) for s in sides]
    for cum in cums:
        cum.flags.writeable = False  # `load_profile` hands one cached copy to everyone
    tails = []
    for cum in cums:
        # The density of the outer half of the measured buckets carries on past the reach.
        reach = len(cum) - 1
        half = reach // 2
        tails.append(float((cum[reach] - cum[half]) / (reach - half)))
    return DepthProfile(name, float(meta["mid_usdt"]), cums[0], cums[1], tails[0], tails[1])


@cache
def load_profile(name: str = BINANCE_2024_08_08) -> DepthProfile:
    """The shipped profile (``"binance-2024-08-08"``) or its flat variant (``"flat"``)."""
    if name not in (BINANCE_2024_08_08, FLAT):
        raise ValueError(f"depth profile {name!r}: use {BINANCE_2024_08_08!r} or {FLAT!r}")
    text = resources.files("perpex").joinpath("data", PROFILE_FILE).read_text("utf-8")
    real = parse_profile(text)
    if name == FLAT:
        return DepthProfile(
            FLAT,
            real.mid_usdt,
            real.bid_cum_btc,
            real.ask_cum_btc,
            real.bid_tail_btc_per_bp,
            real.ask_tail_btc_per_bp,
            flat=True,
        )
    return real


__all__ = [
    "BINANCE_2024_08_08",
    "FLAT",
    "PROFILE_FILE",
    "SNAPSHOT_FILE",
    "DepthProfile",
    "derive_profile",
    "load_profile",
    "parse_profile",
    "write_profile",
]
