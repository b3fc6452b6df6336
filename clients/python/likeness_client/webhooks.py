"""Webhook signatures in the Standard Webhooks scheme, which the trainer uses to sign each POST and a receiver uses
to verify it: the `webhook-signature` header is `v1,<base64 HMAC-SHA256>` of `"{webhook-id}.{webhook-timestamp}.
{body}"` keyed with the job's webhook secret, and several space-separated signatures may be sent during a secret
rotation. A `whsec_<base64>` secret is keyed with its decoded bytes, as the Standard Webhooks libraries do, so
their verifiers accept the deliveries too; any other secret with its UTF-8 bytes.

    from likeness_client.webhooks import verify

    event = verify(secret, request.headers, request.body)   # raises InvalidSignature, else the parsed JSON
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
#: How far a delivery's timestamp may be from the receiver's clock, against replays.
TOLERANCE_SECONDS = 300


class InvalidSignature(ValueError):
    """The delivery was not signed with this secret, or is too old or from the future (a replay)."""


#: The Standard Webhooks prefix of a base64-encoded secret.
SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: a `whsec_` secret's decoded bytes, else its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except ValueError as error:
            raise ValueError(f"a {SECRET_PREFIX} secret must be base64 after the prefix: {error}") from None
    return secret.encode()


def signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, delivery_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery."""
    moment = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(moment),
        SIGNATURE_HEADER: signature(secret, delivery_id, moment, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """Checks a delivery's signature and timestamp and returns its JSON payload; raises `InvalidSignature`."""
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        delivery_id = lowered[ID_HEADER]
        timestamp = int(lowered[TIMESTAMP_HEADER])
        sent = lowered[SIGNATURE_HEADER].split()
    except (KeyError, ValueError) as error:
        raise InvalidSignature(f"missing or malformed Standard Webhooks headers: {error}") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidSignature(f"timestamp {timestamp} is more than {tolerance} s from now")
    expected = signature(secret, delivery_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in sent):
        raise InvalidSignature("no signature matches this secret")
    return json.loads(body)
