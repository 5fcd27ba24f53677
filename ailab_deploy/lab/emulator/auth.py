"""PVE authentication: tickets (cookie + CSRF token) and API tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from .apierror import auth_error

_TICKET = re.compile(r"^PVE:([^:]+):([0-9A-F]{8})::(.+)$")


@dataclass(frozen=True)
class Identity:
    userid: str  # user@realm
    tokenid: str | None = None
    via: str = "ticket"  # ticket | token

    @property
    def authuser(self) -> str:
        """What PVE puts into UPIDs: ``user@realm`` or ``user@realm!token``."""
        return f"{self.userid}!{self.tokenid}" if self.tokenid else self.userid


def _sign(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode().rstrip("=")


class Authenticator:
    def __init__(
        self,
        key: bytes,
        users: dict[str, str],
        tokens: dict[str, str],
        ticket_lifetime: int = 7200,
        known: Callable[[str], bool] = lambda _tokenid: True,
    ) -> None:
        self.known = known  # whether a token still exists (its secret alone is not enough)
        self.key = key
        self.users = users
        self.tokens = tokens
        self.ticket_lifetime = ticket_lifetime

    # --- tickets ---------------------------------------------------------------------------

    def issue(self, userid: str, now: float | None = None) -> tuple[str, str]:
        stamp = f"{int(now if now is not None else time.time()):08X}"
        plain = f"PVE:{userid}:{stamp}"
        ticket = f"{plain}::{_sign(self.key, plain)}"
        csrf = f"{stamp}:{_sign(self.key, stamp + ':' + userid)}"
        return ticket, csrf

    def verify_ticket(self, ticket: str) -> str | None:
        match = _TICKET.match(ticket)
        if not match:
            return None
        userid, stamp, signature = match.groups()
        expected = _sign(self.key, f"PVE:{userid}:{stamp}")
        if not hmac.compare_digest(expected, signature):
            return None
        age = time.time() - int(stamp, 16)
        if age < -300 or age > self.ticket_lifetime:
            return None
        return userid

    def verify_csrf(self, token: str | None, userid: str) -> bool:
        if not token or ":" not in token:
            return False
        stamp, signature = token.split(":", 1)
        return hmac.compare_digest(_sign(self.key, f"{stamp}:{userid}"), signature)

    def login(self, username: str, password: str, realm: str | None) -> str | None:
        """The userid for valid credentials (a password or a still-valid ticket)."""
        userid = username if "@" in username or not realm else f"{username}@{realm}"
        if password.startswith("PVE:"):
            return userid if self.verify_ticket(password) == userid else None
        known = self.users.get(userid)
        if known is not None and hmac.compare_digest(known.encode(), password.encode()):
            return userid
        return None

    # --- requests --------------------------------------------------------------------------

    def authenticate(
        self, method: str, cookie_header: str | None, authorization: str | None, csrf: str | None
    ) -> Identity:
        """The caller's identity, or the ApiError PVE would answer (401 variants)."""
        if authorization and authorization.startswith("PVEAPIToken"):
            value = authorization[len("PVEAPIToken") :].lstrip("= ").strip()
            tokenid, sep, secret = value.rpartition("=")
            known = self.tokens.get(tokenid) if sep else None
            if (
                known is None
                or not self.known(tokenid)
                or not hmac.compare_digest(known.encode(), secret.encode())
            ):
                raise auth_error("Authentication failed!")
            userid, _, name = tokenid.partition("!")
            return Identity(userid, name, via="token")
        ticket: str | None = _cookie(cookie_header, "PVEAuthCookie")
        if ticket is None and authorization and authorization.startswith("PVEAuthCookie="):
            ticket = unquote(authorization[len("PVEAuthCookie=") :])
        if ticket is None:
            raise auth_error("No ticket")
        ticket_user = self.verify_ticket(ticket)
        if ticket_user is None:
            raise auth_error("Authentication failed!")
        if method != "GET" and not self.verify_csrf(csrf, ticket_user):
            raise auth_error("Permission denied - invalid csrf token")
        return Identity(ticket_user)


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return unquote(value.strip('"'))
    return None
