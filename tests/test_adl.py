"""The ADL rulebook: BitMEX's ranking by PnL% and effective leverage, and the five lights.

Source: MECHANICS.md §2.4 and BitMEX's worked example (MEX autoDeleveragingExamples: six longs
ranked 2, 5, 4, 1, 6, 3 with percentiles 20/40/60/80/80/100 %; a short of 20 liquidated at
bankruptcy 650 closes account 2's 10 in full and 10 of account 5's 20). Prices and sizes are
plain integers here (k = 1 atom per tick-lot) so the ratios read directly.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from perpex.core.adl import (
    LONG,
    SHORT,
    AdlPosition,
    adl_allocate,
    adl_quantile,
    adl_quantiles,
    adl_queue,
    adl_score,
)

MARK = 1_200
K = 1


def long_with_score(account: int, qty: int, leverage: int) -> AdlPosition:
    """A long bought at 600 (PnL% = +100 % at 1,200) whose equity makes its effective leverage
    exactly `leverage`, so its score is exactly `leverage`."""
    notional = qty * MARK
    assert notional % leverage == 0
    return AdlPosition(account, qty, qty * 600, notional // leverage)


# MEX example: (account, quantity, PnL ranking score).
BITMEX_LONGS = [(1, 10, 3), (2, 10, 6), (3, 20, 1), (4, 30, 4), (5, 20, 5), (6, 10, 2)]


@pytest.fixture
def bitmex_longs() -> list[AdlPosition]:
    return [long_with_score(a, qty, score) for a, qty, score in BITMEX_LONGS]


def test_scores_are_pnl_percent_times_effective_leverage(bitmex_longs: list[AdlPosition]) -> None:
    assert [adl_score(p, MARK, K) for p in bitmex_longs] == [3, 6, 1, 4, 5, 2]


def test_bitmex_example_order(bitmex_longs: list[AdlPosition]) -> None:
    queue = adl_queue(bitmex_longs, MARK, K, LONG)
    assert [bitmex_longs[i].account_idx for i in queue] == [2, 5, 4, 1, 6, 3]


def test_bitmex_example_percentiles(bitmex_longs: list[AdlPosition]) -> None:
    # Percentiles 20, 40, 60, 80, 80, 100 % in queue order = 5, 4, 3, 2, 2, 1 lights.
    lights = dict(
        zip(
            (p.account_idx for p in bitmex_longs), adl_quantiles(bitmex_longs, MARK, K), strict=True
        )
    )
    assert [lights[a] for a in (2, 5, 4, 1, 6, 3)] == [5, 4, 3, 2, 2, 1]


def test_bitmex_example_allocation(bitmex_longs: list[AdlPosition]) -> None:
    queue = adl_queue(bitmex_longs, MARK, K, LONG)
    plan = adl_allocate(bitmex_longs, queue, 20)
    assert [(bitmex_longs[i].account_idx, lots) for i, lots in plan] == [(2, 10), (5, 10)]


def test_allocation_stops_when_the_queue_runs_out(bitmex_longs: list[AdlPosition]) -> None:
    queue = adl_queue(bitmex_longs, MARK, K, LONG)
    plan = adl_allocate(bitmex_longs, queue, 1_000)
    assert sum(lots for _, lots in plan) == 100


@pytest.mark.parametrize(
    ("position", "score"),
    [
        # long 10 @ 600, mark 1,200, equity 2,400: PnL% 1, leverage 12,000/2,400 = 5 -> 5
        (AdlPosition(0, 10, 6_000, 2_400), Fraction(5)),
        # long 10 @ 1,500 at 1,200: PnL% −0.2; leverage 12,000/6,000 = 2 -> −0.2 / 2
        (AdlPosition(0, 10, 15_000, 6_000), Fraction(-1, 10)),
        # the same loss at leverage 10: −0.2 / 10 (a more leveraged loser ranks higher)
        (AdlPosition(0, 10, 15_000, 1_200), Fraction(-1, 50)),
        # short 10 @ 1,500 at 1,200: PnL% +0.2, equity 3,000, leverage 4 -> 0.8
        (AdlPosition(0, -10, -15_000, 3_000), Fraction(4, 5)),
        # flat PnL: 0 whatever the leverage
        (AdlPosition(0, 10, 12_000, 100), Fraction(0)),
        # past bankruptcy (equity <= 0): not rankable
        (AdlPosition(0, 10, 6_000, 0), None),
    ],
    ids=["profit", "loss 2x", "loss 10x", "short profit", "flat", "no equity"],
)
def test_score(position: AdlPosition, score: Fraction | None) -> None:
    assert adl_score(position, MARK, K) == score


def test_sides_are_ranked_separately_and_losers_last() -> None:
    positions = [
        AdlPosition(10, 10, 15_000, 6_000),  # long, loss, 2x: −0.1
        AdlPosition(11, -10, -15_000, 3_000),  # short, +0.2 x 4 = 0.8
        AdlPosition(12, 10, 15_000, 1_200),  # long, loss, 10x: −0.02
        AdlPosition(13, 10, 6_000, 2_400),  # long, +1 x 5 = 5
        AdlPosition(14, -10, -6_000, 1_000),  # short, loss −1 / 12 = −0.0833
        AdlPosition(15, 10, 6_000, 0),  # long past bankruptcy: not in the queue
    ]
    assert adl_queue(positions, MARK, K, LONG) == [3, 2, 0]
    assert adl_queue(positions, MARK, K, SHORT) == [1, 4]
    assert adl_queue(positions, MARK, K, LONG, profitable_only=True) == [3]
    # Lights = 6 − ceil(5 x quantity at or above / side quantity). Longs (10 lots each, 30 in
    # all): 13 -> 10/30 -> 4 lights, 12 -> 20/30 -> 2, 10 -> 30/30 -> 1. Shorts (20 in all):
    # 11 -> 10/20 -> 3, 14 -> 1. Account 15 is not ranked: 1 light.
    assert adl_quantiles(positions, MARK, K) == [1, 3, 2, 4, 1, 1]


def test_equal_scores_go_by_account() -> None:
    positions = [AdlPosition(a, 10, 6_000, 2_400) for a in (9, 3, 7)]
    assert [positions[i].account_idx for i in adl_queue(positions, MARK, K, LONG)] == [3, 7, 9]


def test_exact_scores_where_floats_would_tie() -> None:
    big = 10**18
    a = AdlPosition(1, 10, 6_000, big)  # equity differs by 1 atom in 10^18
    b = AdlPosition(2, 10, 6_000, big + 1)
    assert adl_score(a, MARK, K) != adl_score(b, MARK, K)
    assert adl_queue([b, a], MARK, K, LONG) == [1, 0]  # a: less equity, more leverage


def test_lights_follow_quantity_not_head_count() -> None:
    """One whale of 90 lots behind a top position of 10: the top 10 % shows 5 lights and the
    whale, 100 % of the side once counted, 1 (as account 3 in the MEX example). A position
    alone on its side is likewise 100 % of it and shows 1 light under this rule."""
    top = AdlPosition(1, 10, 6_000, 2_400)  # score 5
    whale = AdlPosition(2, 90, 54_000, 54_000)  # score 2
    assert adl_quantiles([whale, top], MARK, K) == [1, 5]
    assert adl_quantiles([top], MARK, K) == [1]


def test_bad_side_is_rejected() -> None:
    with pytest.raises(ValueError):
        adl_queue([], MARK, K, 0)


# -- what the trader is shown (Binance-like): only profitable positions light up --------------


def test_shown_lights_put_losers_at_the_bottom() -> None:
    """The same book as above: the shown lights keep the profitable positions' percentiles in
    the whole queue (13: 4 lights, 11: 3) and show every loser 1 light, however leveraged (12
    was ranked second of the longs: 2 lights in the BitMEX reading, 1 shown)."""
    positions = [
        AdlPosition(10, 10, 15_000, 6_000),  # long, loss
        AdlPosition(11, -10, -15_000, 3_000),  # short, +0.8
        AdlPosition(12, 10, 15_000, 1_200),  # long, loss, 10x
        AdlPosition(13, 10, 6_000, 2_400),  # long, +5
        AdlPosition(14, -10, -6_000, 1_000),  # short, loss
        AdlPosition(15, 10, 6_000, 0),  # past bankruptcy
    ]
    assert adl_quantiles(positions, MARK, K, losers_lowest=True) == [1, 3, 1, 4, 1, 1]
    assert [adl_quantile(positions, i, MARK, K) for i in range(6)] == [1, 3, 1, 4, 1, 1]


def test_shown_lights_of_a_lone_winner_among_losers() -> None:
    """A profitable 10 lots ahead of 90 losing lots is the top 10 % of the queue: 5 lights."""
    winner = AdlPosition(1, 10, 6_000, 2_400)
    losers = [AdlPosition(a, 30, 45_000, 9_000) for a in (2, 3, 4)]
    assert adl_quantiles([winner, *losers], MARK, K, losers_lowest=True) == [5, 1, 1, 1]


def test_shown_lights_of_the_bitmex_example_are_unchanged(
    bitmex_longs: list[AdlPosition],
) -> None:
    """All six MEX longs are profitable: the shown lights are BitMEX's percentiles."""
    assert adl_quantiles(bitmex_longs, MARK, K, losers_lowest=True) == adl_quantiles(
        bitmex_longs, MARK, K
    )


def test_flat_position_shows_no_lights() -> None:
    assert adl_quantile([AdlPosition(0, 0, 0, 100)], 0, MARK, K) == 0
