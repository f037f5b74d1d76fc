"""Income history (GET /fapi/v1/income): what moved each account's wallet, and why.

An `EventSink` kept by the writer thread, rebuilt on start from the journal's events. One row
per movement, as Binance lists them: TRANSFER (deposits +, withdrawals -), REALIZED_PNL and
COMMISSION (per fill, both sides of a trade), FUNDING_FEE (received +, paid -) and
INSURANCE_CLEAR (what a liquidation moved between the account and the insurance fund), so an
account's rows sum to its wallet. Amounts are exact atoms; times are the engine clock of the
command that caused them (the last `ClockAdvanced` seen). Bounded: the newest
`MAX_ROWS_PER_ACCOUNT` rows per account.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    ClockAdvanced,
    Deposited,
    Event,
    FundingPaid,
    FundReason,
    InsuranceFundChanged,
    TradeExecuted,
    Withdrawn,
)

MAX_ROWS_PER_ACCOUNT: Final = 20_000
INCOME_TYPES: Final = frozenset(
    {"TRANSFER", "REALIZED_PNL", "FUNDING_FEE", "COMMISSION", "INSURANCE_CLEAR"}
)


@dataclass(frozen=True, slots=True)
class IncomeRow:
    tran_id: int
    time_ns: int
    symbol: str  # "" for a transfer
    income_type: str
    income_atoms: int  # signed: > 0 credited
    trade_id: int | None


class IncomeHistory:
    def __init__(self, specs: Sequence[MarketSpec]) -> None:
        self.specs = {s.symbol: s for s in specs}
        self._rows: dict[str, deque[IncomeRow]] = {}
        self._clock_ns = 0
        self._next_id = 1

    def rows(self, account: str) -> Sequence[IncomeRow]:
        return self._rows.get(account, ())

    def _add(
        self, account: str, symbol: str, kind: str, atoms: int, trade_id: int | None = None
    ) -> None:
        if atoms == 0:
            return
        rows = self._rows.get(account)
        if rows is None:
            rows = self._rows[account] = deque(maxlen=MAX_ROWS_PER_ACCOUNT)
        rows.append(IncomeRow(self._next_id, self._clock_ns, symbol, kind, atoms, trade_id))
        self._next_id += 1

    def apply(self, events: Sequence[Event]) -> None:
        add = self._add
        for e in events:
            kind = type(e)
            if kind is ClockAdvanced:
                self._clock_ns = e.ts_ns  # type: ignore[attr-defined]
            elif kind is TradeExecuted:
                assert isinstance(e, TradeExecuted)
                for account, pnl, fee in (
                    (e.taker_account, e.taker_realized_pnl_atoms, e.taker_fee_atoms),
                    (e.maker_account, e.maker_realized_pnl_atoms, e.maker_fee_atoms),
                ):
                    add(account, e.symbol, "REALIZED_PNL", pnl, e.trade_id)
                    add(account, e.symbol, "COMMISSION", -fee, e.trade_id)
            elif kind is FundingPaid:
                assert isinstance(e, FundingPaid)
                add(e.account, e.symbol, "FUNDING_FEE", -e.payment_atoms)
            elif kind is Deposited:
                assert isinstance(e, Deposited)
                add(e.account, "", "TRANSFER", e.amount_atoms)
            elif kind is Withdrawn:
                assert isinstance(e, Withdrawn)
                add(e.account, "", "TRANSFER", -e.amount_atoms)
            elif kind is InsuranceFundChanged:
                assert isinstance(e, InsuranceFundChanged)
                # What a liquidation moved between the account and the fund: the clearance
                # fee and the surplus out of it, a deficit paid into it (Binance's
                # INSURANCE_CLEAR); so an account's income rows sum to its wallet.
                if e.reason is not FundReason.DEPOSIT and e.account:
                    add(e.account, e.symbol, "INSURANCE_CLEAR", -e.delta_atoms)


__all__ = ["INCOME_TYPES", "MAX_ROWS_PER_ACCOUNT", "IncomeHistory", "IncomeRow"]
