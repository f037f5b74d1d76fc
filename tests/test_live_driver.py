"""The live market's driver alone on an exchange (no server): a scenario's path on the wall
clock at a speed, the simulator's makers quoting around it, shocks injected from now on.

The sequencer's part is played here by `tick`: it stamps the wall clock on the engine
(`AdvanceClock`), then steps the driver, as every writing batch of the server does. The tape's
tests at the end also run one through a real server (tests/server_harness.py).
"""

from __future__ import annotations

import itertools
import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from perpex.core.messages import AdvanceClock, Event, OrderRejected, TradeExecuted
from perpex.exchange import Exchange
from perpex.history import load_funding_schedule, parse_utc_ns
from perpex.live.driver import DEFAULT_SCENARIO, MAX_STEP_WALL_NS, ScenarioDriver
from perpex.live.tape import MAX_POSITION_BTC, MAX_TAPE_PER_MINUTE, TAPE_ACCOUNT
from perpex.server.backfill import HISTORY_MINUTES, NS_PER_MINUTE
from perpex.sim import scenario as scenario_module
from perpex.sim.data import load_candles
from perpex.sim.scenario import load_scenario, loads_scenario
from perpex.sim.scenario_model import Scenario
from server_harness import serve
from test_server_ccxt import exchange_for

S: Final = 1_000_000_000  # ns per second
START_S: Final = 1_800_000_000  # the exchange's wall clock at start (2027-01-15)
SYMBOL: Final = "BTCUSDT"
MIN_NS: Final = NS_PER_MINUTE


def flat(price: float = 60_000.0, steps: int = 3_600, step_seconds: float = 1.0) -> Scenario:
    """A path that never moves (GBM with sigma 0): what a shock does is all there is to see."""
    return loads_scenario(
        f"""
        name = "flat"
        question = "Flat?"
        [path]
        start_price = {price}
        steps = {steps}
        step_seconds = {step_seconds}
        sigma = 0.0
        [exchange]
        mark_price = "index"
        [agents.makers]
        count = 2
        """,
        "flat.toml",
    )


def climbing(step_return: float, steps: int, step_seconds: float) -> Scenario:
    """Each step of the path `step_return` higher than the last (a `pattern` path)."""
    return loads_scenario(
        f"""
        name = "climbing"
        question = "Up?"
        [path]
        kind = "pattern"
        start_price = 50000.0
        steps = {steps}
        step_seconds = {step_seconds}
        returns = [{step_return}]
        [exchange]
        mark_price = "index"
        [agents.makers]
        count = 1
        """,
        "climbing.toml",
    )


def started(driver: ScenarioDriver) -> tuple[Exchange, int]:
    ex = Exchange(start_time=START_S, **driver.exchange_options())
    now_ns = ex.time_ns
    driver.start(ex, now_ns)
    return ex, now_ns


def tick(ex: Exchange, driver: ScenarioDriver, now_ns: int) -> None:
    ex.submit([AdvanceClock(now_ns)])
    driver.step(ex, now_ns)


def run_for(ex: Exchange, driver: ScenarioDriver, now_ns: int, seconds: int) -> int:
    """`seconds` ticks of one wall second; returns the new wall time."""
    for _ in range(seconds):
        now_ns += S
        tick(ex, driver, now_ns)
    return now_ns


def index_ticks(ex: Exchange) -> int:
    return int(ex.engine.state.markets[SYMBOL].index_ticks)


def makers_orders(ex: Exchange, driver: ScenarioDriver) -> int:
    return sum(len(ex.open_orders(m.account, SYMBOL)) for m in driver.makers.makers)


# -- configuration ------------------------------------------------------------------------------
def test_default_scenario_is_the_calm_live_market_and_its_options_never_change() -> None:
    driver = ScenarioDriver()
    assert driver.name == DEFAULT_SCENARIO == "live"
    assert driver.exchange_options() == ScenarioDriver(None, speed=5).exchange_options()
    options = driver.exchange_options()
    assert "journal" not in options and "start_time" not in options
    assert options["mark_price"] == "binance" and options["insurance_fund"] == "1000000.0"
    (market,) = options["markets"]
    assert market.symbol == SYMBOL and market.taker_fee == "0.0005"
    ex = Exchange(**options)
    assert ex.insurance_fund() == Decimal("1000000")


