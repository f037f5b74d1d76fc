"""Account routes: balances, positions, leverage and margin settings, brackets, income.

BINANCE_API.md §3 and §4.2: v2 and v3 `account`, `balance` and `positionRisk` (v3 is ccxt's
default, v2 hummingbot's), leverage, marginType (-4046 when unchanged), positionMargin,
commissionRate, positionSide/dual and multiAssetsMargin (one-way, single-asset only),
symbolConfig, accountConfig, leverageBracket (with `cum`), income, and the two sapi calls
ccxt makes on load_markets, answered with `[]`. Every figure is read in the writer thread
(a sequencer job), from the facade's views, so positionRisk's liquidation price is the
facade's own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from fastapi import APIRouter, Request, Response

from perpex.core.markets import MarketSpec
from perpex.exchange import Exchange
from perpex.server import wire
from perpex.server.errors import ApiError, mandatory
from perpex.server.http import Call, reply, signed
from perpex.server.income_history import INCOME_TYPES
from perpex.views import Account, Position

router = APIRouter()

ASSET: Final = "USDT"
SEVEN_DAYS_MS: Final = 7 * 24 * 3600 * 1000
PRICE_PLACES: Final = 8  # positionRisk shows computed prices with 8 decimals, as Binance does
_ZERO: Final = Decimal(0)
_SUCCESS: Final = {"code": 200, "msg": "success"}


# -- figures --------------------------------------------------------------------------------
def _account(ex: Exchange, name: str) -> Account:
    if name in ex.engine.accounts:
        return ex.account(name)
    z = _ZERO  # a key whose account has never been funded: Binance shows zeros
    return Account(z, z, z, z, z, z, z, z, z)


def _positions(ex: Exchange, call: Call, symbol: str | None) -> list[tuple[MarketSpec, Position]]:
    specs = call.state.specs
    if symbol is not None and symbol not in specs:
        raise ApiError(-1121, "Invalid symbol.")
    chosen = [specs[symbol]] if symbol is not None else list(specs.values())
    return [(spec, ex.position(call.account, spec.symbol)) for spec in chosen]


def _price8(value: Decimal | None) -> str:
    return wire.fixed(value if value is not None else _ZERO, PRICE_PLACES)


def _break_even(spec: MarketSpec, pos: Position) -> Decimal:
    """The price at which closing pays back the entry and both taker fees (Binance's field)."""
    if not pos.size:
        return _ZERO
    fee = Decimal(spec.taker_fee_ppm) / Decimal(1_000_000)
    if pos.size > 0:
        return pos.entry_price * (1 + fee) / (1 - fee)
    return pos.entry_price * (1 - fee) / (1 + fee)


def _open_order_margin(ex: Exchange, account: str, symbol: str) -> Decimal:
    acct = ex.engine.accounts.get(account)
    if acct is None:
        return _ZERO
    return _ZERO if not acct.orders else _order_margin(ex, account, symbol)


def _order_margin(ex: Exchange, account: str, symbol: str) -> Decimal:
    # The account's open-order margin is kept per account; shown on the symbol with orders.
    figures = ex.account(account)
    orders = [o for o in ex.engine.accounts[account].orders.values() if o.symbol == symbol]
    return figures.open_order_margin if orders else _ZERO


def _max_notional(spec: MarketSpec, leverage: int) -> str:
    return str(wire.fixed(Decimal(spec.max_notional_atoms_at(leverage)).scaleb(-6), 0))


def _position_v3(ex: Exchange, call: Call, spec: MarketSpec, pos: Position) -> dict[str, Any]:
    isolated = pos.margin_mode == "ISOLATED"
    notional = pos.notional if pos.size >= 0 else -pos.notional
    open_margin = _open_order_margin(ex, call.account, spec.symbol)
    return {
        "symbol": spec.symbol,
        "positionSide": "BOTH",
        "positionAmt": wire.qty(spec, pos.size),
        "entryPrice": _price8(pos.entry_price),
        "breakEvenPrice": _price8(_break_even(spec, pos)),
        "markPrice": _price8(pos.mark_price),
        "unRealizedProfit": wire.money(pos.unrealized_pnl),
        "liquidationPrice": _price8(pos.liquidation_price),
        "isolatedMargin": wire.money(
            pos.isolated_margin + pos.unrealized_pnl if isolated else _ZERO
        ),
        "notional": wire.money(notional),
        "marginAsset": ASSET,
        "isolatedWallet": wire.money(pos.isolated_margin if isolated else _ZERO),
        "initialMargin": wire.money(pos.initial_margin + open_margin),
        "maintMargin": wire.money(pos.maintenance_margin),
        "positionInitialMargin": wire.money(pos.initial_margin),
        "openOrderInitialMargin": wire.money(open_margin),
        "adl": pos.adl_quantile,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": wire.ms(ex.time_ns),
    }


def _position_v2(ex: Exchange, call: Call, spec: MarketSpec, pos: Position) -> dict[str, Any]:
    isolated = pos.margin_mode == "ISOLATED"
    notional = pos.notional if pos.size >= 0 else -pos.notional
    return {
        "symbol": spec.symbol,
        "positionAmt": wire.qty(spec, pos.size),
        "entryPrice": _price8(pos.entry_price),
        "breakEvenPrice": _price8(_break_even(spec, pos)),
        "markPrice": _price8(pos.mark_price),
        "unRealizedProfit": wire.money(pos.unrealized_pnl),
        "liquidationPrice": _price8(pos.liquidation_price),
        "leverage": str(pos.leverage),
        "maxNotionalValue": _max_notional(spec, pos.leverage),
        "marginType": "isolated" if isolated else "cross",
        "isolatedMargin": wire.money(
            pos.isolated_margin + pos.unrealized_pnl if isolated else _ZERO
        ),
        "isAutoAddMargin": "false",
        "positionSide": "BOTH",
        "notional": wire.money(notional),
        "isolatedWallet": wire.money(pos.isolated_margin if isolated else _ZERO),
        "updateTime": wire.ms(ex.time_ns),
    }


def _asset(ex: Exchange, a: Account, v2: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "asset": ASSET,
        "walletBalance": wire.money(a.wallet_balance),
        "unrealizedProfit": wire.money(a.unrealized_pnl),
        "marginBalance": wire.money(a.margin_balance),
        "maintMargin": wire.money(a.maintenance_margin),
        "initialMargin": wire.money(a.initial_margin + a.open_order_margin),
        "positionInitialMargin": wire.money(a.initial_margin),
        "openOrderInitialMargin": wire.money(a.open_order_margin),
        "crossWalletBalance": wire.money(a.cross_wallet_balance),
        "crossUnPnl": wire.money(a.unrealized_pnl),
        "availableBalance": wire.money(a.available_balance),
        "maxWithdrawAmount": wire.money(a.max_withdraw_amount),
        "updateTime": max(wire.ms(ex.time_ns), 1),  # ccxt skips an asset whose updateTime is 0
    }
    if v2:
        row["marginAvailable"] = True
    return row


def _account_body(ex: Exchange, call: Call, v2: bool) -> dict[str, Any]:
    a = _account(ex, call.account)
    body: dict[str, Any] = {}
    if v2:
        body.update(
            feeTier=0, canTrade=True, canDeposit=True, canWithdraw=True, feeBurn=False,
            tradeGroupId=-1, updateTime=0, multiAssetsMargin=False,
        )  # fmt: skip
    body.update(
        totalInitialMargin=wire.money(a.initial_margin + a.open_order_margin),
        totalMaintMargin=wire.money(a.maintenance_margin),
        totalWalletBalance=wire.money(a.wallet_balance),
        totalUnrealizedProfit=wire.money(a.unrealized_pnl),
        totalMarginBalance=wire.money(a.margin_balance),
        totalPositionInitialMargin=wire.money(a.initial_margin),
        totalOpenOrderInitialMargin=wire.money(a.open_order_margin),
        totalCrossWalletBalance=wire.money(a.cross_wallet_balance),
        totalCrossUnPnl=wire.money(a.unrealized_pnl),
        availableBalance=wire.money(a.available_balance),
        maxWithdrawAmount=wire.money(a.max_withdraw_amount),
        assets=[_asset(ex, a, v2)],
    )
    positions = []
    for spec, pos in _positions(ex, call, None):
        if not v2 and not pos.size:
            continue  # v3 lists symbols with a position only
        row = {
            "symbol": spec.symbol,
            "positionSide": "BOTH",
            "positionAmt": wire.qty(spec, pos.size),
            "unrealizedProfit": wire.money(pos.unrealized_pnl),
            "isolatedMargin": wire.money(pos.isolated_margin),
            "notional": wire.money(pos.notional if pos.size >= 0 else -pos.notional),
            "isolatedWallet": wire.money(pos.isolated_margin),
            "initialMargin": wire.money(pos.initial_margin),
            "maintMargin": wire.money(pos.maintenance_margin),
            "updateTime": wire.ms(ex.time_ns),
        }
        if v2:
            row.update(
                leverage=str(pos.leverage),
                isolated=pos.margin_mode == "ISOLATED",
                entryPrice=_price8(pos.entry_price),
                breakEvenPrice=_price8(_break_even(spec, pos)),
                maxNotional=_max_notional(spec, pos.leverage),
                positionInitialMargin=wire.money(pos.initial_margin),
                openOrderInitialMargin="0",
                bidNotional="0",
                askNotional="0",
            )
        positions.append(row)
    body["positions"] = positions
    return body


def _balances(ex: Exchange, call: Call) -> list[dict[str, Any]]:
    a = _account(ex, call.account)
    return [
        {
            "accountAlias": "perpex",
            "asset": ASSET,
            "balance": wire.money(a.wallet_balance),
            "crossWalletBalance": wire.money(a.cross_wallet_balance),
            "crossUnPnl": wire.money(a.unrealized_pnl),
            "availableBalance": wire.money(a.available_balance),
            "maxWithdrawAmount": wire.money(a.max_withdraw_amount),
            "marginAvailable": True,
            "updateTime": max(wire.ms(ex.time_ns), 1),
        }
    ]


# -- account and positions ----------------------------------------------------------------
@router.get("/fapi/v3/account")
async def account_v3(request: Request) -> Response:
    call = await signed(request, 5)
    return reply(
        request, await call.state.seq.call(lambda ex: _account_body(ex, call, False), write=False)
    )


@router.get("/fapi/v2/account")
async def account_v2(request: Request) -> Response:
    call = await signed(request, 5)
    return reply(
        request, await call.state.seq.call(lambda ex: _account_body(ex, call, True), write=False)
    )


@router.get("/fapi/v3/balance")
@router.get("/fapi/v2/balance")
async def balance(request: Request) -> Response:
    call = await signed(request, 5)
    return reply(request, await call.state.seq.call(lambda ex: _balances(ex, call), write=False))


@router.get("/fapi/v3/positionRisk")
async def position_risk_v3(request: Request) -> Response:
    call = await signed(request, 5)
    symbol = call.params.symbol(required=False)

    def rows(ex: Exchange) -> list[dict[str, Any]]:
        return [
            _position_v3(ex, call, spec, pos)
            for spec, pos in _positions(ex, call, symbol)
            if pos.size or symbol is not None
        ]

    return reply(request, await call.state.seq.call(rows, write=False))


@router.get("/fapi/v2/positionRisk")
async def position_risk_v2(request: Request) -> Response:
    call = await signed(request, 5)
    symbol = call.params.symbol(required=False)

    def rows(ex: Exchange) -> list[dict[str, Any]]:
        return [_position_v2(ex, call, spec, pos) for spec, pos in _positions(ex, call, symbol)]

    return reply(request, await call.state.seq.call(rows, write=False))


# -- settings -------------------------------------------------------------------------------
@router.post("/fapi/v1/leverage")
async def leverage(request: Request) -> Response:
    call = await signed(request, 1)
    symbol = call.params.symbol()
    value = call.params.require("leverage")
    assert symbol is not None

    def change(ex: Exchange) -> dict[str, Any]:
        spec = call.state.specs.get(symbol)
        if spec is None:
            raise ApiError(-1121, "Invalid symbol.")
        if not value.isdigit():
            raise ApiError(-4028, f"Leverage {value} is not valid")
        lev = ex.set_leverage(call.account, symbol, int(value))
        return {"leverage": lev, "maxNotionalValue": _max_notional(spec, lev), "symbol": symbol}

    return reply(request, await call.state.seq.call(change))


@router.post("/fapi/v1/marginType")
async def margin_type(request: Request) -> Response:
    call = await signed(request, 1)
    symbol = call.params.symbol()
    mode = call.params.require("marginType").upper()
    if mode not in ("ISOLATED", "CROSSED", "CROSS"):
        raise ApiError(-4099, "Invalid margin type.")  # Binance: "Invalid marginType"
    mode = "CROSSED" if mode == "CROSS" else mode
    assert symbol is not None
    await call.state.seq.call(lambda ex: ex.set_margin_mode(call.account, symbol, mode))
    return reply(request, _SUCCESS)


def _is_zero(amount: str) -> bool:
    """A decimal text that is zero ("0", "0.000"); anything unreadable is the facade's -1013."""
    try:
        return Decimal(amount) == 0
    except ArithmeticError:
        return False


@router.post("/fapi/v1/positionMargin")
async def position_margin(request: Request) -> Response:
    call = await signed(request, 1)
    symbol = call.params.symbol()
    amount = call.params.require("amount")
    kind = call.params.integer("type", required=True)
    side = call.params.get("positionSide")
    if side is not None and side != "BOTH":
        raise ApiError(-4061, "Order's position side does not match user's setting.")
    if kind not in (1, 2):
        raise ApiError(-1130, "Data sent for parameter 'type' is not valid.")
    if amount.startswith("-"):
        raise ApiError(-1130, "Data sent for parameter 'amount' is not valid.")
    if _is_zero(amount):
        raise ApiError(-4055, "Amount must be positive.")
    signed_amount = amount if kind == 1 else "-" + amount
    assert symbol is not None
    await call.state.seq.call(
        lambda ex: ex.add_isolated_margin(call.account, symbol, signed_amount)
    )
    return reply(
        request,
        {
            "amount": float(Decimal(amount)),
            "code": 200,
            "msg": "Successfully modify position margin.",
            "type": kind,
        },
    )


@router.get("/fapi/v1/commissionRate")
async def commission_rate(request: Request) -> Response:
    call = await signed(request, 20)
    symbol = call.params.symbol()
    spec = call.state.specs.get(symbol or "")
    if spec is None:
        raise ApiError(-1121, "Invalid symbol.")
    million = Decimal(1_000_000)
    return reply(
        request,
        {
            "symbol": spec.symbol,
            "makerCommissionRate": str(Decimal(spec.maker_fee_ppm) / million),
            "takerCommissionRate": str(Decimal(spec.taker_fee_ppm) / million),
        },
    )


@router.get("/fapi/v1/positionSide/dual")
async def position_side_get(request: Request) -> Response:
    await signed(request, 30)
    return reply(request, {"dualSidePosition": False})


@router.post("/fapi/v1/positionSide/dual")
async def position_side_set(request: Request) -> Response:
    call = await signed(request, 1)
    if not call.params.boolean("dualSidePosition") and "dualSidePosition" in call.params:
        raise ApiError(-4059, "No need to change position side.")
    if "dualSidePosition" not in call.params:
        raise mandatory("dualSidePosition")
    # perpex accounts are one-way (BOTH) only: hedge mode is refused as Binance refuses a
    # change it cannot make.
    raise ApiError(-4068, "Position side cannot be changed: perpex supports one-way mode only.")


@router.get("/fapi/v1/multiAssetsMargin")
async def multi_assets_get(request: Request) -> Response:
    await signed(request, 30)
    return reply(request, {"multiAssetsMargin": False})


@router.post("/fapi/v1/multiAssetsMargin")
async def multi_assets_set(request: Request) -> Response:
    call = await signed(request, 1)
    if "multiAssetsMargin" not in call.params:
        raise mandatory("multiAssetsMargin")
    if not call.params.boolean("multiAssetsMargin"):
        raise ApiError(
            -4171,
            "Adjusted asset mode is currently set and does not need to be adjusted repeatedly",
        )
    raise ApiError(-4167, "Unable to adjust to Multi-Assets mode: perpex settles in USDT only.")


@router.get("/fapi/v1/symbolConfig")
async def symbol_config(request: Request) -> Response:
    call = await signed(request, 5)
    symbol = call.params.symbol(required=False)

    def rows(ex: Exchange) -> list[dict[str, Any]]:
        return [
            {
                "symbol": spec.symbol,
                "marginType": pos.margin_mode,
                "isAutoAddMargin": False,
                "leverage": pos.leverage,
                "maxNotionalValue": _max_notional(spec, pos.leverage),
            }
            for spec, pos in _positions(ex, call, symbol)
        ]

    return reply(request, await call.state.seq.call(rows, write=False))


@router.get("/fapi/v1/accountConfig")
async def account_config(request: Request) -> Response:
    call = await signed(request, 5)
    now = await call.state.seq.call(lambda ex: wire.ms(ex.time_ns), write=False)
    return reply(
        request,
        {
            "feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
            "dualSidePosition": False, "updateTime": now, "multiAssetsMargin": False,
            "tradeGroupId": -1,
        },
    )  # fmt: skip


def _number(value: Decimal) -> int | float:
    """Brackets go out as JSON numbers, as Binance sends them."""
    return int(value) if value == value.to_integral_value() else float(value)


@router.get("/fapi/v1/leverageBracket")
async def leverage_bracket(request: Request) -> Response:
    call = await signed(request, 1)
    symbol = call.params.symbol(required=False)
    specs = call.state.specs
    if symbol is not None and symbol not in specs:
        raise ApiError(-1121, "Invalid symbol.")
    chosen = [specs[symbol]] if symbol is not None else list(specs.values())
    million = Decimal(1_000_000)
    return reply(
        request,
        [
            {
                "symbol": spec.symbol,
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": b.index,
                        "initialLeverage": b.max_leverage,
                        "notionalCap": _number(Decimal(b.cap_atoms) / million),
                        "notionalFloor": _number(Decimal(b.floor_atoms) / million),
                        "maintMarginRatio": _number(Decimal(b.mmr_ppm) / million),
                        "cum": float(Decimal(b.cum_atoms) / million),
                    }
                    for b in spec.brackets
                ],
            }
            for spec in chosen
        ],
    )


