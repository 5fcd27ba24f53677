"""``/access``: users, API tokens, groups, roles, ACLs and the caller's permissions, so a lab is
set up through the API as a node is (``pveum`` does the same calls)."""

from __future__ import annotations

import secrets
import uuid
from typing import TYPE_CHECKING, Any

from . import propstr, schema
from .access import ROOT, normalize_path, split_authid
from .apierror import fail, param_error
from .router import Request
from .schema import P

if TYPE_CHECKING:
    from .app import Emulator

USERID = P(optional=False, format="pve-userid", max_length=64)
TOKEN_NAME = P(optional=False, pattern=r"[A-Za-z][A-Za-z0-9.\-_]+")
ROLEID = P(optional=False, format="pve-roleid")
# GET /access/permissions: a user or token id (pattern as PVE's schema states it)
AUTHID_PATTERN = r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+(?:![A-Za-z][A-Za-z0-9.\-_]+)?"


def register(emu: Emulator) -> AccessApi:
    api = AccessApi(emu)
    add = emu.router.add
    add("GET", "/access/permissions", api.permissions)
    add("GET", "/access/users", api.users)
    add("POST", "/access/users", api.create_user)
    add("GET", "/access/users/{userid}", api.user)
    add("DELETE", "/access/users/{userid}", api.delete_user)
    add("GET", "/access/users/{userid}/token", api.tokens)
    add("GET", "/access/users/{userid}/token/{tokenid}", api.token)
    add("POST", "/access/users/{userid}/token/{tokenid}", api.create_token)
    add("DELETE", "/access/users/{userid}/token/{tokenid}", api.delete_token)
    add("GET", "/access/groups", api.groups)
    add("POST", "/access/groups", api.create_group)
    add("GET", "/access/roles", api.roles)
    add("POST", "/access/roles", api.create_role)
    add("GET", "/access/roles/{roleid}", api.role)
    add("PUT", "/access/roles/{roleid}", api.update_role)
    add("DELETE", "/access/roles/{roleid}", api.delete_role)
    add("GET", "/access/acl", api.acl)
    add("PUT", "/access/acl", api.update_acl)
    return api


