"""The server of `bench_server`, in a process of its own: `python -m benchmarks.server_process`.

The load generator must not share the server's GIL, so `bench_server` starts this launcher as
a child process. It builds a `ServerConfig` with limits far above what the benchmark sends
(the benchmark measures the server, not its 429s), a fixed market (`perpex.live.StaticDriver`,
the one the tests use) and one API
key per client, each funded by its deposit when the server starts, then serves with uvicorn
the way the test harness does. The journal is on, as in production: WAL, one fsync per group
commit, in `--data-dir`.

Protocol with the parent, on stdout, one JSON object a line:

- `{"ready": true, "port": P, "loop": "uvloop", "keys": [[api_key, secret], ...]}` once uvicorn
  accepts connections (the keys in `--names` order; throwaway keys of a temporary data dir);
- `{"batches": B, "jobs": J}` after a clean shutdown (SIGINT): the sequencer's
  committed group commits and the jobs they held, so the parent can report the batch size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import uvicorn

from perpex.live.static import StaticDriver
from perpex.server import ServerConfig, create_app
from perpex.server.config import Limits
from perpex.server.state import open_state

# Far above anything a benchmark run sends: 10^9 a minute is ~16M requests a second.
UNLIMITED: Final = 10**9
BENCH_LIMITS: Final = Limits(
    weight_per_minute=UNLIMITED, orders_per_minute=UNLIMITED, orders_per_10s=UNLIMITED
)
DEPOSIT_USDT: Final = "1000000"  # per client account: no order is refused for margin
READY_TIMEOUT_S: Final = 30.0


def emit(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def loop_name() -> str:
    """What uvicorn's `loop="auto"` picks: uvloop when it is importable (ccxt pulls it into the
    dev venv; a plain `pip install perpex` has the asyncio loop)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server_process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--names", default="", help="comma-separated accounts, one key each")
    parser.add_argument("--tick-seconds", type=float, default=0.5)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args(argv)

    config = ServerConfig(
        data_dir=args.data_dir,
        port=args.port,
        tick_seconds=args.tick_seconds,
        limits=BENCH_LIMITS,
    )
    state = open_state(config, StaticDriver(name="bench-static"))
    keys: list[list[str]] = []
    for name in filter(None, args.names.split(",")):
        made = state.keys.create(name, deposit=DEPOSIT_USDT)  # funded at start by the server
        assert made.secret is not None
        keys.append([made.api_key, made.secret])
    app = create_app(config, state=state)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            lifespan="on",
            loop=args.loop,
        )
    )
    loop = loop_name() if args.loop == "auto" else args.loop

    def announce() -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not server.started:
            if time.monotonic() > deadline or server.should_exit:
                return
            time.sleep(0.02)
        emit({"ready": True, "port": args.port, "loop": loop, "keys": keys})

    threading.Thread(target=announce, name="bench-announce", daemon=True).start()
    # In the main thread, uvicorn shuts down gracefully on SIGINT (the writer drains, the
    # journal snapshots), then raises the signal again for whoever handled it before.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    emit({"batches": state.seq.batches, "jobs": state.seq.jobs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