# -- income ---------------------------------------------------------------------------------
@router.get("/fapi/v1/income")
async def income(request: Request) -> Response:
    call = await signed(request, 30)
    p = call.params
    symbol = p.symbol(required=False)
    kind = p.get("incomeType")
    if kind is not None and kind not in INCOME_TYPES:
        raise ApiError(-1130, "Data sent for parameter 'incomeType' is not valid.")
    start = p.integer("startTime", low=0)
    end = p.integer("endTime", low=0)
    limit = p.integer("limit", low=1, high=1000) or 100
    page = p.integer("page", low=1) or 1
    if symbol is not None and symbol not in call.state.specs:
        raise ApiError(-1121, "Invalid symbol.")
    if start is not None and end is not None and start > end:
        raise ApiError(-1130, "Data sent for parameter 'startTime' is not valid.")

    def rows(ex: Exchange) -> list[dict[str, Any]]:
        now_ms = wire.ms(ex.time_ns)
        lo = start if start is not None else (end if end is not None else now_ms) - SEVEN_DAYS_MS
        hi = end if end is not None else (lo + SEVEN_DAYS_MS if start is not None else now_ms)
        picked = [
            r
            for r in call.state.income.rows(call.account)
            if lo <= wire.ms(r.time_ns) <= hi
            and (kind is None or r.income_type == kind)
            and (symbol is None or r.symbol == symbol)
        ]
        first = (page - 1) * limit
        return [
            {
                "symbol": r.symbol,
                "incomeType": r.income_type,
                "income": wire.money(Decimal(r.income_atoms).scaleb(-6)),
                "asset": ASSET,
                "info": r.income_type,
                "time": wire.ms(r.time_ns),
                "tranId": r.tran_id,
                "tradeId": "" if r.trade_id is None else str(r.trade_id),
            }
            for r in picked[first : first + limit]
        ]

    return reply(request, await call.state.seq.call(rows, write=False))


# -- the spot calls ccxt makes on load_markets with a key (BINANCE_API.md §1.1) -------------
@router.get("/sapi/v1/capital/config/getall")
@router.get("/sapi/v1/margin/allPairs")
async def sapi_stub(request: Request) -> Response:
    return reply(request, [])


__all__ = ["router"]
