"""Signed requests (BINANCE_API.md §2): the key header, the timestamp window, the signature.

The signature is checked over the raw bytes received: `totalParams` is the query string
followed by the body with no separator (Binance's rule), each with its `signature=` pair
removed, never a re-encoding of parsed values (clients order and format parameters
differently: ccxt sends a form body, Binance's connector the query string with a JSON content
type and no body, hummingbot a form body with `timestamp` last and no `recvWindow`).

Two kinds of key, as Binance: HMAC (`signature` = hex of HMAC-SHA256(secret, totalParams),
any letter case) and Ed25519 (`signature` = base64 of the Ed25519 signature of totalParams,
URL-encoded by the client and decoded by `Params`; only the public key is stored).

Refusals, in the order they are checked: -2014 (no or malformed key header), -2015 (unknown
or revoked key; HTTP 401 both), -1102 (timestamp missing or malformed), -1021 (recvWindow
over 60,000, or the timestamp outside the window: Binance accepts a request when
`timestamp < serverTime + 1000` and `serverTime - timestamp <= recvWindow`), -1102
(signature missing), -1022 (signature not valid).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Mapping
from hashlib import sha256
from typing import Final
from urllib.parse import unquote_to_bytes

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from perpex.server.config import Limits
from perpex.server.errors import BAD_KEY, BAD_SIGNATURE, KEY_FORMAT, TIMESTAMP, ApiError, mandatory
from perpex.server.keystore import ED25519, HMAC, KeyRecord, KeyStore
from perpex.server.params import Params

API_KEY_HEADER: Final = "x-mbx-apikey"
AHEAD_MS: Final = 1000  # how far a client's clock may run ahead of the server's (Binance)
_KEY_RE: Final = re.compile(r"[A-Za-z0-9]{1,128}")
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,19}")
_HEX_SIGNATURE_CHARS: Final = 64
_AHEAD: Final = (-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def api_key_of(headers: Mapping[str, str], keys: KeyStore) -> KeyRecord:
    """The live key named by the `X-MBX-APIKEY` header (listenKey calls need no signature).
    `headers` is case-insensitive (Starlette's `Headers`), or a mapping with lower-case
    names."""
    value = headers.get(API_KEY_HEADER)
    if not value or not _KEY_RE.fullmatch(value):
        raise ApiError.of(KEY_FORMAT)
    record = keys.lookup(value)
    if record is None:
        raise ApiError.of(BAD_KEY)
    return record


def signed_payload(params: Params) -> bytes:
    """`totalParams` without the signature pair: exactly the bytes the client signed."""
    return _without_signature(params.raw_query) + _without_signature(params.raw_body)


def _without_signature(raw: bytes) -> bytes:
    """`raw` with every `signature=...` pair and the `&` before it (or after it, when it comes
    first) removed; other pairs are kept byte for byte, empty ones included."""
    if b"signature" not in raw and b"%" not in raw:
        return raw  # the common case of a body or query without one: no copy
    pairs = raw.split(b"&")
    kept = [pair for pair in pairs if not _is_signature(pair)]
    return raw if len(kept) == len(pairs) else b"&".join(kept)


def _is_signature(pair: bytes) -> bool:
    name = pair.split(b"=", 1)[0]
    if name == b"signature":
        return True
    # `Params` percent-decodes names (`signatur%65`), so the pair it reads as the signature is
    # the one removed here. (A `+` decodes to a space, which no `signature` holds.)
    return b"%" in name and unquote_to_bytes(name) == b"signature"


def verify_signed(
    headers: Mapping[str, str],
    params: Params,
    keys: KeyStore,
    limits: Limits,
    *,
    now_ms: int | None = None,
) -> KeyRecord:
    """The key of a signed request, or the refusal (`ApiError`) Binance would answer.
    `now_ms` is the server's time (tests); the wall clock otherwise."""
    record = api_key_of(headers, keys)
    stamp = params.get("timestamp")
    if stamp is None or not _TIMESTAMP_RE.fullmatch(stamp):
        raise mandatory("timestamp")
    timestamp_ms = int(stamp)
    recv_window_ms = params.integer("recvWindow", low=0)
    if recv_window_ms is None:
        recv_window_ms = limits.default_recv_window_ms
    if recv_window_ms > limits.max_recv_window_ms:
        raise ApiError(
            -1021, f"recvWindow must be less than or equal to {limits.max_recv_window_ms}."
        )
    server_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if timestamp_ms >= server_ms + AHEAD_MS:
        raise ApiError.of(_AHEAD)
    if server_ms - timestamp_ms > recv_window_ms:
        raise ApiError.of(TIMESTAMP)
    signature = params.get("signature")
    if signature is None:
        raise mandatory("signature")
    if not signature_ok(record, signed_payload(params), signature):
        raise ApiError.of(BAD_SIGNATURE)
    return record


def signature_ok(record: KeyRecord, payload: bytes, signature: str) -> bool:
    """Whether `signature` (as `Params` decoded it) signs `payload` with `record`'s key."""
    if not signature.isascii():
        return False
    if record.kind == HMAC and record.secret is not None:
        if len(signature) != _HEX_SIGNATURE_CHARS:
            return False
        expected = hmac.new(record.secret.encode(), payload, sha256).hexdigest().encode()
        return hmac.compare_digest(expected, signature.lower().encode())
    if record.kind == ED25519 and record.public_key is not None:
        raw = _base64(signature)
        if raw is None:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(record.public_key).verify(raw, payload)
        except (InvalidSignature, ValueError):
            return False
        return True
    return False


def _base64(text: str) -> bytes | None:
    """Standard base64 (a `+` the client left unencoded arrives as a space) or base64url."""
    text = text.replace(" ", "+")
    text += "=" * (-len(text) % 4)
    try:
        altchars = b"-_" if "-" in text or "_" in text else None
        return base64.b64decode(text, altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


__all__ = [
    "AHEAD_MS",
    "API_KEY_HEADER",
    "api_key_of",
    "signature_ok",
    "signed_payload",
    "verify_signed",
]
