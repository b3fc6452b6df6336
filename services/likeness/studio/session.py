"""The Studio's sessions: the caller's API key encrypted in an HttpOnly cookie, and CSRF tokens.

The Studio keeps nothing of its own: a session is the Flask cookie, signed and, for the key inside it,
encrypted with a key derived from `studio_secret` (Fernet: AES-128-CBC + HMAC-SHA256). Page scripts never see
the API key (HttpOnly), and the cookie is useless without the secret. Every replica with the same secret
reads every session. A form or fetch that changes something must carry the session's CSRF token (a hidden
field, or the `X-CSRF-Token` header), compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from flask import abort, request, session

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class KeyVault:
    """Encrypts and decrypts the API key kept in the session cookie."""

    def __init__(self, secret: str) -> None:
        digest = hashlib.sha256(b"likeness-studio-session\x00" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, api_key: str) -> str:
        return self._fernet.encrypt(api_key.encode()).decode()

    def open(self, sealed: str) -> str:
        """The key, or "" when the cookie was made with another secret or tampered with."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError):
            return ""


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """403 unless the request carries the session's CSRF token."""
    expected = session.get(CSRF_FIELD, "")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        abort(403, description="the form expired or did not come from this page; reload it and try again")
