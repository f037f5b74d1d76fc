"""Double-entry ledger: every atom that moves leaves one bucket and enters another.

Units: money in atoms. The system buckets are EXTERNAL (deposits and withdrawals: minus what
the world has put in), FEES, INSURANCE, FUNDING and SETTLEMENT (the clearing account of
realized PnL: it holds minus the open cost basis of all positions). Traders' cross wallets and
isolated margins are buckets owned by the account records (`perpex.core.records`). The sum over
all buckets is zero after every transfer, by construction, and the invariant checker
recomputes it.

INSURANCE holds the money of every insurance fund. With funds per symbol
(`LiquidationConfig.fund_symbols`) `insurance.InsuranceFunds` keeps each fund's share of it and
moves the share with every transfer in or out of the bucket; the shares sum to the bucket
(`InsuranceFunds.check`). The ledger itself knows one bucket, so conservation and the layout of
the state do not depend on how many funds there are.

A bucket may name its owner (the account whose wallet or isolated margin it is). Every transfer
records the owners it touched in `Ledger.touched`, so the risk screen's NumPy mirror of the
wallets (`perpex.core.risk.RiskMirror`) refreshes only the accounts whose money moved. Whoever
changes a balance without `transfer` (a snapshot restore) rebuilds that mirror instead.
"""

from __future__ import annotations


class Bucket:
    """A balance in atoms. Only `Ledger.transfer` changes it."""

    __slots__ = ("balance", "name", "owner")

    def __init__(self, name: str, balance: int = 0, owner: str | None = None) -> None:
        self.name = name
        self.balance = balance
        self.owner = owner  # the account it belongs to; None for a system bucket

    def __repr__(self) -> str:
        return f"Bucket({self.name}={self.balance})"


class Ledger:
    __slots__ = ("external", "fees", "funding", "insurance", "settlement", "touched", "transfers")

    def __init__(self) -> None:
        self.external = Bucket("EXTERNAL")
        self.fees = Bucket("FEES")
        self.insurance = Bucket("INSURANCE")
        self.funding = Bucket("FUNDING")
        self.settlement = Bucket("SETTLEMENT")
        self.transfers = 0
        # Owners of the buckets moved since the reader last cleared it (derived state: not in
        # the state hash, not in snapshots). Bounded by the number of accounts.
        self.touched: set[str] = set()

    def system_buckets(self) -> tuple[Bucket, ...]:
        return (self.external, self.fees, self.insurance, self.funding, self.settlement)

    def transfer(self, source: Bucket, destination: Bucket, atoms: int) -> None:
        """Move `atoms` (may be negative: the reverse direction) from source to destination."""
        source.balance -= atoms
        destination.balance += atoms
        self.transfers += 1
        if source.owner is not None:
            self.touched.add(source.owner)
        if destination.owner is not None:
            self.touched.add(destination.owner)
