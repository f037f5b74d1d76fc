"""`declare_parameters(app)`: the OpenAPI table's parameters hung on the app's routes.

The routes read their parameters themselves, from the raw query string and body
(`perpex.server.params`), so FastAPI sees none of them and `/openapi.json` (what `/docs` shows
and what schemathesis fuzzes) would declare none. The table (`perpex.server.openapi_table`)
names them; this module adds them to each route as `openapi_extra`, which FastAPI merges into
each operation. Nothing here changes how a request is read or checked: the declaration is
documentation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from perpex.server.openapi_table import OPERATIONS, Operation, Param


# -- applying it ----------------------------------------------------------------------------------
def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute of `routes`, also those of included routers (FastAPI 0.165 keeps an
    included router as one entry holding the original router)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
            continue
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        if inner is not None and hasattr(inner, "routes"):
            yield from api_routes(inner.routes)


def _declared_by_fastapi(route: APIRoute) -> set[tuple[str, str]]:
    """(name, in) of the parameters FastAPI itself declares for the route (Query(...) etc.)."""
    dependant = route.dependant
    out: set[tuple[str, str]] = set()
    for location, fields in (
        ("query", dependant.query_params),
        ("header", dependant.header_params),
        ("path", dependant.path_params),
        ("cookie", dependant.cookie_params),
    ):
        for f in fields:
            name = f.alias or f.name
            # FastAPI declares a header under its HTTP name (underscores as dashes).
            out.add((location, name.replace("_", "-").lower() if location == "header" else name))
    return out


def _key(param: Mapping[str, Any]) -> tuple[str, str]:
    location = str(param.get("in", ""))
    name = str(param.get("name", ""))
    return location, name.lower() if location == "header" else name


def route_parameters(route: APIRoute, operation: Operation) -> list[dict[str, Any]]:
    """The `openapi_extra` parameters of a route: the table's, except those FastAPI already
    declares (kept as they are), then any the route declared itself that the table lacks."""
    taken = _declared_by_fastapi(route)
    out: list[dict[str, Any]] = []
    for param in operation.params:
        declared = param.openapi()
        if _key(declared) not in taken:
            taken.add(_key(declared))
            out.append(declared)
    extra = route.openapi_extra or {}
    for declared in extra.get("parameters", ()):
        if _key(declared) not in taken:
            taken.add(_key(declared))
            out.append(declared)
    return out


def declare_parameters(
    app: FastAPI, table: Mapping[tuple[str, str], Operation] = OPERATIONS
) -> None:
    """Declare the table's parameters (and its tag, and its summary where the route has none)
    on every route of `app` it names; idempotent. Call it in `create_app`, after the routers
    are included and before the app builds its schema or serves: FastAPI 0.165 copies each
    route's `openapi_extra` into a per-app cache the first time it builds the schema or matches
    a request, and a later change does not reach that cache. The routes are the route modules'
    own objects, shared by every app built in the process: an app built later, and one built
    earlier that has not yet built its schema, get the declarations too (the same ones)."""
    if app.openapi_schema is not None:
        raise RuntimeError("declare_parameters: the app's OpenAPI schema is already built")
    for route in api_routes(app.router.routes):
        if not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            operation = table.get((method, route.path_format))
            if operation is None:
                continue
            extra = dict(route.openapi_extra or {})
            extra["parameters"] = route_parameters(route, operation)
            route.openapi_extra = extra
            route.tags = [operation.tag]
            if route.summary is None:
                route.summary = operation.summary


__all__ = [
    "OPERATIONS",
    "Operation",
    "Param",
    "api_routes",
    "declare_parameters",
    "route_parameters",
]
