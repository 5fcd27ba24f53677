"""The lab's deploy identity, made through the API as SETUP.md tells a user to make it: the
role with exactly the privileges the plan's features need, a user with that role on ``/``, and a
privilege-separated token with the same role. root@pam stays for the lab's own housekeeping."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ailab_deploy.core.privileges import ROLE, TOKEN_NAME, USER, privileges
from ailab_deploy.lab.emulator.state import write_atomic


class Caller(Protocol):
    def call(self, method: str, path: str, params: Any = None, *, retry: bool = True) -> Any: ...


def ensure_deploy_token(
    api: Caller,
    release: str,
    features: Iterable[str] | None,
    secret_file: Path,
    *,
    without: Iterable[str] = (),
    user: str = USER,
    token: str = TOKEN_NAME,
) -> str:
    """Create or bring up to date the role, user and token; the token's secret goes to the 0600
    ``secret_file``. ``without`` leaves privileges out (the tests' one-privilege-less role).
    Returns the token id."""
    role = ROLE
    wanted = [p for p in privileges(release, features) if p not in set(without)]
    roles = {r["roleid"] for r in api.call("GET", "access/roles")}
    if role in roles:
        api.call("PUT", f"access/roles/{role}", {"privs": ",".join(wanted)})
    else:
        api.call("POST", "access/roles", {"roleid": role, "privs": ",".join(wanted)})
    users = {u["userid"] for u in api.call("GET", "access/users")}
    if user not in users:
        api.call("POST", "access/users", {"userid": user, "comment": "ailab-deploy"})
    api.call("PUT", "access/acl", {"path": "/", "users": user, "roles": role})
    tokenid = f"{user}!{token}"
    tokens = {t["tokenid"] for t in api.call("GET", f"access/users/{user}/token")}
    if token in tokens and not secret_file.exists():  # the secret is shown once: make a new one
        api.call("DELETE", f"access/users/{user}/token/{token}")
        tokens.discard(token)
    if token not in tokens:
        made = api.call(
            "POST", f"access/users/{user}/token/{token}", {"privsep": 1, "comment": "ailab-deploy"}
        )
        secret_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(secret_file, str(made["value"]) + "\n", mode=0o600)
    api.call("PUT", "access/acl", {"path": "/", "tokens": tokenid, "roles": role})
    return tokenid
