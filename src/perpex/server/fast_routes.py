"""`PerpexAPI`: FastAPI with its exact-path routes looked up in a dict first.

FastAPI matches a request against its routes one by one (about 2 µs each with included
routers: POST /fapi/v1/order was checked against 33 routes) and then runs its middleware
stack; at a few thousand orders a second that was half the event loop's time
(docs/benchmarks.md). Our routes read their parameters themselves (`async def f(request)`),
so an exact (method, path) hit can call the endpoint directly, with the app's own exception
handlers. Everything else (WebSockets, paths with parameters, the docs, 404s) goes through
FastAPI unchanged, and the OpenAPI schema still comes from the registered routes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from perpex.server.openapi_params import api_routes

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class PerpexAPI(FastAPI):
    """The server's app. Call `index_fast_routes()` once every router is included."""

    fast_routes: dict[tuple[str, str], Endpoint]

    def index_fast_routes(self) -> None:
        table: dict[tuple[str, str], Endpoint] = {}
        for route in api_routes(self.router.routes):
            params = list(inspect.signature(route.endpoint).parameters)
            if "{" not in route.path_format and params == ["request"]:
                for method in route.methods or ():
                    table.setdefault((method, route.path_format), route.endpoint)
        self.fast_routes = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = getattr(self, "fast_routes", {}).get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                request = Request(scope, receive)
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    response = await self._handler_for(exc)(request, exc)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler:
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler  # type: ignore[return-value]
        raise exc  # none: the server's own handlers cover Exception, so this is unreachable


__all__ = ["PerpexAPI"]
