"""The insurance funds: each fund's share of the INSURANCE bucket, and every move in or out.

Units: money in atoms. One fund for every symbol by default. With fund symbols configured
(`LiquidationConfig.fund_symbols`; Binance, MECHANICS.md §1.8: "BTCUSDT and ETHUSDT have their
own funds; other perpetuals share one") those symbols each have a fund of their own and the
rest share the common one. The money of all funds is one ledger bucket, INSURANCE (so
conservation and the ledger's sum do not change); `pots` splits it into shares ("" the common
one, else a symbol), which are state (in the liquidation record, so in the hash and the
snapshot). Every movement names its symbol and moves that symbol's share with the bucket
(`move`): fees and surpluses in, deficits out, deposits into the share named. The shares sum
to the bucket and none is below zero (`check`, DESIGN.md §6 promise 4 for every fund).
"""

from __future__ import annotations

from typing import Final

from perpex.core.ledger import Bucket, Ledger
from perpex.core.messages import Event, FundReason, InsuranceFundChanged

COMMON_FUND: Final = ""  # the key of the fund every symbol without its own shares
MAX_FUND_SYMBOLS: Final = 1_000  # symbols with an insurance fund of their own, at most


class InsuranceFunds:
    """The shares of the INSURANCE bucket: fund ("" or a fund symbol) -> atoms."""

    __slots__ = ("fund_symbols", "ledger", "pots")

    def __init__(self, ledger: Ledger, fund_symbols: tuple[str, ...] = ()) -> None:
        self.ledger = ledger
        self.fund_symbols = fund_symbols
        self.pots: dict[str, int] = self.empty_pots(fund_symbols)

    @staticmethod
    def empty_pots(fund_symbols: tuple[str, ...]) -> dict[str, int]:
        return dict.fromkeys((COMMON_FUND, *fund_symbols), 0)

    def configure(self, fund_symbols: tuple[str, ...], shares: dict[str, int] | None) -> None:
        """Set the funds (on construction and restore). Without `shares` the common fund is
        the whole INSURANCE bucket (the ledger must already hold its balance)."""
        self.fund_symbols = fund_symbols
        if shares is None:
            self.pots = {COMMON_FUND: self.ledger.insurance.balance}
        else:
            self.pots = shares
            assert set(self.pots) == set(self.empty_pots(fund_symbols)), "fund shares do not match"

    def record(self) -> list[list[object]]:
        return sorted([fund, atoms] for fund, atoms in self.pots.items())

    def check(self) -> None:
        """The fund shares split the INSURANCE bucket exactly, none below zero; AssertionError
        if not."""
        assert set(self.pots) == set(self.empty_pots(self.fund_symbols)), "fund shares drifted"
        for fund, atoms in self.pots.items():
            assert atoms >= 0, f"insurance fund {fund or 'common'} below zero"
        insurance = self.ledger.insurance.balance
        assert sum(self.pots.values()) == insurance, "fund shares != INSURANCE bucket"

    def fund_of(self, symbol: str) -> str:
        """The fund that pays for `symbol`: its own, or the common one ("")."""
        return symbol if symbol in self.pots else COMMON_FUND

    def fund_atoms(self, symbol: str | None = None) -> int:
        """All funds together (None), or the balance of the fund that pays for `symbol`."""
        if symbol is None:
            return self.ledger.insurance.balance
        return self.pots[self.fund_of(symbol)]

    def seed(self, source: Bucket, atoms: int) -> None:
        """The common fund's seed from outside (the engine's constructor; no event)."""
        ledger = self.ledger
        ledger.transfer(source, ledger.insurance, atoms)
        self.pots[COMMON_FUND] += atoms
        assert self.pots[COMMON_FUND] >= 0, "insurance fund below zero"

    def move(
        self,
        source: Bucket,
        atoms: int,
        reason: FundReason,
        account: str,
        symbol: str,
        events: list[Event],
    ) -> None:
        """Move `atoms` from `source` into the fund of `symbol` (negative: out of it), and say
        so with that fund's new balance. The only way money enters or leaves a fund after the
        seed."""
        ledger = self.ledger
        fund = self.fund_of(symbol)
        ledger.transfer(source, ledger.insurance, atoms)
        balance = self.pots[fund] = self.pots[fund] + atoms
        assert balance >= 0, "insurance fund below zero"
        events.append(InsuranceFundChanged(atoms, balance, reason, account, symbol))

    def pay_deficit(
        self,
        destination: Bucket,
        deficit_atoms: int,
        account: str,
        symbol: str,
        events: list[Event],
    ) -> int:
        """The fund of `symbol` pays `deficit_atoms` into `destination`, as far as its balance
        goes (it never goes below zero); returns what it paid."""
        paid = min(deficit_atoms, self.fund_atoms(symbol))
        if paid <= 0:
            return 0
        self.move(destination, -paid, FundReason.LIQUIDATION_DEFICIT, account, symbol, events)
        return paid


__all__ = ["COMMON_FUND", "MAX_FUND_SYMBOLS", "InsuranceFunds"]
