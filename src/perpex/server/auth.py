"""Signed requests (BINANCE_API.md §2): the key header, the timestamp window, the signature.

The signature is checked over the raw bytes received, `query + body` with the `signature=`
pair removed (Binance concatenates the two with no separator), never over a re-encoding.
Refusals: -2014 (no or malformed key), -2015 (unknown or revoked key), -1021 (timestamp outside
the recvWindow, or recvWindow over 60,000), -1022 (bad signature), -1102 (a missing
timestamp or signature).
"""

from __future__ import annotations

import hmac
import re
import time
from hashlib import sha256
from typing import Final

from perpex.server.config import Limits
from perpex.server.errors import BAD_KEY, BAD_SIGNATURE, KEY_FORMAT, TIMESTAMP, ApiError, mandatory
from perpex.server.keystore import KeyRecord, KeyStore
from perpex.server.params import Params

API_KEY_HEADER: Final = "x-mbx-apikey"
_KEY_RE: Final = re.compile(r"[A-Za-z0-9]{1,128}")
_SIGNATURE_PAIR: Final = re.compile(rb"&?signature=[^&]*")


def api_key_of(headers: object, keys: KeyStore) -> KeyRecord:
    """The key named by the `X-MBX-APIKEY` header (listenKey calls need no signature)."""
    value = headers.get(API_KEY_HEADER)  # type: ignore[attr-defined]
    if not value or not _KEY_RE.fullmatch(value):
        raise ApiError.of(KEY_FORMAT)
    record = keys.lookup(value)
    if record is None:
        raise ApiError.of(BAD_KEY)
    return record


def signed_payload(params: Params) -> bytes:
    """`totalParams` without the signature pair: what the client signed."""
    query = _SIGNATURE_PAIR.sub(b"", params.raw_query).lstrip(b"&")
    body = _SIGNATURE_PAIR.sub(b"", params.raw_body).lstrip(b"&")
    return query + body


def verify_signed(headers: object, params: Params, keys: KeyStore, limits: Limits) -> KeyRecord:
    record = api_key_of(headers, keys)
    timestamp = params.integer("timestamp", required=True, low=0)
    recv_window = params.integer("recvWindow", low=1) or limits.default_recv_window_ms
    if recv_window > limits.max_recv_window_ms:
        raise ApiError(-1021, "recvWindow must be less than 60000.")
    now_ms = time.time_ns() // 1_000_000
    assert timestamp is not None
    if not (timestamp < now_ms + 1000 and now_ms - timestamp <= recv_window):
        raise ApiError.of(TIMESTAMP)
    signature = params.get("signature")
    if signature is None:
        raise mandatory("signature")
    if not _signature_ok(record, signed_payload(params), signature):
        raise ApiError.of(BAD_SIGNATURE)
    return record


def _signature_ok(record: KeyRecord, payload: bytes, signature: str) -> bool:
    if record.kind == "HMAC" and record.secret is not None:
        expected = hmac.new(record.secret.encode(), payload, sha256).hexdigest()
        return hmac.compare_digest(expected, signature.lower())
    return False


__all__ = ["API_KEY_HEADER", "api_key_of", "signed_payload", "verify_signed"]
