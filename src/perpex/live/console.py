"""`perpex serve` on the terminal: build the market from a scenario, recover the journal,
print where to connect and with which keys, then serve until Ctrl-C.

What it prints (one label a line, so a script can read it; the secrets are the data dir's,
shown to whoever started the server, as `perpex keys create` shows a new key's)::

    perpex serve  scenario live (BTCUSDT) at 1x, seed 0, tape 20 trades/min
    data dir      /home/me/.local/share/perpex (journal seq 2: a new exchange)
    url           http://127.0.0.1:8080
    dashboard     http://127.0.0.1:8080/#admin=<admin token>
    api key       <the demo account's API key>
    secret        <its secret>
    admin token   <token> (header X-Admin-Token; /admin answers loopback clients only)

A mistake of the user's (an unknown scenario, a bad speed or tape rate, a data dir whose
journal belongs to another scenario's exchange) is one line on stderr and exit status 2. Any
address may be served (`--host 0.0.0.0` in a container): the trading API then answers the
network, signed by keys as on Binance, while `/admin` still answers loopback clients only.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Final, NoReturn

from perpex.journal import ConfigMismatch, JournalError
from perpex.live.driver import ScenarioDriver
from perpex.live.tape import DEFAULT_TAPE_PER_MINUTE
from perpex.server import create_app
from perpex.server.config import DEMO_ACCOUNT, ServerConfig, default_data_dir
from perpex.server.routes_admin import TOKEN_HEADER, is_loopback
from perpex.server.state import ServerState, open_state
from perpex.sim.scenario import ScenarioError

LOOPBACK_NAMES: Final = ("localhost",)
ANY_ADDRESS: Final = ("0.0.0.0", "::", "")


def _fail(message: str) -> NoReturn:
    print(f"perpex serve: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _url_host(host: str) -> str:
    """The address a local browser or client uses for `host` (any-address: loopback)."""
    if host in ANY_ADDRESS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def banner(state: ServerState, driver: ScenarioDriver, *, recovered: bool) -> list[str]:
    """The lines printed at start (see the module docstring)."""
    config = state.config
    base = f"http://{_url_host(config.host)}:{config.port}"
    demo = state.keys.by_name(DEMO_ACCOUNT)
    journal = state.ex.journal
    seq = journal.last_seq if journal is not None else 0
    what = "recovered" if recovered else "a new exchange"
    lines = [
        f"perpex serve  scenario {driver.name} ({driver.symbol}) at {driver.speed:g}x, "
        f"seed {driver.seed}, tape {driver.tape.per_minute:g} trades/min",
        f"data dir      {config.data_dir} (journal seq {seq}: {what})",
        f"url           {base}",
        f"dashboard     {base}/#admin={state.admin_token}",
    ]
    if demo is not None and not demo.revoked:
        lines.append(f"api key       {demo.api_key}")
        lines.append(f"secret        {demo.secret or '(an Ed25519 key: the private key is yours)'}")
    lines.append(
        f"admin token   {state.admin_token} (header {TOKEN_HEADER}; /admin answers loopback "
        "clients only)"
    )
    if not (is_loopback(config.host) or config.host in LOOPBACK_NAMES):
        lines.append(
            f"warning       listening on {config.host}: the trading API answers the network "
            "(signed by keys); /admin stays loopback-only"
        )
    lines.append("Ctrl-C stops the server (the journal is snapshotted on the way out).")
    return lines


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    scenario: str | None = None,
    speed: float = 1.0,
    data_dir: str | None = None,
    tape: float = DEFAULT_TAPE_PER_MINUTE,
) -> None:
    """The body of `perpex serve`: returns when the server has stopped."""
    import uvicorn  # the server's own dependency: imported only to serve

    try:
        driver = ScenarioDriver(scenario, speed=speed, tape_per_minute=tape)
    except ScenarioError as exc:
        _fail(_one_line(exc))
    except ValueError as exc:  # a bad speed or tape rate, or a scenario the driver cannot build
        _fail(_one_line(exc))
    config = ServerConfig(
        data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(),
        host=host,
        port=port,
        scenario=scenario,
        speed=driver.speed,
    )
    recovered = config.journal_path.exists()
    try:
        state = open_state(config, driver)
    except ConfigMismatch as exc:
        # The journal's own words, without their advice for Python callers (migrate=True).
        why = _one_line(exc).split(" Open it with", 1)[0]
        _fail(
            f"the journal in {config.data_dir} belongs to another exchange than scenario "
            f"{driver.name}'s: {why} Serve it with the scenario it was made with, or give "
            "another --data-dir."
        )
    except (JournalError, OSError) as exc:
        _fail(f"cannot open {config.data_dir}: {_one_line(exc)}")
    try:
        print("\n".join(banner(state, driver, recovered=recovered)), flush=True)
        app = create_app(config, state=state)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                # One encoding fanned out to every subscriber: no per-connection compression.
                ws_per_message_deflate=False,
            )
        )
        # Ctrl-C: uvicorn shuts down gracefully (the lifespan stops the writer and snapshots
        # the journal), then raises the interrupt again for whoever ran it: here, that is us.
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        # Normally the lifespan closed it already (closing twice is safe); this covers a
        # server that never got as far as its lifespan (a port in use).
        with contextlib.suppress(Exception):
            state.close()
    print("perpex serve: stopped", flush=True)


__all__ = ["banner", "serve"]