def test_covid_replay_keeps_its_exchange_section_but_not_its_replayed_funding() -> None:
    covid = ScenarioDriver("covid-2020-03-12", speed=60)
    options = covid.exchange_options()
    assert options["insurance_fund"] == "200000.0"
    assert "funding_history" not in options  # 2020's rates do not cover today's funding times
    assert options["liquidation"].clearance_fee_ppm == 5_000


# -- start: a live book ---------------------------------------------------------------------------
def test_start_funds_the_makers_seeds_the_index_and_quotes_both_sides() -> None:
    driver = ScenarioDriver()
    ex, _ = started(driver)
    assert index_ticks(ex) == 780_000  # live.toml's start price, 78,000.0
    for m in driver.makers.makers:
        assert ex.account(m.account).wallet_balance == Decimal("20000000")
        assert ex.position(m.account, SYMBOL).leverage == 20
    book = ex.order_book(SYMBOL, 50)
    bid_btc = sum(q for _, q in book["bids"])
    ask_btc = sum(q for _, q in book["asks"])
    assert len(book["bids"]) >= 20 and len(book["asks"]) >= 20
    assert bid_btc > 50 and ask_btc > 50  # the real book's shape: tens of BTC within 1 %
    best_bid, best_ask = book["bids"][0][0], book["asks"][0][0]
    assert best_bid < Decimal("78000") < best_ask


def test_same_seed_same_market_other_seed_other_path() -> None:
    hashes = []
    paths = []
    for seed in (0, 0, 1):
        driver = ScenarioDriver(seed=seed)
        ex, now_ns = started(driver)
        seen = []
        for _ in range(60):
            now_ns = run_for(ex, driver, now_ns, 1)
            seen.append(index_ticks(ex))
        hashes.append(ex.state_hash())
        paths.append(seen)
    assert hashes[0] == hashes[1] and paths[0] == paths[1]
    assert paths[0] != paths[2]


# -- the path clock -----------------------------------------------------------------------------
def test_the_path_moves_speed_times_the_wall_clock_between_rows_interpolated() -> None:
    # +0.1 % per one-minute step: at 60x ten wall seconds are ten steps; at 1x a sixth of one.
    fast = ScenarioDriver(climbing(0.001, 100, 60.0), speed=60)
    ex, now_ns = started(fast)
    assert index_ticks(ex) == 500_000
    run_for(ex, fast, now_ns, 10)
    assert index_ticks(ex) == round(500_000 * 1.001**10)
    assert fast.status()["pathSeconds"] == 600.0

    slow = ScenarioDriver(climbing(0.001, 100, 60.0), speed=1)
    ex, now_ns = started(slow)
    run_for(ex, slow, now_ns, 10)
    assert index_ticks(ex) == round(500_000 + 500 * 10 / 60)  # 500 ticks a step, 1/6 of it


def test_pause_freezes_the_path_and_resume_carries_on_without_a_jump() -> None:
    driver = ScenarioDriver(climbing(0.001, 100, 1.0), speed=1)
    ex, now_ns = started(driver)
    now_ns = run_for(ex, driver, now_ns, 5)
    before = index_ticks(ex)
    driver.pause()
    now_ns = run_for(ex, driver, now_ns, 30)
    assert index_ticks(ex) == before and driver.status()["paused"] is True
    assert driver.status()["pathSeconds"] == 5.0
    driver.resume()
    run_for(ex, driver, now_ns, 1)
    assert index_ticks(ex) == round(before * 1.001)  # one step on, not thirty


def test_a_speed_change_keeps_the_price_continuous() -> None:
    driver = ScenarioDriver(climbing(0.001, 1_000, 1.0), speed=1)
    ex, now_ns = started(driver)
    now_ns = run_for(ex, driver, now_ns, 10)
    at_10 = index_ticks(ex)
    driver.set_speed(10)
    now_ns = run_for(ex, driver, now_ns, 1)
    assert index_ticks(ex) == round(at_10 * 1.001**10)  # from where it was, ten steps a second
    assert driver.status()["pathSeconds"] == 20.0
    with pytest.raises(ValueError, match="speed"):
        driver.set_speed(0)
    with pytest.raises(ValueError, match="speed"):
        driver.set_speed(math.inf)


