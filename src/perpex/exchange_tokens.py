"""Leveraged tokens at the edge: the `Token` listing (decimals) and the facade's token calls.

A `Token` is what a user writes, in the decimal vocabulary of `Market` ("3" for +3x, "0.001"
for a 0.1 % fee, "00:02" for the daily rebalance time); `compile_tokens` checks it and turns it
into the engine's `perpex.core.tokens.TokenSpec` (integers: ppm, atoms, ns), raising a
ValueError that names the token and the field. The calls (`create_tokens`, `redeem_tokens`)
follow the facade's rules: every argument parsed once, strictly (a token quantity has at most
8 decimals, `TOKEN_UNITS` per token: more is refused, never rounded), one engine command, a
refusal raised as Binance's `ExchangeError` with nothing changed. The views (`token`,
`token_balance`, `token_nav_history`) read the engine's token state and the event log.

Units: token quantities in units of 1e-8 token, money in atoms, leverages and rates in ppm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Final

from perpex import parse
from perpex.convert import ns_to_datetime, token_units_to_decimal, token_view
from perpex.core.messages import (
    ClockAdvanced,
    CreateTokens,
    RedeemTokens,
    TokenHalted,
    TokenRebalanced,
    TokenResumed,
    TokensCreated,
    TokensRedeemed,
)
from perpex.core.tokens import MAX_LEVERAGE_PPM, MAX_TOKENS, NS_PER_DAY, TokenSpec, TokenState
from perpex.core.units import (
    PPM,
    DecimalLike,
    ParseError,
    atoms_to_decimal,
    to_atoms,
    to_ppm,
    to_units,
)
from perpex.exchange_base import ExchangeBase
from perpex.views import TokenInfo

TOKEN_NAME_RE: Final = re.compile(r"[A-Z0-9]{1,32}")  # as Binance writes BTCUP, ETHDOWN
_REBALANCE_TIME_RE: Final = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")
_NS: Final = Decimal("0.000000001")
_NS_PER_SECOND: Final = 1_000_000_000
_MAX_FEE_PPM: Final = 100_000  # fees below 10 % (the engine's bound)
# The NAV path's points: the events that carry a NAV.
_NAV_EVENTS: Final = (TokensCreated, TokensRedeemed, TokenRebalanced, TokenResumed)


@dataclass(frozen=True)
class Token:
    """A leveraged token listed on a market (MECHANICS.md §6), in decimals.

    `leverage` is the signed target (any non-zero value up to 10 either way, at most 6
    decimals: "3", "-1", "0.5"); `threshold` the drift that rebalances at once: at
    |leverage| x (1 + threshold) (a +3x token at 4x with the default); `rebalance_time` the
    daily rebalance, "HH:MM" or "HH:MM:SS" UTC; `slices` market orders `slice_interval` seconds
    apart make that rebalance a TWAP (1: at once); `initial_nav` the first token's price.
    """

    name: str
    symbol: str
    leverage: DecimalLike
    creation_fee: DecimalLike = "0.001"
    redemption_fee: DecimalLike = "0.001"
    rebalance_time: str | time = "00:02"
    threshold: DecimalLike = "0.333334"
    slices: int = 1
    slice_interval: DecimalLike = 60
    initial_nav: DecimalLike = "100"


def compile_token(token: Token) -> TokenSpec:
    """Check a `Token` and turn it into the engine's integers; ValueError says what is wrong."""
    name = token.name
    if not isinstance(name, str) or TOKEN_NAME_RE.fullmatch(name) is None:
        raise ValueError(f"token name {name!r} must be 1-32 upper-case letters and digits")

    def bad(what: str, value: object, rule: str) -> ValueError:
        return ValueError(f"token {name}: {what} {value!r} {rule}")

    def ppm(what: str, value: object, rule: str) -> int:
        try:
            return to_ppm(value)
        except ParseError:
            raise bad(what, value, rule) from None

    if not isinstance(token.symbol, str):
        raise bad("symbol", token.symbol, "must be a listed symbol")
    leverage_rule = "must be a non-zero number from -10 to 10 with at most 6 decimals"
    leverage_ppm = ppm("leverage", token.leverage, leverage_rule)
    if leverage_ppm == 0 or abs(leverage_ppm) > MAX_LEVERAGE_PPM:
        raise bad("leverage", token.leverage, leverage_rule)
    fees = []
    for what, value in (("creation_fee", token.creation_fee),
                        ("redemption_fee", token.redemption_fee)):  # fmt: skip
        rule = "must be a fraction in [0, 0.1) with at most 6 decimals (0.001 = 0.1 %)"
        fee_ppm = ppm(what, value, rule)
        if not 0 <= fee_ppm < _MAX_FEE_PPM:
            raise bad(what, value, rule)
        fees.append(fee_ppm)
    threshold_rule = "must be a fraction in (0, 10] with at most 6 decimals (0.333334: 3x -> 4x)"
    threshold_ppm = ppm("threshold", token.threshold, threshold_rule)
    if not 0 < threshold_ppm <= 10 * PPM:
        raise bad("threshold", token.threshold, threshold_rule)
    if type(token.slices) is not int or token.slices < 1:
        raise bad("slices", token.slices, "must be a positive int")
    try:
        interval_ns = to_units(token.slice_interval, _NS, positive=True)
    except ParseError:
        raise bad("slice_interval", token.slice_interval, "must be positive seconds") from None
    try:
        nav_atoms = to_atoms(token.initial_nav, positive=True)
    except ParseError:
        raise bad("initial_nav", token.initial_nav, "must be a positive USDT amount") from None
    try:
        return TokenSpec(
            name, token.symbol, leverage_ppm, fees[0], fees[1],
            _time_of_day_ns(name, token.rebalance_time), threshold_ppm, token.slices,
            interval_ns, nav_atoms,
        )  # fmt: skip
    except ValueError as exc:  # the engine's own bounds (slices in a day, ...)
        raise ValueError(f"token {name}: {exc}") from None


