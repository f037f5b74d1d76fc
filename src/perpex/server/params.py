"""Request parameters as Binance reads them: the raw query string and the raw body, together.

Clients differ (BINANCE_API.md §2): ccxt sends POST parameters as a form body, the official
connector in the query string with a JSON content type and no body, hummingbot a form body with
`timestamp` last. `Params` parses both, whatever the declared content type, keeps the raw bytes
for the signature check (which must run over the bytes received, never a re-encoding), and
offers strict getters that refuse with Binance's codes (-1102 mandatory, -1100 illegal
characters, -1101 duplicate). Values stay strings: the facade's parser turns them into exact
units and refuses what is off the tick or the step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import parse_qsl

from fastapi import Request

from perpex.server.errors import ApiError, illegal, mandatory

MAX_BODY_BYTES: Final = 64 * 1024  # a batch of 5 orders is ~2 KB; anything near this is abuse
MAX_PARAMS: Final = 64
SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{1,32}")
INT_RE: Final = re.compile(r"-?[0-9]{1,19}")


class Params:
    """The parameters of one request; `raw_query` and `raw_body` are the bytes received."""

    def __init__(self, raw_query: bytes, raw_body: bytes) -> None:
        self.raw_query = raw_query
        self.raw_body = raw_body
        self._values: dict[str, str] = {}
        for raw in (raw_query, raw_body):
            if not raw:
                continue
            try:
                text = raw.decode("utf-8")
                pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
            except (UnicodeDecodeError, ValueError):
                raise ApiError(-1100, "Illegal characters found in a parameter.") from None
            for key, value in pairs:
                if key in self._values:
                    raise ApiError(-1101, f"Duplicate values for parameter '{key}'.")
                self._values[key] = value
                if len(self._values) > MAX_PARAMS:
                    raise ApiError(-1101, "Too many parameters sent for this endpoint.")

    # -- plain access ---------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def get(self, name: str) -> str | None:
        """The value, or None when absent or empty (Binance treats both as not sent)."""
        value = self._values.get(name)
        return value if value else None

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise mandatory(name)
        return value

    # -- typed getters (Binance's refusals) -----------------------------------------------
    def symbol(self, name: str = "symbol", *, required: bool = True) -> str | None:
        value = self.require(name) if required else self.get(name)
        if value is not None and not SYMBOL_RE.fullmatch(value):
            raise illegal(name)
        return value

    def integer(
        self, name: str, *, required: bool = False, low: int | None = None, high: int | None = None
    ) -> int | None:
        value = self.require(name) if required else self.get(name)
        if value is None:
            return None
        if not INT_RE.fullmatch(value):
            raise illegal(name)
        number = int(value)
        if (low is not None and number < low) or (high is not None and number > high):
            raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return number

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return lowered == "true"

    def choice(self, name: str, allowed: frozenset[str], *, required: bool = False) -> str | None:
        value = self.require(name) if required else self.get(name)
        if value is not None and value not in allowed:
            raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return value


async def read_params(request: Request) -> Params:
    """The request's parameters (query and body), the body bounded by `MAX_BODY_BYTES`."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise ApiError(-1000, "Request body too large.", 413)
    raw_body = b""
    if request.method in ("POST", "PUT", "DELETE"):
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(-1000, "Request body too large.", 413)
            chunks.append(chunk)
        raw_body = b"".join(chunks)
    raw_query = request.scope.get("query_string", b"")
    return Params(raw_query, raw_body)


__all__ = ["MAX_BODY_BYTES", "Params", "read_params"]