def test_speeding_up_does_not_scare_the_makers_out_of_the_book() -> None:
    # At 100x each tick moves the path 10 times as far (sqrt(100)): to makers that learned
    # the 1x market, a storm, unless their calm volatility is rescaled with the speed.
    driver = ScenarioDriver(speed=1)
    ex, now_ns = started(driver)
    now_ns = run_for(ex, driver, now_ns, 60)
    depth_1x = makers_orders(ex, driver)
    driver.set_speed(100)
    now_ns = run_for(ex, driver, now_ns, 60)
    assert all(m.reaction == 0.0 for m in driver.makers.makers)
    driver.set_speed(1)
    run_for(ex, driver, now_ns, 60)
    assert all(m.reaction == 0.0 for m in driver.makers.makers)
    assert makers_orders(ex, driver) == depth_1x == 80  # 2 makers x 20 levels x 2 sides


def test_a_stalled_server_resumes_the_path_instead_of_jumping() -> None:
    driver = ScenarioDriver(climbing(0.001, 1_000, 1.0), speed=1)
    ex, now_ns = started(driver)
    tick(ex, driver, now_ns + 3_600 * S)  # an hour asleep
    assert driver.status()["pathSeconds"] == MAX_STEP_WALL_NS / S


def test_the_path_loops_rescaled_from_where_it_ended() -> None:
    # 5 steps of +1 % a second: at its end the path starts again from its last price.
    driver = ScenarioDriver(climbing(0.01, 5, 1.0), speed=1)
    ex, now_ns = started(driver)
    seen = [index_ticks(ex)]
    for _ in range(16):
        now_ns = run_for(ex, driver, now_ns, 1)
        seen.append(index_ticks(ex))
    assert driver.status()["loops"] == 2
    moves = [b / a - 1 for a, b in itertools.pairwise(seen)]
    # every second +1 %, except the last step of each 6-second loop, which holds
    assert all(abs(m - 0.01) < 1e-4 or m == 0 for m in moves), moves
    assert seen[-1] > seen[0] * 1.01**12


# -- shocks ---------------------------------------------------------------------------------------
def test_a_drop_of_10_pct_over_a_minute_slides_linearly_then_stays() -> None:
    driver = ScenarioDriver(flat(), speed=1)
    ex, now_ns = started(driver)
    assert index_ticks(ex) == 600_000
    shock = driver.inject("drop", {"percent": 10, "minutes": 1})
    assert shock["kind"] == "drop" and shock["seconds"] == 60.0
    now_ns = run_for(ex, driver, now_ns, 30)
    assert index_ticks(ex) == 570_000  # halfway: -5 %
    now_ns = run_for(ex, driver, now_ns, 30)
    assert index_ticks(ex) == 540_000  # -10 %
    run_for(ex, driver, now_ns, 60)
    assert index_ticks(ex) == 540_000  # the path goes on from the new level
    status = driver.status()
    assert status["shocks"] == [] and status["recentShocks"][0]["kind"] == "drop"
    assert ex.mark_price(SYMBOL) == Decimal("54000")  # mark = index in this scenario


def test_a_drop_moves_the_live_market_about_10_pct() -> None:
    driver = ScenarioDriver(speed=1)
    ex, now_ns = started(driver)
    before = index_ticks(ex)
    driver.inject("drop", {"percent": "10", "minutes": "1"})
    run_for(ex, driver, now_ns, 61)
    assert 0.89 < index_ticks(ex) / before < 0.91  # the GBM moves ~0.04 % a minute


def test_a_gap_empties_the_makers_side_then_they_come_back() -> None:
    driver = ScenarioDriver(flat(), speed=1)
    ex, now_ns = started(driver)
    assert makers_orders(ex, driver) > 40
    driver.inject("gap", {"seconds": 30})
    now_ns = run_for(ex, driver, now_ns, 1)
    assert makers_orders(ex, driver) == 0
    assert ex.order_book(SYMBOL, 5) == {"bids": [], "asks": []}
    assert driver.status()["makersAway"] is True
    now_ns = run_for(ex, driver, now_ns, 29)
    assert makers_orders(ex, driver) > 40 and driver.status()["makersAway"] is False


def test_a_divergence_moves_the_local_book_while_the_index_holds() -> None:
    driver = ScenarioDriver(flat(), speed=1)
    ex, now_ns = started(driver)
    driver.inject("divergence", {"percent": 3, "seconds": 60})
    run_for(ex, driver, now_ns, 1)
    assert index_ticks(ex) == 600_000
    best_bid = ex.order_book(SYMBOL, 1)["bids"][0][0]
    assert best_bid > Decimal("61700")  # around 61,800, not 60,000


