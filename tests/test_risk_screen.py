"""The liquidation screen's rulebook, run against the vector screen and its scalar twin.

Markets are the default BTCUSDT and ETHUSDT perpetuals (Binance brackets of 2024-10-24,
MECHANICS.md §1.1 table (a)): BTC tick 0.1 / step 0.001 (100 atoms per tick-lot), ETH tick 0.01
/ step 0.001 (10 atoms per tick-lot). Liquidation: equity <= MM (MECHANICS.md §0, §1.8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from perpex.core.markets import Bracket, Market, MarketSpec, compile_market
from perpex.core.risk import (
    CrossSums,
    Liquidatable,
    MarkedStore,
    PositionStore,
    Screener,
    ScreenResult,
    cross_sums_scalar,
    screen_scalar,
)
from perpex.core.units import NOTIONAL_BOUND_ATOMS, PPM, Rounding, div, to_atoms, to_units
from perpex.defaults import default_markets

MARKETS = {m.symbol: compile_market(m) for m in default_markets()}
BTC = MARKETS["BTCUSDT"]
ETH = MARKETS["ETHUSDT"]
# A table so fine (a bracket from 1 USDT) that the lookup falls back to np.searchsorted.
FINE = compile_market(
    Market(
        symbol="FINEUSDT",
        tick_size="0.1",
        step_size="0.001",
        brackets=[
            Bracket("0", "1", 100, "0.004", "0"),
            Bracket("1", "300000", 50, "0.005", "0.001"),
            Bracket("300000", "1000000000", 10, "0.05", "13500.001"),
        ],
    )
)

Screen = Callable[[Sequence[MarkedStore], np.ndarray, int], ScreenResult]


def vector(markets: Sequence[MarkedStore], wallets: np.ndarray, limit: int) -> ScreenResult:
    return Screener().screen(markets, wallets, limit)


def vector_chunk_1(markets: Sequence[MarkedStore], wallets: np.ndarray, limit: int) -> ScreenResult:
    return Screener(chunk_rows=1).screen(markets, wallets, limit)


@pytest.fixture(params=[vector, vector_chunk_1, screen_scalar], ids=["vector", "chunk1", "scalar"])
def screen(request: pytest.FixtureRequest) -> Screen:
    fn: Screen = request.param
    return fn


def usdt(amount: str) -> int:
    return to_atoms(amount, allow_negative=True)


def ticks(spec: MarketSpec, price: str) -> int:
    return to_units(price, spec.tick_size)


def lots(spec: MarketSpec, qty: str) -> int:
    return to_units(qty, spec.step_size, allow_negative=True)


def cost(spec: MarketSpec, qty: str, entry: str) -> int:
    return lots(spec, qty) * ticks(spec, entry) * spec.atoms_per_tick_lot


def wallets(n: int, **by_account: int) -> np.ndarray:
    out = np.zeros(n, np.int64)
    for key, value in by_account.items():
        out[int(key.removeprefix("a"))] = value
    return out


def one_isolated(
    spec: MarketSpec, qty: str, entry: str, margin: str, account: int = 0
) -> PositionStore:
    store = PositionStore()
    store.upsert(
        account,
        lots(spec, qty),
        cost(spec, qty, entry),
        isolated=True,
        margin_atoms=usdt(margin),
        leverage=20,
    )
    return store


# -- isolated: the boundary equity == MM ------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "margin", "mark", "liquidated"),
    [
        # MECHANICS.md §1.4 worked example A: 1 BTC long at 100,000, 20x, margin 5,000, LP
        # 95,427.14. At 95,427.1: equity 427.1 < MM 95,427.1 x 0.5 % − 50 = 427.1355.
        ("1", "5000", "95427.1", True),
        ("1", "5000", "95427.2", False),  # equity 427.2 > MM 427.136
        # The same at 95,427.2 with margin lowered to make equity == MM exactly (427.136).
        ("1", "4999.936", "95427.2", True),
        ("1", "4999.936001", "95427.2", False),  # one atom above
        # The mirror short: LP = (5,000 + 50 + 100,000) / (1 + 0.005) = 104,527.36.
        ("-1", "5000", "104527.4", True),
        ("-1", "5000", "104527.3", False),  # equity 472.7 > MM 472.6365
        ("-1", "4999.9365", "104527.3", True),  # equity == MM == 472.6365
        ("-1", "4999.936501", "104527.3", False),
    ],
    ids=[
        "long past LP",
        "long before LP",
        "long equity == MM",
        "long one atom above",
        "short past LP",
        "short before LP",
        "short equity == MM",
        "short one atom above",
    ],
)
def test_isolated_boundary(
    screen: Screen, qty: str, margin: str, mark: str, liquidated: bool
) -> None:
    store = one_isolated(BTC, qty, "100000", margin)
    result = screen([MarkedStore(store, BTC, ticks(BTC, mark))], wallets(1), 10)
    assert result.total == int(liquidated)
    if liquidated:
        (hit,) = result.liquidatable
        notional = abs(lots(BTC, qty)) * ticks(BTC, mark) * 100
        assert hit == Liquidatable(
            0,
            "BTCUSDT",
            usdt(margin)
            + lots(BTC, qty) * ticks(BTC, mark) * 100
            - lots(BTC, qty) * ticks(BTC, "100000") * 100,
            div(notional * 5_000, PPM, Rounding.CEIL) - usdt("50"),  # bracket 2
        )


# -- cross: an account is judged over all its symbols ---------------------------------------


def cross_btc_long_eth_short(wallet: int) -> tuple[list[MarkedStore], np.ndarray]:
    """1 BTC long at 100,000 and 10 ETH short at 4,000, cross; marks 95,000 and 4,200.

    uPnL −5,000 + −2,000 = −7,000; MM (95,000 x 0.5 % − 50) + 42,000 x 0.4 % = 425 + 168 = 593:
    liquidated while wallet − 7,000 <= 593, i.e. wallet <= 7,593 USDT.
    """
    btc, eth = PositionStore(), PositionStore()
    btc.upsert(3, lots(BTC, "1"), cost(BTC, "1", "100000"))
    eth.upsert(3, lots(ETH, "-10"), cost(ETH, "-10", "4000"))
    return (
        [MarkedStore(btc, BTC, ticks(BTC, "95000")), MarkedStore(eth, ETH, ticks(ETH, "4200"))],
        wallets(5, a3=wallet),
    )


def test_cross_two_symbols_at_the_boundary(screen: Screen) -> None:
    markets, w = cross_btc_long_eth_short(usdt("7593"))
    assert screen(markets, w, 10).liquidatable == [Liquidatable(3, None, usdt("593"), usdt("593"))]
    markets, w = cross_btc_long_eth_short(usdt("7593.000001"))
    assert screen(markets, w, 10).total == 0


def test_cross_judged_on_one_symbol_only_sees_that_symbol(screen: Screen) -> None:
    markets, w = cross_btc_long_eth_short(usdt("7593"))
    # Without the ETH leg: equity 2,593 against MM 425.
    assert screen(markets[:1], w, 10).total == 0


def test_isolated_only_account_with_empty_wallet_is_not_a_cross_liquidation(screen: Screen) -> None:
    store = one_isolated(BTC, "1", "100000", "5000", account=1)
    assert screen([MarkedStore(store, BTC, ticks(BTC, "100000"))], wallets(3), 10).total == 0


def test_cross_and_isolated_of_one_account_are_separate(screen: Screen) -> None:
    btc, eth = PositionStore(), PositionStore()
    btc.upsert(2, lots(BTC, "1"), cost(BTC, "1", "100000"))  # cross, uPnL 0, MM 450
    eth.upsert(2, lots(ETH, "1"), cost(ETH, "1", "4000"), isolated=True, margin_atoms=0)
    markets = [
        MarkedStore(btc, BTC, ticks(BTC, "100000")),
        MarkedStore(eth, ETH, ticks(ETH, "4000")),
    ]
    result = screen(markets, wallets(3, a2=0), 10)
    # Both have equity 0: equal margin level 0, the cross account before the position.
    assert [(x.account_idx, x.symbol) for x in result.liquidatable] == [(2, None), (2, "ETHUSDT")]


# -- brackets: a notional on a boundary takes the higher bracket ----------------------------


@pytest.mark.parametrize("bracket", BTC.brackets[1:], ids=lambda b: f"floor of bracket {b.index}")
@pytest.mark.parametrize("offset_ticks", [-1, 0, 1], ids=["tick below", "on floor", "tick above"])
def test_bracket_boundaries(screen: Screen, bracket: object, offset_ticks: int) -> None:
    """At mark 50,000.0 a position of floor / 50,000 BTC sits exactly on the bracket floor."""
    assert bracket in BTC.brackets
    b = BTC.brackets[BTC.brackets.index(bracket)]  # type: ignore[arg-type]
    below = BTC.brackets[b.index - 2]
    size_lots = b.floor_atoms // (500_000 * 100)
    assert size_lots * 500_000 * 100 == b.floor_atoms
    mark = 500_000 + offset_ticks
    notional = size_lots * mark * 100
    store = PositionStore()
    store.upsert(0, size_lots, size_lots * mark * 100, isolated=True)  # uPnL 0, margin 0
    (hit,) = screen([MarkedStore(store, BTC, mark)], wallets(1), 10).liquidatable
    used = below if offset_ticks < 0 else b  # MECHANICS.md §1.2: floor <= notional
    assert (
        hit.maint_margin_atoms == div(notional * used.mmr_ppm, PPM, Rounding.CEIL) - used.cum_atoms
    )
    # MM is continuous: on the floor both brackets give the same figure (cum recursion).
    if offset_ticks == 0:
        assert hit.maint_margin_atoms == (
            div(notional * below.mmr_ppm, PPM, Rounding.CEIL) - below.cum_atoms
        )


def test_notional_beyond_the_last_cap_uses_the_last_bracket(screen: Screen) -> None:
    last = BTC.brackets[-1]
    size_lots = 2 * last.cap_atoms // (500_000 * 100)
    store = PositionStore()
    store.upsert(0, size_lots, size_lots * 500_000 * 100, isolated=True)
    (hit,) = screen([MarkedStore(store, BTC, 500_000)], wallets(1), 10).liquidatable
    notional = 2 * last.cap_atoms
    assert hit.maint_margin_atoms == notional * last.mmr_ppm // PPM - last.cum_atoms


@pytest.mark.parametrize("side", [1, -1], ids=["long", "short"])
def test_position_at_the_int64_bound(screen: Screen, side: int) -> None:
    """max position x max price: a notional just below 2^60 atoms, MM exact."""
    size_lots = side * BTC.max_position_lots
    mark = BTC.max_price_ticks
    notional = BTC.max_position_lots * mark * 100
    assert NOTIONAL_BOUND_ATOMS - mark * 100 < notional <= NOTIONAL_BOUND_ATOMS
    store = PositionStore()
    store.upsert(
        0,
        size_lots,
        side * NOTIONAL_BOUND_ATOMS,
        isolated=True,
        margin_atoms=2 * NOTIONAL_BOUND_ATOMS,
    )
    store.upsert(1, size_lots, side * NOTIONAL_BOUND_ATOMS)  # cross
    w = wallets(2, a1=-2 * NOTIONAL_BOUND_ATOMS)
    result = screen([MarkedStore(store, BTC, mark)], w, 10)
    mm = BTC.maintenance_margin_atoms(notional)
    upnl = size_lots * mark * 100 - side * NOTIONAL_BOUND_ATOMS
    expected = [Liquidatable(1, None, -2 * NOTIONAL_BOUND_ATOMS + upnl, mm)]
    if 2 * NOTIONAL_BOUND_ATOMS + upnl <= mm:
        expected.append(Liquidatable(0, "BTCUSDT", 2 * NOTIONAL_BOUND_ATOMS + upnl, mm))
    assert result.liquidatable == expected


# -- ordering: most underwater first, ties by account, at most `limit` -----------------------


def underwater_book() -> tuple[list[MarkedStore], np.ndarray]:
    """Isolated 1 BTC longs at mark = entry = 100,000 (uPnL 0, MM 450 USDT) with margins set
    to the equity wanted, and one cross account with negative equity."""
    store = PositionStore()
    for account, margin in [(1, "0"), (2, "225"), (5, "450"), (4, "450"), (6, "450.000001")]:
        store.upsert(
            account,
            lots(BTC, "1"),
            cost(BTC, "1", "100000"),
            isolated=True,
            margin_atoms=usdt(margin),
        )
    store.upsert(3, lots(BTC, "1"), cost(BTC, "1", "100000"))  # cross
    return [MarkedStore(store, BTC, ticks(BTC, "100000"))], wallets(7, a3=usdt("-100"))


def test_most_underwater_first_ties_by_account(screen: Screen) -> None:
    markets, w = underwater_book()
    result = screen(markets, w, 10)
    assert [(x.account_idx, x.equity_atoms) for x in result.liquidatable] == [
        (3, usdt("-100")),  # negative equity: margin level −100/450
        (1, 0),  # level 0
        (2, usdt("225")),  # level 0.5
        (4, usdt("450")),  # level 1, tie with account 5: lower account first
        (5, usdt("450")),
    ]  # account 6 is one atom above MM
    assert result.total == 5


@pytest.mark.parametrize("limit", [0, 1, 2, 4])
def test_limit(screen: Screen, limit: int) -> None:
    markets, w = underwater_book()
    result = screen(markets, w, limit)
    assert [x.account_idx for x in result.liquidatable] == [3, 1, 2, 4, 5][:limit]
    assert result.total == 5


def test_exact_order_where_floats_tie() -> None:
    """Margin levels that differ by less than a float64 ulp are still ordered exactly."""
    store = PositionStore()
    # MM of a 1,000 BTC long at 100,000: bracket 7, 5 % x 100M − 2,981,450 = 2,018,550 USDT.
    big = lots(BTC, "1000")
    base = usdt("2018550") - 1
    for account, margin in [(9, base), (8, base - 1), (7, base - 2), (6, base)]:
        store.upsert(
            account, big, big * ticks(BTC, "100000") * 100, isolated=True, margin_atoms=margin
        )
    markets = [MarkedStore(store, BTC, ticks(BTC, "100000"))]
    for fn in (vector, screen_scalar):
        assert [x.account_idx for x in fn(markets, wallets(10), 10).liquidatable] == [7, 8, 6, 9]
        assert [x.account_idx for x in fn(markets, wallets(10), 2).liquidatable] == [7, 8]


# -- the store ----------------------------------------------------------------------------


def test_store_keeps_cross_rows_first_and_an_exact_index() -> None:
    store = PositionStore(capacity=1)
    model: dict[int, tuple[int, int, bool, int]] = {}
    rng = np.random.default_rng(3)
    for step in range(2_000):
        account = int(rng.integers(0, 40))
        if rng.random() < 0.3:
            assert store.remove(account) == (account in model)
            model.pop(account, None)
        else:
            iso = bool(rng.random() < 0.5)
            size = int(rng.integers(1, 1000)) * (1 if rng.random() < 0.5 else -1)
            margin = int(rng.integers(0, 10**6)) if iso else 0
            store.upsert(account, size, size * 7, isolated=iso, margin_atoms=margin, leverage=5)
            model[account] = (size, size * 7, iso, margin)
        if step % 50 == 0:
            store.check_invariants()
    store.check_invariants()
    assert {
        r.account_idx: (r.size_lots, r.cost_atoms, r.isolated, r.margin_atoms) for r in store.rows()
    } == model
    assert len(store) == len(model)
    rebuilt = PositionStore.from_arrays(
        *(
            getattr(store, name)[: len(store)]
            for name in (
                "account_idx",
                "size_lots",
                "cost_atoms",
                "isolated",
                "margin_atoms",
                "leverage",
            )
        )
    )
    rebuilt.check_invariants()
    assert sorted(rebuilt.rows()) == sorted(store.rows())


def test_store_grows_by_doubling_up_to_its_limit() -> None:
    store = PositionStore(capacity=1, max_rows=5)
    for account in range(5):
        store.upsert(account, 1, 1)
    assert store.capacity == 5  # 1, 2, 4, then capped at 5
    with pytest.raises(OverflowError):
        store.upsert(99, 1, 1)
    store.upsert(4, 2, 2)  # an update needs no new row


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size_lots": 0},
        {"cost_atoms": NOTIONAL_BOUND_ATOMS + 1},
        {"isolated": False, "margin_atoms": 1},
        {"isolated": True, "margin_atoms": -1},
        {"isolated": True, "margin_atoms": 2 * NOTIONAL_BOUND_ATOMS + 1},
        {"account_idx": -1},
        {"leverage": 0},
    ],
    ids=[
        "zero size",
        "cost beyond bound",
        "cross with margin",
        "negative margin",
        "margin beyond bound",
        "negative account",
        "zero leverage",
    ],
)
def test_store_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"account_idx": 0, "size_lots": 1, "cost_atoms": 1, "leverage": 1}
    args.update(kwargs)
    with pytest.raises(ValueError):
        PositionStore().upsert(**args)  # type: ignore[arg-type]


def test_mode_change_moves_the_row() -> None:
    store = PositionStore()
    for account in range(4):
        store.upsert(account, 1, 1, isolated=account % 2 == 1, margin_atoms=account % 2)
    store.upsert(0, 5, 5, isolated=True, margin_atoms=3)
    store.upsert(3, 6, 6)
    store.check_invariants()
    assert store.n_cross == 2
    assert store.get(0) == (0, 5, 5, True, 3, 20)


def test_beyond_the_proof_the_scalar_answers() -> None:
    """Four symbols each near 2^60: the cross sums could pass 2^63, so the scalar answers."""
    markets = []
    for name in ("AUSDT", "BUSDT", "CUSDT", "DUSDT"):
        spec = compile_market(replace(default_markets()[0], symbol=name))
        store = PositionStore()
        store.upsert(0, spec.max_position_lots, NOTIONAL_BOUND_ATOMS)
        markets.append(MarkedStore(store, spec, spec.max_price_ticks))
    w = wallets(1, a0=-2 * NOTIONAL_BOUND_ATOMS)
    result = Screener().screen(markets, w, 10)
    assert not result.vectorized
    assert result == screen_scalar(markets, w, 10)
    # |wallet| 2^61 + 3 x (value just below 2^60 + cost 2^60) is still below 2^63.
    assert Screener().screen(markets[:3], w, 10).vectorized


def test_screen_rejects_bad_input() -> None:
    store = one_isolated(BTC, "1", "100000", "5000", account=4)
    with pytest.raises(ValueError):  # account 4 has no wallet entry
        Screener().screen([MarkedStore(store, BTC, 1_000_000)], wallets(3), 10)
    with pytest.raises(TypeError):
        Screener().screen([MarkedStore(store, BTC, 1_000_000)], np.zeros(5, np.float64), 10)
    with pytest.raises(ValueError):
        Screener().screen([MarkedStore(store, BTC, 0)], wallets(5), 10)
    with pytest.raises(ValueError):
        Screener().screen([MarkedStore(store, BTC, 1), MarkedStore(store, BTC, 1)], wallets(5), 1)


# -- property: vector == scalar on random stores, including values at the proven bounds ----

SPECS = [BTC, ETH, FINE]
HALF_BOUND = 2 * NOTIONAL_BOUND_ATOMS  # isolated margin and |cross wallet| limits (2^61)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[MarkedStore], np.ndarray, int, int]:
    n_accounts = draw(st.one_of(st.integers(1, 6), st.integers(7, 30)))
    specs = draw(st.permutations(SPECS))[: draw(st.integers(1, 3))]
    markets: list[MarkedStore] = []
    cross_upnl = [0] * n_accounts
    cross_mm = [0] * n_accounts
    for spec in specs:
        k = spec.atoms_per_tick_lot
        mark = draw(
            st.one_of(
                st.integers(1, 2_000),
                st.integers(1, spec.max_price_ticks),
                st.just(spec.max_price_ticks),
            )
        )
        lots_bound = NOTIONAL_BOUND_ATOMS // (mark * k)  # |size| x mark x k <= 2^60
        store = PositionStore(capacity=draw(st.integers(1, 3)))
        previous: tuple[int, int, bool, int] | None = None
        for account in range(n_accounts):
            if not draw(st.booleans()):
                continue
            if previous is not None and draw(st.integers(0, 3)) == 0:
                size, cost_atoms, iso, delta = previous  # a twin: exact ties
            else:
                magnitude = draw(
                    st.one_of(
                        st.integers(1, 50),
                        st.integers(1, lots_bound),
                        st.sampled_from([lots_bound, max(1, lots_bound - 1)]),
                    )
                )
                size = magnitude * draw(st.sampled_from([1, -1]))
                entry_bound = NOTIONAL_BOUND_ATOMS // (magnitude * k)
                entry = draw(
                    st.one_of(
                        st.just(min(mark, entry_bound)),
                        st.integers(1, entry_bound),
                        st.just(entry_bound),
                    )
                )
                cost_atoms = size * entry * k
                iso = draw(st.booleans())
                delta = draw(st.one_of(st.sampled_from([-1, 0, 1]), st.integers(-(2**45), 2**45)))
            previous = (size, cost_atoms, iso, delta)
            upnl = size * mark * k - cost_atoms
            mm = spec.maintenance_margin_atoms(abs(size) * mark * k)
            if iso:
                margin = min(max(mm - upnl + delta, 0), HALF_BOUND)
                store.upsert(account, size, cost_atoms, isolated=True, margin_atoms=margin)
            else:
                store.upsert(account, size, cost_atoms)
                cross_upnl[account] += upnl
                cross_mm[account] += mm
        markets.append(MarkedStore(store, spec, mark))
    w = np.zeros(n_accounts, np.int64)
    for account in range(n_accounts):
        delta = draw(st.one_of(st.sampled_from([-1, 0, 1]), st.integers(-(2**45), 2**45)))
        target = cross_mm[account] - cross_upnl[account] + delta
        w[account] = min(max(target, -HALF_BOUND), HALF_BOUND)
    limit = draw(st.sampled_from([0, 1, 2, 3, 5, 1000]))
    chunk = draw(st.sampled_from([1, 2, 3, 65_536]))
    return markets, w, limit, chunk


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_vector_equals_scalar(scenario: tuple[list[MarkedStore], np.ndarray, int, int]) -> None:
    markets, w, limit, chunk = scenario
    expected = screen_scalar(markets, w, limit)
    got = Screener(chunk_rows=chunk).screen(markets, w, limit)
    assert got.liquidatable == expected.liquidatable
    assert got.total == expected.total
    if len(markets) <= 2:
        assert got.vectorized  # two symbols at 2^60 still fit the int64 proof


def test_decimal_helpers_agree_with_the_spec() -> None:
    assert cost(BTC, "1", "100000") == usdt("100000")
    assert cost(ETH, "-10", "4000") == -usdt("40000")
    assert Decimal(BTC.atoms_per_tick_lot) == BTC.tick_size * BTC.step_size * 10**6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_cached_cross_sums_give_the_full_answer(
    scenario: tuple[list[MarkedStore], np.ndarray, int, int], data: st.DataObject
) -> None:
    """One symbol ticks; the others' cross sums come from a cache (vector == scalar)."""
    markets, w, limit, chunk = scenario
    split = data.draw(st.integers(0, len(markets)))
    ticking, resting = markets[:split], markets[split:]
    sums = Screener(chunk).cross_sums(resting, len(w))
    scalar_sums = cross_sums_scalar(resting, len(w))
    assert all(np.array_equal(a, b) for a, b in zip(sums, scalar_sums, strict=True))
    got = Screener(chunk).screen(ticking, w, limit, others=sums)
    expected = screen_scalar(ticking, w, limit, others=scalar_sums)
    assert got.liquidatable == expected.liquidatable
    assert got.total == expected.total
    # The full screen less the isolated positions of the symbols that did not tick.
    resting_symbols = {m.spec.symbol for m in resting}
    full = screen_scalar(markets, w, 10**6).liquidatable
    assert screen_scalar(ticking, w, 10**6, others=scalar_sums).liquidatable == [
        x for x in full if x.symbol not in resting_symbols
    ]


def test_cross_sums_reject_mismatched_arrays() -> None:
    markets, w = cross_btc_long_eth_short(usdt("7593"))
    sums = Screener().cross_sums(markets[1:], len(w) + 1)
    with pytest.raises(TypeError):
        Screener().screen(markets[:1], w, 10, others=sums)
    sums = Screener().cross_sums(markets[1:], len(w))
    assert isinstance(sums, CrossSums)
    assert Screener().screen(markets[:1], w, 10, others=sums).liquidatable == [
        Liquidatable(3, None, usdt("593"), usdt("593"))
    ]