def _time_of_day_ns(name: str, value: object) -> int:
    """ "00:02" or "00:02:30" (UTC), or a `datetime.time` without an offset other than UTC."""
    if isinstance(value, time):
        offset = value.utcoffset()
        if offset is not None and offset != timedelta(0):
            raise ValueError(f"token {name}: rebalance_time {value!r} must be UTC")
        seconds = value.hour * 3_600 + value.minute * 60 + value.second
        return seconds * _NS_PER_SECOND + value.microsecond * 1_000
    match = _REBALANCE_TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"token {name}: rebalance_time {value!r} must be 'HH:MM' or 'HH:MM:SS'")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    ns = (hours * 3_600 + minutes * 60 + seconds) * _NS_PER_SECOND
    assert 0 <= ns < NS_PER_DAY
    return ns


def compile_tokens(
    tokens: Sequence[Token | TokenSpec], symbols: Mapping[str, object]
) -> list[TokenSpec]:
    """Every listed token compiled (a `TokenSpec` is taken as it is), on a listed symbol, each
    name once; ValueError otherwise."""
    if isinstance(tokens, str | bytes) or not isinstance(tokens, Sequence):
        raise ValueError("tokens must be a list of Token")
    if len(tokens) > MAX_TOKENS:
        raise ValueError(f"{len(tokens)} tokens: at most {MAX_TOKENS} may be listed")
    specs: list[TokenSpec] = []
    for token in tokens:
        if isinstance(token, Token):
            spec = compile_token(token)
        elif isinstance(token, TokenSpec):
            spec = token
        else:
            raise ValueError(f"tokens: {token!r} is not a Token")
        if spec.symbol not in symbols:
            raise ValueError(f"token {spec.name}: symbol {spec.symbol!r} is not listed")
        if any(s.name == spec.name for s in specs):
            raise ValueError(f"token {spec.name} is listed twice")
        specs.append(spec)
    return specs


class TokenCalls(ExchangeBase):
    """`Exchange`'s leveraged-token methods."""

    _log_start_ns: int  # the clock where the event log begins (see `token_nav_history`)

    def _token_state(self, token: object) -> TokenState:
        """The listed token's state; -1121 ("Invalid token.") for any other name."""
        return self.engine.tokens.tokens[self._check.token(token)]

    # -- creation and redemption --------------------------------------------------------------
    def create_tokens(self, account: str, token: str, quote_amount: object) -> Decimal:
        """Pay `quote_amount` USDT for new tokens at NAV, less the creation fee (to the
        exchange's fees); the token's pool then buys (or sells) its exposure through the book.
        Returns the tokens received (8 decimals)."""
        t = self._token_state(token)
        name = self._account(account)
        events = self._apply(CreateTokens(name, t.spec.name, parse.amount_atoms(quote_amount)))
        self._raise_rejection(events)
        created = events[0]
        assert isinstance(created, TokensCreated)
        return token_units_to_decimal(created.units)

    def redeem_tokens(self, account: str, token: str, quantity: object) -> Decimal:
        """Return `quantity` tokens (at most 8 decimals, at most the balance) for their share
        of the pool at NAV, less the redemption fee; the pool first trades their share of its
        position away through the book. Returns the USDT received, after the fee."""
        t = self._token_state(token)
        name = self._account(account)
        events = self._apply(RedeemTokens(name, t.spec.name, parse.token_units(quantity)))
        self._raise_rejection(events)
        redeemed = events[0]
        assert isinstance(redeemed, TokensRedeemed)
        return atoms_to_decimal(redeemed.payout_atoms - redeemed.fee_atoms)

    # -- views --------------------------------------------------------------------------------
    def token(self, token: str) -> TokenInfo:
        """NAV, leverage, exposure, supply, the pool's equity and the rebalance times, now."""
        return token_view(self.engine, self._token_state(token))

    def token_balance(self, account: str, token: str) -> Decimal:
        """The tokens `account` holds (0 for an account that holds none)."""
        t = self._token_state(token)
        return token_units_to_decimal(t.balances.get(self._account(account), 0))

    def token_nav_history(self, token: str) -> list[tuple[datetime, Decimal]]:
        """(time, NAV) at each of the token's events in the event log, oldest first: a
        creation (`TokensCreated`: the NAV it was minted at), a redemption (`TokensRedeemed`:
        the NAV it was paid at), a rebalance (`TokenRebalanced`: the NAV after the trade) and
        a halt (NAV 0) or resumption. A mark move alone is no event, so it adds no point.

        It reads the facade's log, so it covers the events not yet handed over by
        `take_events` (after a journal recovery, those replayed since the last snapshot). The
        time is the exchange clock of the command that produced the event: a rebalance that
        the clock ran into during an `advance_time` step is stamped with the end of that step
        (the engine's events carry no time of their own)."""
        name = self._token_state(token).spec.name
        clock_ns = self._log_start_ns
        history: list[tuple[datetime, Decimal]] = []
        for e in self._events:
            if type(e) is ClockAdvanced:
                assert isinstance(e, ClockAdvanced)
                clock_ns = e.ts_ns
            elif isinstance(e, _NAV_EVENTS) and e.token == name:
                history.append((ns_to_datetime(clock_ns), atoms_to_decimal(e.nav_atoms)))
            elif isinstance(e, TokenHalted) and e.token == name:
                history.append((ns_to_datetime(clock_ns), Decimal(0)))
        return history


__all__ = ["Token", "TokenCalls", "compile_token", "compile_tokens"]
