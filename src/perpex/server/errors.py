"""Binance's error body on the wire: `{"code": -1121, "msg": "Invalid symbol."}`.

Every refusal of the server is an `ApiError` (or the facade's `ExchangeError`, which carries
the same code and message) turned into that body with Binance's HTTP status: 400 for business
and parameter errors, 401 for key errors, 404 for an unknown path, 429 when a limit is hit.
FastAPI's own errors (validation, 404, 405) and anything unexpected are mapped here too, so a
client never sees HTML or a traceback, and a 5xx only for a real internal failure.
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from perpex.errors import ExchangeError

log = logging.getLogger("perpex.server")

# Binance's wording (BINANCE_API.md §5.4), for the errors the server raises itself.
UNKNOWN: Final = (-1000, "An unknown error occured while processing the request.")
TOO_MANY_REQUESTS: Final = -1003
TIMESTAMP: Final = (-1021, "Timestamp for this request is outside of the recvWindow.")
BAD_SIGNATURE: Final = (-1022, "Signature for this request is not valid.")
KEY_FORMAT: Final = (-2014, "API-key format invalid.")
BAD_KEY: Final = (-2015, "Invalid API-key, IP, or permissions for action.")
UNKNOWN_ORDER: Final = (-2011, "Unknown order sent.")
NO_SUCH_ORDER: Final = (-2013, "Order does not exist.")

_KEY_CODES: Final = frozenset({-2014, -2015})


class ApiError(Exception):
    """A refusal with Binance's code and message; `status` is the HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status

    @classmethod
    def of(cls, pair: tuple[int, str], status: int | None = None) -> ApiError:
        code, msg = pair
        return cls(code, msg, status if status is not None else _status_for(code))


def _status_for(code: int) -> int:
    if code in _KEY_CODES:
        return 401
    if code == TOO_MANY_REQUESTS:
        return 429
    return 400


def mandatory(param: str) -> ApiError:
    return ApiError(
        -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    )


def illegal(param: str) -> ApiError:
    return ApiError(
        -1100, f"Illegal characters found in parameter '{param}'; legal range is '{_LEGAL}'."
    )


def not_required(param: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{param}' sent when not required.")


_LEGAL: Final = "^[A-Za-z0-9.:/_-]{1,64}$"


def body(code: int, msg: str) -> dict[str, object]:
    return {"code": code, "msg": msg}


def error_response(
    code: int, msg: str, status: int | None = None, request: Request | None = None
) -> JSONResponse:
    headers: dict[str, str] = {}
    usage = getattr(request.state, "usage", None) if request is not None else None
    if usage is not None:  # the limits' counts ride on refusals too, as on Binance
        headers["X-MBX-USED-WEIGHT-1M"] = str(usage.weight_1m)
        if usage.orders_1m is not None:
            headers["X-MBX-ORDER-COUNT-1M"] = str(usage.orders_1m)
    return JSONResponse(
        body(code, msg), status_code=status if status else _status_for(code), headers=headers
    )


def install_handlers(app: FastAPI) -> None:
    """Map every exception a route can raise to Binance's body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.code, exc.msg, exc.status, request)

    @app.exception_handler(ExchangeError)
    async def _exchange_error(request: Request, exc: ExchangeError) -> JSONResponse:
        return error_response(exc.code, exc.msg, None, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        loc = errors[0].get("loc", ()) if errors else ()
        name = str(loc[-1]) if loc else "parameter"
        err = mandatory(name)
        return error_response(err.code, err.msg, err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(
                -5000, f"Path {request.url.path}, Method {request.method} is invalid", 404
            )
        if exc.status_code == 405:
            return error_response(
                -5000, f"Path {request.url.path}, Method {request.method} is invalid", 405
            )
        return error_response(-1000, str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(UNKNOWN[0], UNKNOWN[1], 500)


__all__ = [
    "BAD_KEY",
    "BAD_SIGNATURE",
    "KEY_FORMAT",
    "NO_SUCH_ORDER",
    "TIMESTAMP",
    "UNKNOWN",
    "UNKNOWN_ORDER",
    "ApiError",
    "body",
    "error_response",
    "illegal",
    "install_handlers",
    "mandatory",
    "not_required",
]
