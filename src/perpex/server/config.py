"""`ServerConfig`: everything `perpex serve` is started with, and the limits it enforces.

Plain values only (no engine objects), so the CLI, the tests and the benchmark build one the
same way. Limits follow Binance USDⓈ-M's published figures unless a test or a benchmark asks
for others: request weight 2,400 per minute, 1,200 orders per minute and 300 per 10 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

JOURNAL_FILE: Final = "exchange.db"
KEYS_FILE: Final = "keys.db"
DEMO_ACCOUNT: Final = "demo"
DEMO_DEPOSIT: Final = "10000"


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/perpex`, else `~/.local/share/perpex` (read here, at the edge only)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "perpex"


@dataclass(frozen=True)
class Limits:
    """Per API key (and, for public calls, per client address), rolling windows."""

    weight_per_minute: int = 2400
    orders_per_minute: int = 1200
    orders_per_10s: int = 300
    max_recv_window_ms: int = 60_000
    default_recv_window_ms: int = 5_000


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    scenario: str | None = None  # the market's driver (a shipped scenario name or a .toml)
    speed: float = 1.0  # seconds of the scenario's path per wall-clock second
    tick_seconds: float = 1.0  # how often the market driver steps (wall clock)
    limits: Limits = field(default_factory=Limits)
    admin_token: str | None = None  # None: a fresh random token, printed at start
    demo_deposit: str = DEMO_DEPOSIT
    max_batch: int = 256  # jobs per group commit
    ws_queue_limit: int = 2_000  # messages queued for one WebSocket client before it is dropped
    snapshot_every: int = 10_000

    @property
    def journal_path(self) -> Path:
        return self.data_dir / JOURNAL_FILE

    @property
    def keys_path(self) -> Path:
        return self.data_dir / KEYS_FILE

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


__all__ = [
    "DEMO_ACCOUNT",
    "DEMO_DEPOSIT",
    "JOURNAL_FILE",
    "KEYS_FILE",
    "Limits",
    "ServerConfig",
    "default_data_dir",
]