class AccessApi:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.access = emu.access

    # --- permissions --------------------------------------------------------------------------

    def permissions(self, req: Request) -> Any:
        params = schema.check(req.params, {"path": P(), "userid": P(pattern=AUTHID_PATTERN)})
        caller = req.identity.authuser
        userid = params.get("userid", caller)
        owner, _ = split_authid(userid)
        if userid != caller and owner != caller:
            self.access.check(caller, "/access", ["Sys.Audit"])
        path = params.get("path")
        if path:
            return {path: self.access.permissions(userid, path)}
        paths = {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
        paths |= set(self.access.state.acl)
        paths |= {f"/vms/{vmid}" for members in self.emu.store.pool_members.values() for vmid in members}
        result = {}
        for each in sorted(paths):
            held = self.access.permissions(userid, each)
            if held:
                result[each] = held
        return result

    # --- users --------------------------------------------------------------------------------

    def _user_row(self, userid: str, full: bool) -> dict[str, Any]:
        info = self.access.state.users[userid]
        row: dict[str, Any] = {"userid": userid, "enable": int(info.get("enable", 1)), "expire": 0}
        row["realm-type"] = userid.rpartition("@")[2]
        for key in ("comment", "email", "firstname", "lastname"):
            if info.get(key):
                row[key] = info[key]
        if info.get("groups"):
            row["groups"] = ",".join(info["groups"])
        if full:
            row["tokens"] = [
                {"tokenid": split_authid(t)[1], "privsep": int(d.get("privsep", 1)), "expire": 0}
                for t, d in sorted(self.access.state.tokens.items())
                if split_authid(t)[0] == userid
            ]
        return row

    def users(self, req: Request) -> Any:
        params = schema.check(req.params, {"enabled": P("boolean"), "full": P("boolean")})
        caller = req.identity.authuser
        everyone = self.access.allowed(caller, "/access/groups", ["User.Modify", "Sys.Audit"], any_of=True)
        rows = []
        for userid in sorted(self.access.state.users):
            if not everyone and userid != split_authid(caller)[0]:
                continue
            row = self._user_row(userid, bool(params.get("full")))
            if "enabled" in params and row["enable"] != params["enabled"]:
                continue
            rows.append(row)
        return rows

    def create_user(self, req: Request) -> Any:
        params = schema.check(
            req.params,
            {
                "userid": USERID,
                "comment": P(max_length=2048),
                "email": P(format="email-opt", max_length=254),
                "enable": P("boolean"),
                "expire": P("integer", minimum=0),
                "firstname": P(max_length=1024),
                "lastname": P(max_length=1024),
                "groups": P(format="pve-groupid-list"),
                "keys": P(pattern=r"[0-9a-zA-Z!=]{0,4096}"),
                "password": P(min_length=8, max_length=64),
            },
        )
        userid = params["userid"]
        with self.access.lock:
            if userid in self.access.state.users:
                raise fail(f"create user failed: user '{userid}' already exists")
            groups = propstr.split_list(params.get("groups", ""))
            for group in groups:
                if group not in self.access.state.groups:
                    raise fail(f"create user failed: group '{group}' does not exist")
            info: dict[str, Any] = {"enable": params.get("enable", 1), "groups": groups}
            for key in ("comment", "email", "firstname", "lastname"):
                if params.get(key):
                    info[key] = params[key]
            self.access.state.users[userid] = info
            if params.get("password"):
                self.access.passwords[userid] = params["password"]
                self.emu.auth.users[userid] = params["password"]
            self.access.save()
        return None

    def _existing_user(self, userid: str) -> dict[str, Any]:
        info = self.access.state.users.get(userid)
        if info is None:
            raise fail(f"no such user ('{userid}')")
        return info

    def user(self, req: Request) -> Any:
        userid = schema.check(req.params, {"userid": USERID})["userid"]
        self._existing_user(userid)
        row = self._user_row(userid, full=False)
        row.pop("userid")
        row.pop("realm-type")  # only in the list's rows
        row["groups"] = list(self.access.state.users[userid].get("groups", []))
        row["tokens"] = {
            split_authid(t)[1]: {"privsep": int(d.get("privsep", 1)), "expire": 0}
            for t, d in self.access.state.tokens.items()
            if split_authid(t)[0] == userid
        }
        return row

    def delete_user(self, req: Request) -> Any:
        userid = schema.check(req.params, {"userid": USERID})["userid"]
        if userid == ROOT:
            raise fail("deleting the user 'root@pam' is not allowed")  # PVE refuses it too
        self._existing_user(userid)
        self.emu.auth.users.pop(userid, None)
        for tokenid in [t for t in self.access.state.tokens if split_authid(t)[0] == userid]:
            self.emu.auth.tokens.pop(tokenid, None)
        self.access.drop_user(userid)
        return None

    # --- tokens -------------------------------------------------------------------------------

    def _token_params(self, req: Request, extra: dict[str, P] | None = None) -> tuple[dict[str, Any], str]:
        params = schema.check(req.params, {"userid": USERID, "tokenid": TOKEN_NAME, **(extra or {})})
        self._existing_user(params["userid"])
        return params, f"{params['userid']}!{params['tokenid']}"

    def tokens(self, req: Request) -> Any:
        userid = schema.check(req.params, {"userid": USERID})["userid"]
        self._existing_user(userid)
        return [
            {"tokenid": split_authid(t)[1], "privsep": int(d.get("privsep", 1)), "expire": 0, **_comment(d)}
            for t, d in sorted(self.access.state.tokens.items())
            if split_authid(t)[0] == userid
        ]

    def token(self, req: Request) -> Any:
        _, tokenid = self._token_params(req)
        info = self.access.state.tokens.get(tokenid)
        if info is None:
            raise fail(f"no such token '{split_authid(tokenid)[1]}' for user '{split_authid(tokenid)[0]}'")
        return {"privsep": int(info.get("privsep", 1)), "expire": 0, **_comment(info)}

    def create_token(self, req: Request) -> Any:
        params, tokenid = self._token_params(
            req, {"comment": P(), "expire": P("integer", minimum=0), "privsep": P("boolean")}
        )
        with self.access.lock:
            if tokenid in self.access.state.tokens:
                raise fail("Token already exists.")
            info: dict[str, Any] = {"privsep": int(params.get("privsep", 1))}
            if params.get("comment"):
                info["comment"] = params["comment"]
            secret = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
            self.access.state.tokens[tokenid] = info
            self.access.secrets[tokenid] = secret
            self.emu.auth.tokens[tokenid] = secret
            self.access.save()
        return {"full-tokenid": tokenid, "info": {**info, "expire": 0}, "value": secret}

    def delete_token(self, req: Request) -> Any:
        _, tokenid = self._token_params(req)
        if tokenid not in self.access.state.tokens:
            raise fail(f"no such token '{split_authid(tokenid)[1]}' for user '{split_authid(tokenid)[0]}'")
        self.emu.auth.tokens.pop(tokenid, None)
        self.access.drop_token(tokenid)
        return None

    # --- groups -------------------------------------------------------------------------------

    def groups(self, req: Request) -> Any:
        schema.check(req.params, {})
        return [
            {"groupid": g, "users": ",".join(sorted(self.access.state.members(g))), **_comment(info)}
            for g, info in sorted(self.access.state.groups.items())
        ]

    def create_group(self, req: Request) -> Any:
        params = schema.check(
            req.params, {"groupid": P(optional=False, format="pve-groupid"), "comment": P()}
        )
        with self.access.lock:
            if params["groupid"] in self.access.state.groups:
                raise fail(f"create group failed: group '{params['groupid']}' already exists")
            self.access.state.groups[params["groupid"]] = _comment(params)
            self.access.save()
        return None

    # --- roles --------------------------------------------------------------------------------

    def _privileges(self, text: str) -> list[str]:
        privileges = propstr.split_list(text)
        valid = self.access.builtin["Administrator"]
        for privilege in privileges:
            if privilege not in valid:
                raise param_error({"privs": f"invalid format - invalid privilege name '{privilege}'\n"})
        return privileges

    def roles(self, req: Request) -> Any:
        schema.check(req.params, {})
        rows = []
        for name in self.access.role_names():
            privileges = self.access.role(name) or frozenset()
            rows.append(
                {
                    "roleid": name,
                    "privs": ",".join(sorted(privileges)),
                    "special": int(name in self.access.builtin),
                }
            )
        return rows

    def create_role(self, req: Request) -> Any:
        params = schema.check(req.params, {"roleid": ROLEID, "privs": P(format="pve-priv-list")})
        privileges = self._privileges(params.get("privs", ""))
        role = params["roleid"]
        with self.access.lock:
            if self.access.role(role) is not None:
                raise fail(f"create role failed: role '{role}' already exists")
            if role.startswith("PVE"):
                raise fail("create role failed: cannot use role ID starting with 'PVE'")
            self.access.state.roles[role] = sorted(set(privileges))
            self.access.save()
        return None

    def role(self, req: Request) -> Any:
        role = schema.check(req.params, {"roleid": ROLEID})["roleid"]
        privileges = self.access.role(role)
        if privileges is None:
            raise fail(f"role '{role}' does not exist")
        return {privilege: 1 for privilege in sorted(privileges)}

    def update_role(self, req: Request) -> Any:
        params = schema.check(
            req.params,
            {"roleid": ROLEID, "privs": P(format="pve-priv-list"), "append": P("boolean", requires="privs")},
        )
        role = params["roleid"]
        privileges = self._privileges(params.get("privs", ""))
        with self.access.lock:
            if role in self.access.builtin:
                raise fail(f"update role failed: cannot modify special role '{role}'")
            if role not in self.access.state.roles:
                raise fail(f"update role failed: role '{role}' does not exist")
            current = set(self.access.state.roles[role]) if params.get("append") else set()
            self.access.state.roles[role] = sorted(current | set(privileges))
            self.access.save()
        return None

    def delete_role(self, req: Request) -> Any:
        role = schema.check(req.params, {"roleid": ROLEID})["roleid"]
        if role in self.access.builtin:
            raise fail(f"cannot delete special role '{role}'")
        if role not in self.access.state.roles:
            raise fail(f"role '{role}' does not exist")
        self.access.drop_role(role)
        return None

    # --- ACL ----------------------------------------------------------------------------------

    def acl(self, req: Request) -> Any:
        schema.check(req.params, {})
        caller = req.identity.authuser
        return [
            row
            for row in self.access.acl_entries()
            if caller == ROOT
            or self.access._exec(["perm-modify", row["path"]], caller, {"path": row["path"]}, noerr=True)
        ]

    def update_acl(self, req: Request) -> Any:
        params = schema.check(
            req.params,
            {
                "path": P(optional=False),
                "roles": P(optional=False, format="pve-roleid-list"),
                "users": P(format="pve-userid-list"),
                "groups": P(format="pve-groupid-list"),
                "tokens": P(format="pve-tokenid-list"),
                "propagate": P("boolean"),
                "delete": P("boolean"),
            },
        )
        path = normalize_path(params["path"])
        roles = propstr.split_list(params["roles"])
        for role in roles:
            if self.access.role(role) is None:
                raise fail(f"role '{role}' does not exist")
        targets = [
            (kind, propstr.split_list(params.get(param, "")))
            for kind, param in (("user", "users"), ("group", "groups"), ("token", "tokens"))
        ]
        if not any(ids for _, ids in targets):
            raise fail("either 'users', 'groups' or 'tokens' is required")
        for kind, ids in targets:
            known = {
                "user": self.access.state.users,
                "group": self.access.state.groups,
                "token": self.access.state.tokens,
            }[kind]
            for ugid in ids:
                if ugid not in known:
                    raise fail(f"{kind} '{ugid}' does not exist")
            if ids:
                self.access.set_acl(
                    path,
                    roles,
                    kind=kind,
                    ugids=ids,
                    propagate=bool(params.get("propagate", 1)),
                    delete=bool(params.get("delete")),
                )
        return None


def _comment(info: Any) -> dict[str, Any]:
    return {"comment": info["comment"]} if info.get("comment") else {}