@pytest.mark.parametrize(
    ("kind", "params", "needle"),
    [
        ("flash", {"percent": 10}, "kind"),
        ("drop", {"percent": 100, "minutes": 1}, "drop percent"),
        ("drop", {"percent": 10, "minutes": -1}, "negative"),
        ("pump", {"percent": 2000}, "pump percent"),
        ("gap", {"seconds": 0}, "seconds"),
        ("gap", {"percent": 5, "seconds": 10}, "no percent"),
        ("divergence", {"percent": 0, "seconds": 10}, "divergence percent"),
        ("drop", {"percent": "ten"}, "number"),
        ("drop", {"percent": 10, "hours": 1}, "unknown parameter"),
        ("drop", {"percent": 10, "minutes": 1e9}, "at most"),
    ],
)
def test_bad_shocks_are_refused_with_the_reason(
    kind: str, params: dict[str, object], needle: str
) -> None:
    driver = ScenarioDriver(flat())
    with pytest.raises(ValueError, match=needle):
        driver.inject(kind, params)
    assert driver.status()["shocks"] == []


# -- restart -------------------------------------------------------------------------------------
def test_a_restart_carries_on_from_the_recovered_index_without_new_deposits() -> None:
    first = ScenarioDriver(climbing(0.001, 1_000, 1.0), speed=1)
    ex, now_ns = started(first)
    now_ns = run_for(ex, first, now_ns, 100)
    recovered = index_ticks(ex)
    assert recovered == round(500_000 * 1.001**100)
    wallets = {m.account: ex.account(m.account).wallet_balance for m in first.makers.makers}
    second = ScenarioDriver(climbing(0.001, 1_000, 1.0), speed=1)  # a new process
    now_ns += S
    ex.submit([AdvanceClock(now_ns)])
    second.start(ex, now_ns)
    assert abs(index_ticks(ex) - recovered) <= 1  # not back at 50,000
    assert {m.account: ex.account(m.account).wallet_balance for m in first.makers.makers} == (
        wallets
    )
    run_for(ex, second, now_ns, 1)
    assert index_ticks(ex) == round(recovered * 1.001)


def test_a_replay_by_name_path_or_object_is_one_market_at_its_own_dates() -> None:
    path = Path(scenario_module.__file__).parent / "scenarios" / "covid-2020-03-12.toml"
    by_object = ScenarioDriver(load_scenario("covid-2020-03-12"), speed=60)
    by_path = ScenarioDriver(path, speed=60)
    by_name = ScenarioDriver("covid-2020-03-12", speed=60)
    assert by_object.exchange_options() == by_name.exchange_options()
    assert by_path.exchange_options() == by_name.exchange_options()
    ex, now_ns = started(by_name)
    assert index_ticks(ex) > 0
    assert by_name.status()["scenarioTimeUtc"] == "2020-03-12T00:00:00Z"
    run_for(ex, by_name, now_ns, 60)  # an hour of Black Thursday
    assert by_name.status()["scenarioTimeUtc"] == "2020-03-12T01:00:00Z"


# -- the tape: a served market trades -------------------------------------------------------------
def tape_run(
    driver: ScenarioDriver, seconds: int, tick_s: float = 1.0
) -> tuple[Exchange, int, list[Event], int]:
    """`seconds` of wall time in ticks of `tick_s`: (exchange, wall time, the events after the
    start, the tape's largest |position| in lots seen after a tick)."""
    ex, now_ns = started(driver)
    ex.take_events()
    events: list[Event] = []
    largest_lots = 0
    for _ in range(round(seconds / tick_s)):
        now_ns += round(tick_s * S)
        tick(ex, driver, now_ns)
        events += ex.take_events()
        largest_lots = max(largest_lots, abs(tape_lots(ex)))
    return ex, now_ns, events, largest_lots


def tape_lots(ex: Exchange) -> int:
    acct = ex.engine.accounts.get(TAPE_ACCOUNT)
    pos = acct.positions.get(SYMBOL) if acct is not None else None
    return pos.size_lots if pos is not None else 0


def tape_trades(events: list[Event]) -> list[TradeExecuted]:
    return [e for e in events if type(e) is TradeExecuted and e.taker_account == TAPE_ACCOUNT]


