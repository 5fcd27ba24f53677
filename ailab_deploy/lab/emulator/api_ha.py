"""/cluster/ha: resources, groups (8.4), rules (9.x) and the manager's status, as
pve-ha-manager's API2/HA/*.pm serve them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import propstr, schema
from .apierror import fail, param_error
from .router import Request
from .schema import P

if TYPE_CHECKING:
    from .app import Emulator

SID = P(optional=False, format="pve-ha-resource-or-vm-id")
GROUP = P(optional=False, format="pve-configid")
RULE = P(optional=False, format="pve-configid")
COMMENT = P(max_length=4096)
DELETE = P(format="pve-configid-list", max_length=4096)
DIGEST = P(max_length=64)
STATE = P(enum=("started", "stopped", "enabled", "disabled", "ignored"))
_RULE_TYPES = ("node-affinity", "resource-affinity")
_RESOURCE_INTS = ("max_restart", "max_relocate", "failback")
_RULE_INTS = ("strict", "disable")
_GROUP_INTS = ("restricted", "nofailback")


def register(emu: Emulator) -> HaApi:
    api = HaApi(emu)
    add = emu.router.add
    add("GET", "/cluster/ha", api.index)
    add("GET", "/cluster/ha/resources", api.resource_list)
    add("POST", "/cluster/ha/resources", api.resource_create)
    add("GET", "/cluster/ha/resources/{sid}", api.resource_get)
    add("PUT", "/cluster/ha/resources/{sid}", api.resource_update)
    add("DELETE", "/cluster/ha/resources/{sid}", api.resource_delete)
    add("POST", "/cluster/ha/resources/{sid}/migrate", api.resource_migrate)
    add("POST", "/cluster/ha/resources/{sid}/relocate", api.resource_migrate)
    # 9.x migrated groups into node-affinity rules: its group calls refuse once none are left
    add("GET", "/cluster/ha/groups", api.group_list)
    add("POST", "/cluster/ha/groups", api.group_create)
    add("GET", "/cluster/ha/groups/{group}", api.group_get)
    add("PUT", "/cluster/ha/groups/{group}", api.group_update)
    add("DELETE", "/cluster/ha/groups/{group}", api.group_delete)
    if emu.release != "8.4":
        add("GET", "/cluster/ha/rules", api.rule_list)
        add("POST", "/cluster/ha/rules", api.rule_create)
        add("GET", "/cluster/ha/rules/{rule}", api.rule_get)
        add("PUT", "/cluster/ha/rules/{rule}", api.rule_update)
        add("DELETE", "/cluster/ha/rules/{rule}", api.rule_delete)
    add("GET", "/cluster/ha/status", api.status_index)
    add("GET", "/cluster/ha/status/current", api.status_current)
    return api


class HaApi:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.ha = emu.ha

    def index(self, req: Request) -> Any:
        schema.check(req.params, {})
        names = ["status", "resources", "groups"] + ([] if self.emu.release == "8.4" else ["rules"])
        return [{"id": name} for name in names]

    # --- resources --------------------------------------------------------------------------------

    def _resource_spec(self) -> dict[str, P]:
        spec = {
            "comment": COMMENT,
            "group": P(format="pve-configid"),
            "max_relocate": P("integer", minimum=0),
            "max_restart": P("integer", minimum=0),
            "state": STATE,
        }
        if self.emu.release != "8.4":
            spec["failback"] = P("boolean")
        return spec

    def _parse_sid(self, sid: str) -> str:
        """PVE::HA::Config::parse_sid: a bare VMID names the guest with that id."""
        if sid.isdigit():
            if int(sid) not in self.emu.store.vms:
                raise fail(f"unable to detect SID from VMID - VM/CT {sid} does not exist")
            return f"vm:{sid}"
        kind, sep, _name = sid.partition(":")
        if not sep:
            raise fail(f"unable to parse service id '{sid}'")
        if kind not in ("vm", "ct"):
            raise fail(f"unknown resource type '{kind}'")
        return sid

    def _view(self, sid: str) -> dict[str, Any]:
        with self.ha.lock:
            config = self.ha.resources.get(sid)
            if config is None:
                raise fail(f"no such resource '{sid}'")
            view: dict[str, Any] = {
                "sid": sid,
                "type": sid.split(":", 1)[0],
                "digest": self.ha.digest(self.ha.resources),
            }
            for key, value in config.items():
                view[key] = int(value) if key in _RESOURCE_INTS else value
            return view

    def resource_list(self, req: Request) -> Any:
        params = schema.check(req.params, {"type": P(enum=("ct", "vm"))})
        with self.ha.lock:
            sids = sorted(self.ha.resources)
        return [self._view(s) for s in sids if params.get("type") in (None, s.split(":", 1)[0])]

    def resource_get(self, req: Request) -> Any:
        params = schema.check(req.params, {"sid": SID})
        return self._view(self._parse_sid(params["sid"]))

    def resource_create(self, req: Request) -> Any:
        params = schema.check(req.params, {"sid": SID, "type": P(enum=("ct", "vm")), **self._resource_spec()})
        sid = self._parse_sid(params.pop("sid"))
        kind, name = sid.split(":", 1)
        if params.pop("type", kind) != kind:
            raise fail("types does not match")
        if not name.isdigit() or not 100 <= int(name) <= 999999999:
            raise fail("invalid VMID")
        if kind != "vm" or int(name) not in self.emu.store.vms:  # the lab has no containers
            raise fail(f"resource '{sid}' does not exist in cluster")
        self._check_group(params.get("group"))
        with self.ha.lock:
            if sid in self.ha.resources:
                raise fail(f"create resource failed: resource ID '{sid}' already defined")
            config = {"state": "started", **{k: str(v) for k, v in params.items()}}
            self.ha.resources[sid] = config
            self.ha.save()
        return None

    def _check_group(self, group: str | None) -> None:
        if group is None:
            return
        if self.emu.release != "8.4":
            raise fail("invalid parameter 'group': ha groups have been migrated to rules")
        if group not in self.ha.groups:
            raise fail(f"HA group '{group}' does not exist")

    def resource_update(self, req: Request) -> Any:
        spec = {"sid": SID, "delete": DELETE, "digest": DIGEST, **self._resource_spec()}
        params = schema.check(req.params, spec)
        sid = self._parse_sid(params.pop("sid"))
        self._check_group(params.get("group"))
        with self.ha.lock:
            config = self.ha.resources.get(sid)
            if config is None:
                raise fail(f"no such resource '{sid}'")
            self._update(self.ha.resources, config, params, self._resource_spec(), required=())
            self.ha.save()
        return None

    def _update(
        self,
        section: dict[str, dict[str, Any]],
        config: dict[str, Any],
        params: dict[str, Any],
        spec: dict[str, P],
        required: tuple[str, ...],
    ) -> None:
        """update_resources_config / Groups.pm update: digest, deletes, then the new values."""
        digest = params.pop("digest", None)
        if digest and digest != self.ha.digest(section):
            raise fail("detected modified configuration - file changed by other user? Try again.")
        for key in propstr.split_list(params.pop("delete", "") or ""):
            if key not in spec:
                raise fail(f"no such option '{key}'")
            if key in required:
                raise fail(f"unable to delete required option '{key}'")
            config.pop(key, None)
        config.update({k: str(v) for k, v in params.items()})

    def resource_delete(self, req: Request) -> Any:
        spec: dict[str, P] = {"sid": SID}
        if self.emu.release != "8.4":
            spec["purge"] = P("boolean")
        params = schema.check(req.params, spec)
        sid = self._parse_sid(params["sid"])
        with self.ha.lock:
            if sid not in self.ha.resources:
                raise fail(f"cannot delete service '{sid}', not HA managed!")
            self.ha.resources.pop(sid)
            self.ha.service_state.pop(sid, None)
            if params.get("purge", 1):
                self.ha.purge_from_rules(sid)
            self.ha.save()
        return None

    def resource_migrate(self, req: Request) -> Any:
        params = schema.check(req.params, {"sid": SID, "node": P(optional=False, format="pve-node")})
        sid = self._parse_sid(params["sid"])
        if sid not in self.ha.resources:
            raise fail(f"resource '{sid}' is not HA managed")
        self.emu.check_target_node(params["node"])
        self.ha.request_migration(int(sid.split(":", 1)[1]), params["node"])
        if self.emu.release == "8.4":
            return None
        return {
            "sid": sid,
            "requested-node": params["node"],
            "comigrated-resources": [],
            "blocking-resources": [],
        }

    # --- groups (8.4) -------------------------------------------------------------------------------

    def _group_spec(self, create: bool) -> dict[str, P]:
        nodes = "pve-ha-group-node-list" if self.emu.release == "8.4" else "pve-ha-node-list"
        return {
            "comment": COMMENT,
            "nodes": P(optional=not create, format=nodes),
            "nofailback": P("boolean"),
            "restricted": P("boolean"),
        }

    def _group_view(self, name: str) -> dict[str, Any]:
        group = self.ha.groups.get(name)
        if group is None:
            raise fail(f"no such ha group '{name}'")
        view: dict[str, Any] = {"group": name, "type": "group", "digest": self.ha.digest(self.ha.groups)}
        view.update({k: int(v) if k in _GROUP_INTS else v for k, v in group.items()})
        return view

    def _migrated(self, what: str) -> None:
        """PVE 9 (have_groups_been_migrated): without groups left, the group calls refuse."""
        if self.emu.release != "8.4" and not self.ha.groups:
            raise fail(f"cannot {what}: ha groups have been migrated to rules")

    def group_list(self, req: Request) -> Any:
        schema.check(req.params, {})
        self._migrated("index groups")
        with self.ha.lock:
            return [self._group_view(name) for name in sorted(self.ha.groups)]

    def group_get(self, req: Request) -> Any:
        params = schema.check(req.params, {"group": GROUP})
        self._migrated("read group")
        with self.ha.lock:
            return self._group_view(params["group"])

    def group_create(self, req: Request) -> Any:
        spec = {"group": GROUP, "type": P(enum=("group",)), **self._group_spec(True)}
        params = schema.check(req.params, spec)
        self._migrated("create group")
        name = params.pop("group")
        params.pop("type", None)
        with self.ha.lock:
            if name in self.ha.groups:
                raise fail(f"create ha group failed: ha group ID '{name}' already defined")
            self.ha.groups[name] = {k: str(v) for k, v in params.items()}
            self.ha.save()
        return None

    def group_update(self, req: Request) -> Any:
        spec = {"group": GROUP, "delete": DELETE, "digest": DIGEST, **self._group_spec(False)}
        params = schema.check(req.params, spec)
        self._migrated("update group")
        name = params.pop("group")
        with self.ha.lock:
            group = self.ha.groups.get(name)
            if group is None:
                raise fail(f"no such ha group '{name}'")
            self._update(self.ha.groups, group, params, self._group_spec(False), required=("nodes",))
            self.ha.save()
        return None

    def group_delete(self, req: Request) -> Any:
        params = schema.check(req.params, {"group": GROUP})
        self._migrated("delete group")
        name = params["group"]
        with self.ha.lock:
            if name not in self.ha.groups:
                raise fail(f"no such ha group '{name}'")
            for sid, config in self.ha.resources.items():
                if config.get("group") == name:
                    raise fail(f"ha group is used by service '{sid}'")
            del self.ha.groups[name]
            self.ha.save()
        return None

    # --- rules (9.x) --------------------------------------------------------------------------------

    def _rule_spec(self, create: bool) -> dict[str, P]:
        return {
            "type": P(optional=False, enum=_RULE_TYPES),
            "resources": P(optional=not create, format="pve-ha-resource-id-list"),
            "affinity": P(enum=("positive", "negative")),
            "nodes": P(format="pve-ha-node-list"),
            "strict": P("boolean"),
            "disable": P("boolean"),
            "comment": COMMENT,
        }

    def _rule_view(self, name: str) -> dict[str, Any]:
        rule = self.ha.rules.get(name)
        if rule is None:
            raise fail(f"no such ha rule '{name}'")
        view: dict[str, Any] = {"rule": name, "digest": self.ha.digest(self.ha.rules)}
        view.update({k: int(v) if k in _RULE_INTS else v for k, v in rule.items()})
        view["order"] = sorted(self.ha.rules).index(name) + 1
        return view

    def rule_list(self, req: Request) -> Any:
        params = schema.check(req.params, {"type": P(enum=_RULE_TYPES), "resource": P()})
        with self.ha.lock:
            result = []
            for name in sorted(self.ha.rules):
                rule = self.ha.rules[name]
                if params.get("type") not in (None, rule["type"]):
                    continue
                if params.get("resource") and params["resource"] not in rule["resources"].split(","):
                    continue
                result.append(self._rule_view(name))
            return result

    def rule_get(self, req: Request) -> Any:
        params = schema.check(req.params, {"rule": RULE})
        with self.ha.lock:
            return self._rule_view(params["rule"])

    def _check_rule(self, rule: dict[str, str]) -> None:
        """The type's own options: nodes for node-affinity, affinity for resource-affinity."""
        own = {"node-affinity": ("nodes", "strict"), "resource-affinity": ("affinity",)}[rule["type"]]
        other = {"nodes", "strict", "affinity"} - set(own)
        for key in sorted(other & set(rule)):
            raise param_error({key: f"property is not defined for type '{rule['type']}'"})
        required = "nodes" if rule["type"] == "node-affinity" else "affinity"
        if required not in rule:
            raise param_error({required: "property is missing and it is not optional"})
        for sid in rule["resources"].split(","):
            if sid not in self.ha.resources:
                raise fail(f"rule '{rule.get('rule', '')}': resource '{sid}' is not HA managed".strip())
        if rule["type"] == "resource-affinity" and len(rule["resources"].split(",")) < 2:
            raise fail("resource-affinity rule needs at least two resources")
        for node in parse_node_list(rule.get("nodes", "")):
            self.emu.check_target_node(node)

    def rule_create(self, req: Request) -> Any:
        params = schema.check(req.params, {"rule": RULE, **self._rule_spec(True)})
        name = params.pop("rule")
        rule = {k: str(v) for k, v in params.items()}
        with self.ha.lock:
            if name in self.ha.rules:
                raise fail(f"create ha rule failed: ha rule ID '{name}' already defined")
            self._check_rule(rule)
            self.ha.rules[name] = rule
            self.ha.save()
        return None

    def rule_update(self, req: Request) -> Any:
        spec = {"rule": RULE, "delete": DELETE, "digest": DIGEST, **self._rule_spec(False)}
        params = schema.check(req.params, spec)
        name = params.pop("rule")
        with self.ha.lock:
            current = self.ha.rules.get(name)
            if current is None:
                raise fail(f"no such ha rule '{name}'")
            if params["type"] != current["type"]:
                raise fail("types does not match")
            updated = dict(current)
            self._update(
                self.ha.rules, updated, params, self._rule_spec(False), required=("resources", "type")
            )
            self._check_rule(updated)
            self.ha.rules[name] = updated
            self.ha.save()
        return None

    def rule_delete(self, req: Request) -> Any:
        params = schema.check(req.params, {"rule": RULE})
        with self.ha.lock:
            if self.ha.rules.pop(params["rule"], None) is None:
                raise fail(f"no such ha rule '{params['rule']}'")
            self.ha.save()
        return None

    # --- status ----------------------------------------------------------------------------------

    def status_index(self, req: Request) -> Any:
        schema.check(req.params, {})
        names = ["current", "manager_status"]
        return [{"name": name} for name in names]

    def status_current(self, req: Request) -> Any:
        schema.check(req.params, {})
        return self.ha.status()


def parse_node_list(text: str) -> list[str]:
    return [item.split(":", 1)[0] for item in propstr.split_list(text)]
