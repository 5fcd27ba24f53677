"""PVE's permission model (pve-access-control: AccessControl.pm, RPCEnvironment.pm).

Users (``user@realm``), groups, API tokens with or without privilege separation, roles (the
built-in ones of the emulated release, and custom ones) and ACL entries on paths with
``propagate``. ``permissions(authid, path)`` resolves them as PVE does:

* ``root@pam`` holds every privilege;
* along the path from ``/`` to the checked path, entries for the token, else the user, else
  the user's groups replace what was found higher up; an entry higher up counts only if it
  propagates, one on the path itself always;
* a guest or storage in a pool also gets the roles granted on ``/pool/{pool}``;
* a token without privilege separation has its user's privileges; one with it, the
  intersection of its own and its user's.

Refusals are PVE's ``raise_perm_exc``: ``403 Permission check failed (/vms/100, VM.Allocate)``.
The state lives in ``<lab-dir>/state/access.json`` (mode 0600: it holds token secrets).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .apierror import ApiError, fail

ROOT = "root@pam"

# Privilege groups per category: (root-only, admin, user, audit), as AccessControl.pm lists them.
# 9.1 (pve-access-control 9.0.x) dropped VM.Monitor for the VM.GuestAgent.* privileges and added
# VM.Replicate; 8.4 (pve-access-control 8.2.x) still has VM.Monitor.
_VM_ADMIN = [
    "VM.Config.Disk",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Allocate",
    "VM.Clone",
    "VM.Migrate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
]
_VM_USER = ["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.PowerMgmt"]
_GUEST_AGENT_USER = ["VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite"]
_VM_9 = (
    (),
    [*_VM_ADMIN, "VM.GuestAgent.Unrestricted", "VM.Replicate"],
    [*_VM_USER, *_GUEST_AGENT_USER],
    ("VM.Audit", "VM.GuestAgent.Audit"),
)
_VM_8 = ((), [*_VM_ADMIN, "VM.Monitor"], _VM_USER, ("VM.Audit",))
_COMMON: dict[str, tuple[Iterable[str], Iterable[str], Iterable[str], Iterable[str]]] = {
    "Sys": (
        ("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"),
        ("Sys.Console", "Sys.Syslog"),
        (),
        ("Sys.Audit",),
    ),
    "Datastore": (
        (),
        ("Datastore.Allocate", "Datastore.AllocateTemplate"),
        ("Datastore.AllocateSpace",),
        ("Datastore.Audit",),
    ),
    "SDN": ((), ("SDN.Allocate", "SDN.Audit"), ("SDN.Use",), ("SDN.Audit",)),
    "User": (("Realm.Allocate",), ("User.Modify", "Group.Allocate", "Realm.AllocateUser"), (), ()),
    "Pool": ((), ("Pool.Allocate",), ("Pool.Audit",), ("Pool.Audit",)),
    "Mapping": ((), ("Mapping.Modify",), ("Mapping.Use",), ("Mapping.Audit",)),
}
PRIVILEGE_GROUPS = {"9.1": {"VM": _VM_9, **_COMMON}, "8.4": {"VM": _VM_8, **_COMMON}}


def builtin_roles(release: str) -> dict[str, frozenset[str]]:
    """PVE's special roles of ``release``, built from the groups as ``create_roles`` does."""
    valid = {"Permissions.Modify"}
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for category, (root, admin, user, audit) in PRIVILEGE_GROUPS[release].items():
        valid |= {*root, *admin, *user, *audit}
        roles.setdefault(f"PVE{category}Admin", set()).update(admin, user, audit)
        roles["PVEAdmin"].update(admin, user, audit)
        if tuple(user):
            roles.setdefault(f"PVE{category}User", set()).update(user, audit)
        roles["PVEAuditor"].update(audit)
    roles["PVEAdmin"].discard("Mapping.Modify")  # only Administrator and PVEMappingAdmin have it
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = valid
    return {name: frozenset(privs) for name, privs in roles.items()}


def all_privileges(release: str) -> frozenset[str]:
    return builtin_roles(release)["Administrator"]


def permission_error(what: str = "") -> ApiError:
    """PVE's ``raise_perm_exc``."""
    return ApiError(403, f"Permission check failed{f' ({what})' if what else ''}\n")


def split_authid(authid: str) -> tuple[str, str | None]:
    userid, sep, token = authid.partition("!")
    return userid, (token if sep else None)


