"""Shared Earthdata Login state of one emulator: users, bearer tokens, one-time authorization codes and the
data host's sessions (cookie value -> user). The login and data hosts run in one process and share it,
standing in for TEA's server-to-server ``POST /oauth/token`` code exchange with URS (not emulated)."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CODE_TTL_S = 60.0  # life of an authorization code (assumed; single use)
COOKIE_NAME = "asf-urs"  # TEA's session cookie (a JWT there, a random value here)


@dataclass(frozen=True)
class _Code:
    user: str
    redirect_uri: str
    expires: float


class AuthState:
    """Thread-safe credentials, codes and sessions."""

    def __init__(self, users: Mapping[str, str], tokens: Iterable[str], session_ttl_s: float) -> None:
        self._users = dict(users)
        self._tokens = set(tokens)
        self._session_ttl_s = float(session_ttl_s)
        self._codes: dict[str, _Code] = {}
        self._sessions: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def check_basic(self, header: str | None) -> str | None:
        """The user of a valid ``Authorization: Basic`` header, else None."""
        if not header or not header[:6].lower() == "basic ":
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        known = self._users.get(user)
        return user if known is not None and hmac.compare_digest(known, password) else None

    def token_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._tokens

    def new_token(self) -> str:
        """A fresh valid bearer token (what URS's find_or_create_token hands out)."""
        tok = "EDL-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(tok)
        return tok

    def new_code(self, user: str, redirect_uri: str) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(user, redirect_uri, time.time() + CODE_TTL_S)
        return code

    def redeem_code(self, code: str) -> str | None:
        """The user of a valid, unexpired code, used up by this call; else None."""
        with self._lock:
            c = self._codes.pop(code, None)
        return c.user if c is not None and c.expires >= time.time() else None

    def new_session(self, user: str) -> tuple[str, float]:
        """A fresh session cookie value for ``user`` and its expiry (epoch s)."""
        value = secrets.token_urlsafe(32)
        expires = time.time() + self._session_ttl_s
        with self._lock:
            self._sessions[value] = (user, expires)
        return value, expires

    def session_user(self, value: str) -> str | None:
        with self._lock:
            s = self._sessions.get(value)
        return s[0] if s is not None and s[1] >= time.time() else None
