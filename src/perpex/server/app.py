"""The FastAPI application: `create_app(config, driver)`.

Its lifespan is the server's life: open the state (recovery), start the writer thread, fund
the keys' accounts, let the driver seed the market, then tick the driver on the wall clock
until shutdown, when the writer finishes what is queued and the journal is snapshotted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from perpex.server import (
    dashboard,
    routes_account,
    routes_admin,
    routes_public,
    routes_trade,
    routes_ws,
)
from perpex.server.config import ServerConfig
from perpex.server.driver import MarketDriver
from perpex.server.errors import install_handlers
from perpex.server.fast_routes import PerpexAPI
from perpex.server.openapi_params import declare_parameters
from perpex.server.sequencer import wall_clock_ns
from perpex.server.state import ServerState, fund_new_accounts, open_state

log = logging.getLogger("perpex.server")


def create_app(
    config: ServerConfig,
    driver: MarketDriver | None = None,
    *,
    state: ServerState | None = None,
) -> FastAPI:
    """The app; `state` lets a caller open (and print) the state before serving."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = state if state is not None else open_state(config, driver)
        app.state.perpex = opened
        opened.hub.attach(asyncio.get_running_loop())
        opened.hub.bind(opened)  # the streams' timer and the user stream's order payloads
        opened.seq.start()
        await opened.seq.call(lambda ex: fund_new_accounts(opened))
        if opened.driver is not None:
            the_driver = opened.driver
            await opened.seq.call(lambda ex: the_driver.start(ex, wall_clock_ns()))
        ticker = asyncio.create_task(_tick(opened), name="perpex-market-driver")
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await opened.hub.close()
            await asyncio.to_thread(opened.close)

    app = PerpexAPI(
        title="perpex",
        summary="A local perpetual-futures exchange speaking Binance USDⓈ-M's API",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_handlers(app)
    for module in (routes_public, routes_trade, routes_account, routes_admin, routes_ws, dashboard):
        app.include_router(module.router)
    declare_parameters(app)  # the documented parameters in /openapi.json (before it is built)
    app.index_fast_routes()
    return app


def _step(state: ServerState, driver: MarketDriver | None) -> None:
    """One tick, one job (one clock stamp): the market moves, keys made meanwhile are funded."""
    if driver is not None:
        driver.step(state.ex, wall_clock_ns())
    fund_new_accounts(state)


async def _tick(state: ServerState) -> None:
    """Step the driver every `tick_seconds` and fund keys made meanwhile."""
    interval = state.config.tick_seconds
    driver = state.driver
    while True:
        await asyncio.sleep(interval)
        try:
            await state.seq.call(lambda ex: _step(state, driver))
        except asyncio.CancelledError:
            raise
        except Exception:  # a driver bug must not stop the clock of a running server
            log.exception("market driver step failed")


__all__ = ["create_app"]