def normalize_path(path: str) -> str:
    """PVE's normalize_path: one leading slash, no doubled or trailing ones."""
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts)


@dataclass
class AccessState:
    """What PVE keeps in user.cfg (and token secrets, which PVE keeps in priv/token.cfg)."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # userid -> enable, comment, ...
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # user@realm!name -> privsep, ...
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # groupid -> comment
    roles: dict[str, list[str]] = field(default_factory=dict)  # custom roles only
    # path -> kind (user|group|token) -> ugid -> role -> propagate
    acl: dict[str, dict[str, dict[str, dict[str, int]]]] = field(default_factory=dict)

    def members(self, groupid: str) -> set[str]:
        return {u for u, info in self.users.items() if groupid in info.get("groups", [])}


class AccessControl:
    """Users, groups, tokens, roles and ACLs of one emulated node, and the checks on them."""

    def __init__(
        self,
        release: str,
        path: Path | None,
        *,
        seed_users: Mapping[str, str] = {},
        seed_tokens: Mapping[str, str] = {},
        seed_privsep: Mapping[str, bool] = {},
        pool_of_vm: Callable[[int], str | None] = lambda _vmid: None,
    ) -> None:
        self.release = release
        self.builtin = builtin_roles(release)
        self.path = path
        self.lock = threading.RLock()
        self.pool_of_vm = pool_of_vm
        self.state = AccessState()
        self.secrets: dict[str, str] = {}  # tokenid -> secret of tokens made through the API
        self.passwords: dict[str, str] = {}  # userid -> password set through the API
        if path is not None and path.exists():
            raw = json.loads(path.read_text())
            self.state = AccessState(
                raw.get("users", {}),
                raw.get("tokens", {}),
                raw.get("groups", {}),
                raw.get("roles", {}),
                raw.get("acl", {}),
            )
            self.secrets = dict(raw.get("secrets", {}))
            self.passwords = dict(raw.get("passwords", {}))
        # users and tokens named in settings.json exist (tokens without privilege separation
        # unless the settings say otherwise: the lab's housekeeping token acts as root@pam)
        for userid in seed_users:
            self.state.users.setdefault(userid, {"enable": 1})
        for tokenid in seed_tokens:
            userid, _ = split_authid(tokenid)
            self.state.users.setdefault(userid, {"enable": 1})
            self.state.tokens.setdefault(tokenid, {"privsep": int(seed_privsep.get(tokenid, False))})
        self.state.users.setdefault(ROOT, {"enable": 1})

    def save(self) -> None:
        if self.path is None:
            return
        from .state import write_atomic

        data = {
            "users": self.state.users,
            "tokens": self.state.tokens,
            "groups": self.state.groups,
            "roles": self.state.roles,
            "acl": self.state.acl,
            "secrets": self.secrets,
            "passwords": self.passwords,
        }
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True), mode=0o600)

    # --- roles ---------------------------------------------------------------------------------

    def role(self, name: str) -> frozenset[str] | None:
        if name in self.builtin:
            return self.builtin[name]
        custom = self.state.roles.get(name)
        return None if custom is None else frozenset(custom)

    def role_names(self) -> list[str]:
        return sorted({*self.builtin, *self.state.roles})

    # --- resolution ----------------------------------------------------------------------------

    def _roles(self, authid: str, path: str) -> dict[str, int]:
        """AccessControl::roles: role -> propagate on ``path`` for a user or a privsep token."""
        state = self.state
        split = [""] if path == "/" else path.split("/")
        roles: dict[str, int] = {}
        current = ""
        for index, part in enumerate(split):
            final = index == len(split) - 1
            current = "/" if part == "" and index == 0 else normalize_path(f"{current}/{part}")
            entries = state.acl.get(current, {})
            found: dict[str, int] | None = None
            for kind in ("token", "user"):
                given = entries.get(kind, {}).get(authid)
                if given:
                    picked = {r: p for r, p in given.items() if final or p}
                    if picked:
                        found = picked
                        break
            if found is None:
                userid, _ = split_authid(authid)
                picked = {}
                for groupid, given in entries.get("group", {}).items():
                    if userid in state.members(groupid) and "!" not in authid:
                        picked.update({r: p for r, p in given.items() if final or p})
                found = picked or None
            if found is not None:
                roles = found
        if "NoAccess" in roles:
            return {"NoAccess": roles["NoAccess"]}
        return roles

    def _privileges(self, authid: str, path: str) -> dict[str, int]:
        roles = self._roles(authid, path)
        pool = self._pool_of(path)
        if pool is not None and "NoAccess" not in roles:
            pool_roles = self._roles(authid, f"/pool/{pool}")
            if "NoAccess" in pool_roles:
                roles = {"NoAccess": 0}
            else:
                for role in pool_roles:
                    roles.setdefault(role, 0)
        privileges: dict[str, int] = {}
        for role, propagate in roles.items():
            for privilege in self.role(role) or ():
                privileges[privilege] = privileges.get(privilege, 0) or propagate
        return privileges

    def _pool_of(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "vms" and parts[1].isdigit():
            return self.pool_of_vm(int(parts[1]))
        return None

    def permissions(self, authid: str, path: str) -> dict[str, int]:
        """RPCEnvironment::permissions: privilege -> propagate flag, for a user or a token."""
        path = normalize_path(path)
        with self.lock:
            userid, token = split_authid(authid)
            if token is not None:
                info = self.state.tokens.get(authid)
                if info is None:
                    return {}
                user_privileges = self.permissions(userid, path)
                if not int(info.get("privsep", 1)):
                    return user_privileges
                own = self._privileges(authid, path)
                return {p: int(bool(own[p] and user_privileges[p])) for p in own if p in user_privileges}
            if userid == ROOT:
                return {p: 1 for p in self.builtin["Administrator"]}
            user = self.state.users.get(userid)
            if user is None or not int(user.get("enable", 1)):
                return {}
            return self._privileges(userid, path)

    # --- checks ---------------------------------------------------------------------------------

    def check(self, authid: str, path: str, privileges: Iterable[str], *, any_of: bool = False) -> None:
        """RPCEnvironment::check / check_any: raise PVE's 403 naming the path and privilege."""
        if self.allowed(authid, path, privileges, any_of=any_of):
            return
        privileges = list(privileges)
        path = normalize_path(path)
        held = self.permissions(authid, path)
        if any_of:
            raise permission_error(f"{path}, {'|'.join(privileges)}")
        missing = next(p for p in privileges if p not in held)
        raise permission_error(f"{path}, {missing}")

    def allowed(self, authid: str, path: str, privileges: Iterable[str], *, any_of: bool = False) -> bool:
        if authid == ROOT:
            return True
        held = self.permissions(authid, path)
        wanted = list(privileges)
        return any(p in held for p in wanted) if any_of else all(p in held for p in wanted)

    def sees_all(self, authid: str, prefix: str, privileges: Iterable[str]) -> bool:
        """Whether every object below ``prefix`` grants one of ``privileges`` (no entry deeper
        down, no pools): listings can then skip the per-object checks."""
        if authid == ROOT:
            return True
        held = self.permissions(authid, prefix)
        if not any(held.get(p) for p in privileges):  # held and propagated
            return False
        deeper = any(path.startswith(prefix + "/") for path in self.state.acl)
        pools = any(path.startswith("/pool") for path in self.state.acl)
        return not deeper and not pools

    def check_vm(
        self, authid: str, vmid: int | str, privileges: Iterable[str], *, any_of: bool = False
    ) -> None:
        """check_vm_perm: the VM's pool grants it too (already folded into /vms/{vmid})."""
        self.check(authid, f"/vms/{vmid}", privileges, any_of=any_of)

    def check_api(self, declared: Mapping[str, Any] | None, authid: str, params: Mapping[str, str]) -> None:
        """check_api2_permissions for an endpoint's declared ``permissions``."""
        if authid == ROOT:
            return
        if declared is None:
            raise permission_error("user != root@pam")
        if declared.get("user") == "all":
            return
        check = declared.get("check")
        if check is None:
            raise permission_error()
        self._exec(check, authid, params, noerr=False)

    def _exec(self, check: list[Any], authid: str, params: Mapping[str, str], *, noerr: bool) -> bool:
        """exec_api2_perm_check: ``perm`` (with ``any``, ``require_param``), ``and``, ``or``,
        ``userid-param``, ``userid-group`` and ``perm-modify``."""
        test = check[0]
        if test == "and":
            return all(self._exec(sub, authid, params, noerr=noerr) for sub in check[1:])
        if test == "or":
            if any(self._exec(sub, authid, params, noerr=True) for sub in check[1:]):
                return True
            if noerr:
                return False
            raise permission_error()
        if test == "perm":
            template, privileges, options = (
                check[1],
                check[2],
                dict(zip(check[3::2], check[4::2], strict=False)),
            )
            required = options.get("require_param")
            if required and params.get(required) is None:
                if noerr:
                    return False
                raise permission_error()
            path = template
            for key, value in params.items():
                path = path.replace("{" + key + "}", str(value))
            any_of = bool(options.get("any"))
            if noerr:
                return self.allowed(authid, path, privileges, any_of=any_of)
            self.check(authid, path, privileges, any_of=any_of)
            return True
        if test == "userid-param":
            userid = str(params.get("userid", ""))
            if check[1] == "self":
                if userid not in self.state.users:
                    if noerr:
                        return False
                    raise fail(f"user '{userid}' does not exist")
                if split_authid(authid)[0] == userid and "!" not in authid:
                    return True
                if noerr:
                    return False
                raise permission_error()
            realm = userid.rpartition("@")[2]
            return self._check_or(authid, f"/access/realm/{realm}", ["Realm.AllocateUser"], noerr)
        if test == "userid-group":
            privileges = check[1]
            return self._check_or(authid, "/access/groups", privileges, noerr, any_of=True)
        if test == "perm-modify":
            path = normalize_path(str(params.get("path", "")))
            extra = {"storage": "Datastore.Allocate", "vms": "VM.Allocate", "pool": "Pool.Allocate"}
            first = path.strip("/").split("/")[0]
            wanted = ["Permissions.Modify"] + (
                [extra[first]] if first in extra and path.count("/") > 1 else []
            )
            return self._check_or(authid, path, wanted, noerr, any_of=True)
        raise fail(f"unknown permission test '{test}'")

    def _check_or(
        self, authid: str, path: str, privileges: list[str], noerr: bool, *, any_of: bool = False
    ) -> bool:
        if noerr:
            return self.allowed(authid, path, privileges, any_of=any_of)
        self.check(authid, path, privileges, any_of=any_of)
        return True

    # --- changes (the /access API) ---------------------------------------------------------------

    def set_acl(
        self, path: str, roles: list[str], *, kind: str, ugids: list[str], propagate: bool, delete: bool
    ) -> None:
        with self.lock:
            path = normalize_path(path)
            entries = self.state.acl.setdefault(path, {}).setdefault(kind, {})
            for ugid in ugids:
                given = entries.setdefault(ugid, {})
                for role in roles:
                    if delete:
                        given.pop(role, None)
                    else:
                        given[role] = int(propagate)
                if not given:
                    entries.pop(ugid)
            self._prune(path)
            self.save()

    def _prune(self, path: str) -> None:
        kinds = self.state.acl.get(path, {})
        for kind in [k for k, v in kinds.items() if not v]:
            kinds.pop(kind)
        if not kinds:
            self.state.acl.pop(path, None)

    def acl_entries(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted(self.state.acl):
            for kind, ugids in sorted(self.state.acl[path].items()):
                for ugid, roles in sorted(ugids.items()):
                    for role, propagate in sorted(roles.items()):
                        rows.append(
                            {"path": path, "type": kind, "ugid": ugid, "roleid": role, "propagate": propagate}
                        )
        return rows

    def drop_user(self, userid: str) -> None:
        with self.lock:
            self.state.users.pop(userid, None)
            self.passwords.pop(userid, None)
            for tokenid in [t for t in self.state.tokens if split_authid(t)[0] == userid]:
                self.drop_token(tokenid, save=False)
            for path in list(self.state.acl):
                self.state.acl[path].get("user", {}).pop(userid, None)
                self._prune(path)
            self.save()

    def drop_token(self, tokenid: str, *, save: bool = True) -> None:
        with self.lock:
            self.state.tokens.pop(tokenid, None)
            self.secrets.pop(tokenid, None)
            for path in list(self.state.acl):
                self.state.acl[path].get("token", {}).pop(tokenid, None)
                self._prune(path)
            if save:
                self.save()

    def drop_role(self, role: str) -> None:
        with self.lock:
            self.state.roles.pop(role, None)
            for path in list(self.state.acl):
                for ugids in self.state.acl[path].values():
                    for roles in ugids.values():
                        roles.pop(role, None)
                    for ugid in [u for u, r in ugids.items() if not r]:
                        ugids.pop(ugid)
                self._prune(path)
            self.save()