def test_the_tape_trades_about_20_a_minute_against_the_makers_by_default() -> None:
    driver = ScenarioDriver()  # live.toml, the tape at its default rate
    ex, _, events, _ = tape_run(driver, 120)
    trades = tape_trades(events)
    # Poisson(40) over two minutes: 25 to 55 is beyond 2.3 standard deviations either way.
    assert 25 <= len(trades) <= 55, len(trades)
    makers = {m.account for m in driver.makers.makers}
    assert {t.maker_account for t in trades} <= makers
    assert {t.taker_side for t in trades} == {1, -1}
    lots = sorted(t.qty_lots for t in trades)
    assert lots[0] >= 1 and 3 <= lots[len(lots) // 2] <= 8  # around 0.005 BTC: 5 lots
    assert not [e for e in events if type(e) is OrderRejected]
    # At the makers' quotes around the path: within 0.1 % of the index.
    index = index_ticks(ex)
    assert all(abs(t.price_ticks / index - 1) < 0.001 for t in trades[-10:])
    assert ex.account(TAPE_ACCOUNT).wallet_balance > Decimal("9999000")  # funded 10M, fees
    assert driver.status()["tapePerMinute"] == 20.0


def test_the_tape_rate_is_wall_time_whatever_the_speed_and_the_tick() -> None:
    counts = []
    for speed, tick_s in ((1, 1.0), (60, 1.0), (1, 0.2)):
        driver = ScenarioDriver(flat(), speed=speed, tape_per_minute=120)
        counts.append(len(tape_trades(tape_run(driver, 120, tick_s)[2])))
    # Poisson(240) each: 200 to 280 is 2.6 standard deviations.
    assert all(200 <= n <= 280 for n in counts), counts


def test_the_tape_leans_against_its_position_which_stays_small() -> None:
    driver = ScenarioDriver(flat(), tape_per_minute=600)  # 10 a second for 10 minutes
    ex, _, events, largest_lots = tape_run(driver, 600)
    trades = tape_trades(events)
    assert len(trades) > 5_000
    bought_lots = sum(t.qty_lots for t in trades if t.taker_side == 1)
    assert 0.45 < bought_lots / sum(t.qty_lots for t in trades) < 0.55
    max_lots = round(MAX_POSITION_BTC / 0.001)
    assert largest_lots <= max_lots  # 0.1 BTC: a few thousand USDT, never near liquidation
    # The makers hold the other side, so their inventory from the tape stays as small.
    makers_lots = [ex.engine.accounts[m.account].positions[SYMBOL].size_lots
                   for m in driver.makers.makers]  # fmt: skip
    assert sum(makers_lots) == -tape_lots(ex)
    assert all(abs(lots) <= max_lots for lots in makers_lots)


def test_same_seed_same_tape_other_seed_other_tape() -> None:
    runs = []
    for seed in (7, 7, 8):
        ex, _, events, _ = tape_run(ScenarioDriver(flat(), seed=seed, tape_per_minute=60), 120)
        runs.append((ex.state_hash(), [(t.qty_lots, t.taker_side) for t in tape_trades(events)]))
    assert runs[0] == runs[1]
    assert runs[0][1] != runs[2][1]


def test_no_tape_while_paused_or_while_a_gap_holds_the_makers_out() -> None:
    driver = ScenarioDriver(flat(), tape_per_minute=600)
    ex, now_ns = started(driver)
    now_ns = run_for(ex, driver, now_ns, 5)
    assert driver.status()["tapeOrders"] > 0
    # Paused: the market stands still, the tape too (and no burst for the pause on resume).
    driver.pause()
    ex.take_events()
    now_ns = run_for(ex, driver, now_ns, 30)
    assert tape_trades(ex.take_events()) == []
    driver.resume()
    now_ns = run_for(ex, driver, now_ns, 1)
    assert 1 <= len(tape_trades(ex.take_events())) <= 25  # one second's, about 10
    # A gap: no book to trade against, and no orders sent to expire against nothing.
    driver.inject("gap", {"seconds": 20})
    now_ns = run_for(ex, driver, now_ns, 1)  # the makers pull out on this tick
    sent = driver.status()["tapeOrders"]
    ex.take_events()
    now_ns = run_for(ex, driver, now_ns, 15)
    assert driver.status()["tapeOrders"] == sent
    assert [e for e in ex.take_events() if getattr(e, "account", None) == TAPE_ACCOUNT] == []
    run_for(ex, driver, now_ns, 10)  # the makers are back: so is the tape
    assert driver.status()["tapeOrders"] > sent


def test_tape_0_turns_it_off_and_a_restart_does_not_fund_it_again() -> None:
    quiet = ScenarioDriver(flat(), tape_per_minute=0)
    ex, _, events, _ = tape_run(quiet, 60)
    assert tape_trades(events) == [] and TAPE_ACCOUNT not in ex.engine.accounts
    first = ScenarioDriver(flat(), tape_per_minute=60)
    ex, now_ns, _, _ = tape_run(first, 30)
    wallet = ex.account(TAPE_ACCOUNT).wallet_balance
    second = ScenarioDriver(flat(), tape_per_minute=60)  # a new process on the same journal
    now_ns += S
    ex.submit([AdvanceClock(now_ns)])
    second.start(ex, now_ns)
    assert ex.account(TAPE_ACCOUNT).wallet_balance == wallet


@pytest.mark.parametrize("rate", [-1, math.inf, math.nan, MAX_TAPE_PER_MINUTE + 1, "20", True])
def test_a_bad_tape_rate_is_refused(rate: object) -> None:
    with pytest.raises(ValueError, match="tape rate"):
        ScenarioDriver(flat(), tape_per_minute=rate)  # type: ignore[arg-type]


@pytest.mark.server
def test_a_served_market_has_trades_and_candles_within_seconds(tmp_path: Path) -> None:
    driver = ScenarioDriver(flat(), tape_per_minute=1_200)  # 20 a second: quick to see
    with serve(tmp_path, driver=driver, tick_seconds=0.2) as s, s.client() as client:
        deadline = time.monotonic() + 10
        while True:
            time.sleep(0.5)
            trades = client.get("/fapi/v1/trades", params={"symbol": SYMBOL}).json()
            candles = client.get(
                "/fapi/v1/klines", params={"symbol": SYMBOL, "interval": "1m"}
            ).json()
            if (trades and candles) or time.monotonic() > deadline:
                break
    assert len(trades) > 0 and len(candles) >= 1, (trades, candles)
    open_, high, low, close, volume = (Decimal(x) for x in candles[-1][1:6])
    assert low <= min(open_, close) <= max(open_, close) <= high and volume > 0
    assert abs(close / Decimal(60_000) - 1) < Decimal("0.001")  # at the makers' quotes
    assert all(Decimal(t["qty"]) > 0 and Decimal(t["price"]) > 0 for t in trades)


# -- the past a fresh server shows (perpex.live.history) --------------------------------------
def gbm_scenario(sigma: float = 0.0001) -> Scenario:
    return loads_scenario(
        f"""
        name = "walk"
        question = "Walk?"
        [path]
        start_price = 60000.0
        steps = 3600
        step_seconds = 1.0
        sigma = {sigma}
        [exchange]
        mark_price = "index"
        [agents.makers]
        count = 1
        """,
        "walk.toml",
    )


def test_a_synthetic_history_walks_back_from_the_start_price_seeded() -> None:
    history = ScenarioDriver(gbm_scenario(), seed=7).history(SYMBOL, 600)
    assert history is not None and len(history) == 600
    o, h, lo, c = history.last.T
    assert int(c[-1]) == 600_000  # the path starts where its past ended
    assert (o[1:] == c[:-1]).all()  # a continuous walk: each minute opens at the last close
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    assert (h > lo).mean() > 0.9  # minutes with a range, not a line of closes
    # A random walk of sigma 1e-4 a second: about 0.08 % a minute.
    moves = np.diff(np.log(c.astype(float)))
    assert 0.0005 < moves.std() < 0.0012, moves.std()
    assert (history.index == history.last).all() and (history.premium == 0).all()
    # The tape's prints: ~20 a minute of ~0.007 BTC.
    assert 15 < history.count.mean() < 25 and 100 < history.volume_lots.mean() < 180
    assert (history.taker_volume_lots <= history.volume_lots).all()
    assert (history.quote == history.volume_lots * ((o + h + lo + c) // 4)).all()
    again = ScenarioDriver(gbm_scenario(), seed=7).history(SYMBOL, 600)
    other = ScenarioDriver(gbm_scenario(), seed=8).history(SYMBOL, 600)
    assert again is not None and other is not None
    assert all((a == b).all() for a, b in zip(history.arrays().values(),
                                               again.arrays().values(), strict=True))  # fmt: skip
    assert not (other.last == history.last).all()
    assert ScenarioDriver(gbm_scenario()).history("ETHUSDT", 600) is None


def test_a_replay_history_is_its_data_before_the_start_minute_by_minute() -> None:
    driver = ScenarioDriver("covid-2020-03-12")
    history = driver.history(SYMBOL, 48 * 60)
    assert history is not None and len(history) == 48 * 60
    spec = Exchange(**driver.exchange_options())._specs[SYMBOL]
    data = load_candles("BTCUSDT-1h", spec, start="2020-03-10", end="2020-03-12")
    marks = load_candles("BTCUSDT-1h-mark", spec, start="2020-03-10", end="2020-03-12")
    hours = history.last.reshape(48, 60, 4)
    # Each hour of 1m candles aggregates to the data's 1h candle exactly.
    assert (hours[:, 0, 0] == data.open_ticks).all() and (hours[:, -1, 3] == data.close_ticks).all()
    assert (hours[:, :, 1].max(axis=1) == data.high_ticks).all()
    assert (hours[:, :, 2].min(axis=1) == data.low_ticks).all()
    assert (history.volume_lots.reshape(48, 60).sum(axis=1) == data.volume_lots).all()
    # The index a replay publishes is its mark series: so is the index's past.
    index_hours = history.index.reshape(48, 60, 4)
    assert (index_hours[:, 0, 0] == marks.open_ticks).all()
    assert (index_hours[:, :, 1].max(axis=1) == marks.high_ticks).all()
    assert (history.mark == history.index).all()


def test_a_replay_brings_binance_settlements_shifted_as_its_candles() -> None:
    """covid-2020-03-12 (``funding = "binance"``): the shipped series' 90 settlements of the 30
    days up to its start, as offsets from it (the candles' shift), the mark from the history's
    minute that ends at each; a synthetic path brings none (the server computes them)."""
    history = ScenarioDriver("covid-2020-03-12").history(SYMBOL, HISTORY_MINUTES)
    assert history is not None and history.funding is not None
    start_ns = parse_utc_ns("2020-03-12T00:00:00Z")
    real = load_funding_schedule().between(start_ns - HISTORY_MINUTES * MIN_NS + 1, start_ns)
    funding = history.funding
    assert len(funding) == len(real) == 90
    assert (funding.offset_ns == np.array([t - start_ns for t, _ in real])).all()
    assert funding.rate_e8.tolist() == [r for _, r in real]
    assert funding.rate_divisor.tolist() == [1] * 90
    minute = HISTORY_MINUTES + funding.offset_ns // MIN_NS - 1  # the minute ending at it
    assert (funding.mark_ticks == history.mark[minute, 3]).all()
    assert funding.offset_ns[-1] == 0 and funding.mark_ticks[-1] == history.mark[-1, 3]
    assert (min(funding.rate_e8), max(funding.rate_e8)) == (10_000, 300_000)
    short = ScenarioDriver("covid-2020-03-12").history(SYMBOL, 48 * 60)
    assert short is not None and short.funding is not None
    assert short.funding.rows(0) == funding.tail(48 * 60).rows(0) and len(short.funding) == 6
    synthetic = ScenarioDriver(gbm_scenario(), seed=7).history(SYMBOL, 600)
    assert synthetic is not None and synthetic.funding is None


def kline_rows(client: Any, path: str, **params: Any) -> list[list[Any]]:
    answer = client.get(path, params={"symbol": SYMBOL, **params})
    assert answer.status_code == 200, answer.text
    rows: list[list[Any]] = answer.json()
    return rows


@pytest.mark.server
def test_a_fresh_server_has_30_days_of_candles_and_funding_restart_same(tmp_path: Path) -> None:
    with serve(tmp_path, driver=ScenarioDriver(gbm_scenario(), seed=3)) as s, s.client() as c:
        started_ms = s.state.started_ns // 1_000_000
        minutes = kline_rows(c, "/fapi/v1/klines", interval="1m", limit=1500)
        hours = kline_rows(c, "/fapi/v1/klines", interval="1h", limit=500)
        marks = kline_rows(c, "/fapi/v1/markPriceKlines", interval="1h", limit=500)
        mark_minutes = kline_rows(c, "/fapi/v1/markPriceKlines", interval="1m", limit=1500)
        index = c.get(
            "/fapi/v1/indexPriceKlines", params={"pair": SYMBOL, "interval": "4h", "limit": 1500}
        ).json()
        ticker = c.get("/fapi/v1/ticker/24hr", params={"symbol": SYMBOL}).json()
        info = c.get("/fapi/v1/exchangeInfo").json()
        exchange = exchange_for(s.base_url, s.api_key, s.secret)
        ohlcv = exchange.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=500)
        since = started_ms - 3 * 86_400_000
        from_since = exchange.fetch_ohlcv("BTC/USDT:USDT", "15m", since=since, limit=10)
        funding = c.get("/fapi/v1/fundingRate", params={"symbol": SYMBOL, "limit": 1000}).json()
        first_funding_ms = funding[0]["fundingTime"] if funding else started_ms
        # (from the first: a live settlement, should one fall in these seconds, comes after)
        ccxt_funding = exchange.fetch_funding_rate_history(
            "BTC/USDT:USDT", first_funding_ms, limit=90
        )
        funding_since = exchange.fetch_funding_rate_history("BTC/USDT:USDT", since, limit=4)
    assert len(minutes) == 1500 and len(hours) == 500 and len(marks) == 500
    # Listed when the candles begin, 30 days before the server did.
    (listed,) = [m["onboardDate"] for m in info["symbols"] if m["symbol"] == SYMBOL]
    assert listed == started_ms // 60_000 * 60_000 - 30 * 86_400_000
    assert len(ohlcv) == 500 and [r[0] for r in ohlcv] == [r[0] for r in hours]
    assert from_since[0][0] == since // 900_000 * 900_000 + 900_000 * (since % 900_000 > 0)
    assert len(from_since) == 10
    # Contiguous minutes, most of them before the server began.
    opens = [r[0] for r in minutes]
    assert opens == list(range(opens[0], opens[-1] + 1, 60_000))
    assert sum(1 for r in hours if r[6] < started_ms) >= 499
    assert all(Decimal(r[5]) > 0 and r[8] > 0 for r in hours[:-1])  # traded hours
    # 30 days of 4h candles: 180 (and the one the server is in), the first maybe partial.
    assert 180 <= len(index) <= 182
    assert Decimal(ticker["volume"]) > 100 and ticker["count"] > 20_000
    assert ticker["firstId"] >= -1 and ticker["firstId"] < 2**31
    # The funding of those 30 days: the interest rate at each 00:00, 08:00, 16:00 UTC.
    eight_h_ms = 8 * 3_600_000
    end_ms = started_ms // 60_000 * 60_000
    first_ms = (end_ms - 30 * 86_400_000) // eight_h_ms * eight_h_ms + eight_h_ms
    # (the past only: a live settlement at a funding time in these seconds would follow it)
    funding = [f for f in funding if f["fundingTime"] <= end_ms]
    assert [f["fundingTime"] for f in funding] == list(range(first_ms, end_ms + 1, eight_h_ms))
    assert len(funding) == 90 and {f["fundingRate"] for f in funding} == {"0.00010000"}
    # Each at the mark of the minute that ends at it (the last 25 hours' 1m mark candles).
    mark_closes = {r[0] + 60_000: r[4] for r in mark_minutes}
    recent = [f for f in funding if f["fundingTime"] in mark_closes]
    assert len(recent) >= 3
    assert all(f["markPrice"] == mark_closes[f["fundingTime"]] for f in recent)
    assert [(f["timestamp"], f["fundingRate"]) for f in ccxt_funding] == [
        (f["fundingTime"], 0.0001) for f in funding
    ]
    assert [f["timestamp"] for f in funding_since] == [
        f["fundingTime"] for f in funding if f["fundingTime"] >= since
    ][:4]
    # A restart answers the same past (read from the data dir) ...
    with serve(tmp_path, driver=ScenarioDriver(gbm_scenario(), seed=3)) as s, s.client() as c:
        again = kline_rows(c, "/fapi/v1/klines", interval="1h", limit=500, endTime=since)
        funding_again = c.get("/fapi/v1/fundingRate", params={"symbol": SYMBOL}).json()
    assert [f for f in funding_again if f["fundingTime"] <= end_ms] == funding[-100:]
    before = [r for r in hours if r[0] <= since]
    assert len(again) == 500 and again[-len(before) :] == before and len(before) > 400
    # ... and so does one whose history file was lost: it is derived again, the same.
    for kept in (s.data_dir / "history").iterdir():
        kept.unlink()
    with serve(tmp_path, driver=ScenarioDriver(gbm_scenario(), seed=3)) as s, s.client() as c:
        derived = kline_rows(c, "/fapi/v1/klines", interval="1h", limit=500, endTime=since)
    assert derived == again
