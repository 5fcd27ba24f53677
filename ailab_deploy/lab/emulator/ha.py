"""The HA stack, scaled down in time: its configuration and a cluster resource manager loop.

What pve-ha-manager keeps in /etc/pve/ha (resources.cfg, groups.cfg on 8.4, rules.cfg on 9.x)
lives in ``state/ha.json``. The loop does what the CRM and the LRMs do together (Manager.pm):
a resource whose request state is ``started`` runs, ``stopped``/``disabled`` ones do not; a
node that stops answering is fenced after ``fence_seconds`` (PVE: about two minutes), then its
``started`` resources are recovered to the best allowed online node (highest priority of their
group or node-affinity rule, then the fewest HA services) and started there; others stay down.
When a node comes back, a resource whose preferred node it is migrates back if failback is on
(8.4: the group's ``nofailback`` is 0; 9.x: the resource's ``failback``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .state import write_atomic
from .tasks import TaskContext

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger(__name__)

HA_USER = "root@pam"  # the CRM and LRMs act as root
RUNNING_STATES = ("started", "enabled")


def parse_node_priorities(text: str) -> dict[str, int]:
    """``pve1:2,pve2`` -> {pve1: 2, pve2: 0} (parse_node_priority: no priority means 0)."""
    result: dict[str, int] = {}
    for item in [i for i in text.replace(";", ",").split(",") if i.strip()]:
        name, _, priority = item.strip().partition(":")
        result[name] = int(priority or 0)
    return result


class HaManager:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store = emu.store
        self.path = emu.settings.state_dir / "ha.json"
        self.lock = threading.RLock()
        self.resources: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.service_state: dict[str, str] = {}  # sid -> the CRM's state (started, fence, ...)
        self.fenced: set[str] = set()
        self.migrations: dict[str, str] = {}  # sid -> requested target node
        self.failback_due: set[str] = set()  # nodes back online, to look at once
        self.events: list[str] = []  # what the CRM logged, for tests and the lab log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy: set[str] = set()  # sids with a worker under way
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self.resources = data.get("resources", {})
            self.groups = data.get("groups", {})
            self.rules = data.get("rules", {})
            self.fenced = set(data.get("fenced", []))

    # --- configuration ------------------------------------------------------------------------

    def save(self) -> None:
        with self.lock:
            data = {
                "resources": self.resources,
                "groups": self.groups,
                "rules": self.rules,
                "fenced": sorted(self.fenced),
            }
            write_atomic(self.path, json.dumps(data, indent=1))
            self.store.generation += 1

    def digest(self, section: dict[str, dict[str, Any]]) -> str:
        return hashlib.sha1(json.dumps(section, sort_keys=True).encode()).hexdigest()

    @staticmethod
    def sid(vmid: int) -> str:
        return f"vm:{vmid}"

    def is_configured(self, vmid: int) -> bool:
        return self.sid(vmid) in self.resources

    def resource_state(self, vmid: int) -> str | None:
        """The ``hastate`` /cluster/resources shows for a managed VM."""
        sid = self.sid(vmid)
        if sid not in self.resources:
            return None
        return self.service_state.get(sid, self._default_state(sid))

    def _default_state(self, sid: str) -> str:
        wanted = self.resources[sid].get("state", "started")
        return str({"enabled": "started", "disabled": "disabled", "ignored": "ignored"}.get(wanted, wanted))

    def vm_status(self, vmid: int) -> dict[str, Any]:
        """``ha`` of a VM's status/current (PVE::HA::Config::get_service_status)."""
        sid = self.sid(vmid)
        if sid not in self.resources:
            return {"managed": 0}
        result: dict[str, Any] = {"managed": 1, "state": self.resource_state(vmid)}
        if self.resources[sid].get("group"):
            result["group"] = self.resources[sid]["group"]
        return result

    def remove_resource(self, vmid: int) -> None:
        with self.lock:
            sid = self.sid(vmid)
            self.resources.pop(sid, None)
            self.service_state.pop(sid, None)
            self.purge_from_rules(sid)
            self.save()

    def purge_from_rules(self, sid: str) -> None:
        """delete_service_from_config with purge: the rules lose it, an emptied rule goes."""
        for name in list(self.rules):
            members = [r for r in self.rules[name]["resources"].split(",") if r and r != sid]
            if not members:
                del self.rules[name]
            else:
                self.rules[name]["resources"] = ",".join(members)

    def add_resource(self, vmid: int, state: str) -> None:
        with self.lock:
            self.resources.setdefault(self.sid(vmid), {})["state"] = state
            self.save()

    def set_state(self, vmid: int, state: str) -> None:
        """``ha-manager set --state`` / ``crm-command stop``: the requested state changes."""
        with self.lock:
            resource = self.resources.get(self.sid(vmid))
            if resource is not None:
                resource["state"] = state
                self.save()

    def request_migration(self, vmid: int, target: str) -> None:
        with self.lock:
            self.migrations[self.sid(vmid)] = target

    # --- placement ------------------------------------------------------------------------------

    def _priorities(self, sid: str) -> tuple[dict[str, int], bool, bool]:
        """(node -> priority, restricted, failback) from the resource's group (8.4) or its
        enabled node-affinity rule (9.x)."""
        resource = self.resources.get(sid, {})
        if self.emu.release == "8.4":
            group = self.groups.get(resource.get("group", ""))
            if group is None:
                return {}, False, True
            nodes = parse_node_priorities(group["nodes"])
            return nodes, bool(int(group.get("restricted", 0))), not int(group.get("nofailback", 0))
        failback = bool(int(resource.get("failback", 1)))
        for rule in self.rules.values():
            if rule["type"] != "node-affinity" or int(rule.get("disable", 0)):
                continue
            if sid in rule["resources"].split(","):
                return parse_node_priorities(rule["nodes"]), bool(int(rule.get("strict", 0))), failback
        return {}, False, failback

    def _affinity(self, sid: str) -> tuple[set[str], set[str]]:
        """Nodes of the resources sid must run with (positive) or apart from (negative)."""
        together: set[str] = set()
        apart: set[str] = set()
        for rule in self.rules.values():
            if rule["type"] != "resource-affinity" or int(rule.get("disable", 0)):
                continue
            members = rule["resources"].split(",")
            if sid not in members:
                continue
            for other in members:
                if other == sid or other not in self.resources or not other.startswith("vm:"):
                    continue
                vmid = int(other[3:])
                if vmid not in self.store.vms:
                    continue
                node = self.store.node_of(vmid)
                (together if rule.get("affinity") == "positive" else apart).add(node)
        return together, apart

    def _load(self, node: str) -> int:
        return sum(
            1
            for sid in self.resources
            if sid.startswith("vm:")
            and int(sid[3:]) in self.store.vms
            and self.store.node_of(int(sid[3:])) == node
        )

    def select_node(self, sid: str, current: str | None) -> str | None:
        """select_service_node: online nodes of the highest priority class the resource may use,
        then the least loaded; ``current`` stays when it is among the best."""
        online = [n for n in self.emu.settings.nodes if n not in self.emu.offline]
        priorities, restricted, _ = self._priorities(sid)
        together, apart = self._affinity(sid)
        candidates = [n for n in online if n not in apart]
        if priorities:
            allowed = [n for n in candidates if n in priorities]
            if not allowed and not restricted:
                allowed = candidates  # an unrestricted group falls back on any node
            candidates = allowed
            if candidates and any(n in priorities for n in candidates):
                best = max(priorities.get(n, -1) for n in candidates)
                candidates = [n for n in candidates if priorities.get(n, -1) == best]
        if together:
            candidates = [n for n in candidates if n in together] or candidates
        if not candidates:
            return None
        if current in candidates:
            return current
        return min(candidates, key=lambda n: (self._load(n), self.emu.settings.nodes.index(n)))

    def blocking_nodes(self, vmid: int) -> dict[str, list[dict[str, str]]]:
        """Nodes a negative resource-affinity rule keeps the VM off (migrate preconditions)."""
        sid = self.sid(vmid)
        result: dict[str, list[dict[str, str]]] = {}
        if sid not in self.resources:
            return result
        for rule in self.rules.values():
            if rule["type"] != "resource-affinity" or rule.get("affinity") != "negative":
                continue
            members = rule["resources"].split(",")
            if sid not in members or int(rule.get("disable", 0)):
                continue
            for other in members:
                if other != sid and other.startswith("vm:") and int(other[3:]) in self.store.vms:
                    node = self.store.node_of(int(other[3:]))
                    result.setdefault(node, []).append({"sid": other, "cause": "resource-affinity"})
        return result

    def dependent_resources(self, vmid: int) -> list[str]:
        sid = self.sid(vmid)
        found: list[str] = []
        for rule in self.rules.values():
            members = rule["resources"].split(",")
            if rule["type"] == "resource-affinity" and rule.get("affinity") == "positive" and sid in members:
                found += [m for m in members if m != sid and m not in found]
        return found

    # --- the manager loop ------------------------------------------------------------------------

    def start(self) -> None:
        if not self.emu.settings.clustered:
            return  # a standalone node has no HA stack running
        self._thread = threading.Thread(target=self._loop, name="ha-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def node_failed(self, node: str, stopped: list[int]) -> None:
        with self.lock:
            for vmid in stopped:
                sid = self.sid(vmid)
                if sid in self.resources:
                    self.service_state[sid] = "fence"
            self._event(f"node '{node}': state changed from 'online' => 'unknown'")

    def node_recovered(self, node: str) -> None:
        with self.lock:
            self.fenced.discard(node)
            self.failback_due.add(node)
            self.save()
            self._event(f"node '{node}': state changed from 'unknown' => 'online'")

    def _event(self, text: str) -> None:
        self.events.append(text)
        log.info("ha: %s", text)

    def _loop(self) -> None:
        while not self._stop.wait(self.emu.settings.ha_tick_seconds):
            try:
                self.tick()
            except Exception:  # the loop must survive a bad moment
                log.exception("HA manager tick failed")

    def tick(self) -> None:
        """One round of the CRM: fence, recover, apply request states, fail back, migrate."""
        if not self.emu.quorate():
            return  # without quorum the manager does nothing (and the watchdog would fire)
        now = time.time()
        with self.lock:
            for node, since in self.emu.offline.items():
                if node not in self.fenced and now - since >= self.emu.settings.fence_seconds:
                    self.fenced.add(node)
                    self._event(f"node '{node}': state changed from 'unknown' => 'fence'")
                    self._event(f"fencing: acknowledged - got agent lock for node '{node}'")
                    self.save()
            actions = []
            for sid in sorted(self.resources):
                if not sid.startswith("vm:") or sid in self._busy:
                    continue
                vmid = int(sid[3:])
                if vmid not in self.store.vms:
                    continue
                actions.append(self._plan(sid, vmid))
            self.failback_due.clear()
        for action in actions:
            if action is not None:
                action()

    def _plan(self, sid: str, vmid: int) -> Any:
        """What the CRM does about one resource now (a callable), or None."""
        wanted = self.resources[sid].get("state", "started")
        node = self.store.node_of(vmid)
        running = self.store.is_running(vmid)
        locked = self.store.vms[vmid].lock is not None
        if wanted == "ignored":
            self.service_state[sid] = "ignored"
            return None
        if node in self.emu.offline:
            if wanted not in RUNNING_STATES:
                self.service_state[sid] = "stopped" if wanted == "stopped" else "disabled"
                return None
            if node not in self.fenced:
                self.service_state[sid] = "fence"
                return None
            target = self.select_node(sid, None)
            if target is None:
                self.service_state[sid] = "recovery"
                return None
            self._event(f"recover service '{sid}' from fenced node '{node}' to node '{target}'")
            self.service_state[sid] = "started"
            return lambda: self._recover(sid, vmid, node, target)
        if wanted not in RUNNING_STATES:
            self.service_state[sid] = "stopped" if wanted == "stopped" else "disabled"
            if running and not locked:
                return lambda: self._worker(sid, "qmstop", vmid, node, self._stop_vm)
            return None
        if sid in self.migrations:
            target = self.migrations.pop(sid)
            if target != node and target not in self.emu.offline:
                self.service_state[sid] = "migrate" if running else "relocate"
                return lambda: self._move(sid, vmid, node, target, running)
        if running and self.failback_due:
            _, _, failback = self._priorities(sid)
            best = self.select_node(sid, None)
            priorities = self._priorities(sid)[0]
            if (
                failback
                and best is not None
                and best != node
                and best in self.failback_due
                and priorities.get(best, -1) > priorities.get(node, -1)
            ):
                self._event(f"migrate service '{sid}' to node '{best}' (running)")
                self.service_state[sid] = "migrate"
                return lambda: self._move(sid, vmid, node, best, True)
        self.service_state[sid] = "started"
        if not running and not locked:
            return lambda: self._worker(sid, "qmstart", vmid, node, self._start_vm)
        return None

    def _worker(self, sid: str, kind: str, vmid: int, node: str, body: Any) -> None:
        self._busy.add(sid)

        def work(ctx: TaskContext) -> None:
            try:
                body(ctx, vmid)
            finally:
                self._busy.discard(sid)

        self.emu.tasks.start(kind, str(vmid), HA_USER, work, node=node)

    def _start_vm(self, ctx: TaskContext, vmid: int) -> None:
        if not self.store.is_running(vmid):
            self.emu.qemu._do_start(ctx, vmid, skiplock=False)

    def _stop_vm(self, ctx: TaskContext, vmid: int) -> None:
        self.emu.qemu._stop_work(vmid, False, None)(ctx)

    def _recover(self, sid: str, vmid: int, source: str, target: str) -> None:
        """The fenced node's config is stolen by the target (the file moves), then it starts."""
        with self.store.lock:
            self.store.move_vm(vmid, target)
        mover = getattr(self.emu.backend, "recover", None)
        if mover is not None:
            mover(vmid, source, target)
        self._worker(sid, "qmstart", vmid, target, self._start_vm)

    def _move(self, sid: str, vmid: int, source: str, target: str, online: bool) -> None:
        def body(ctx: TaskContext, vmid: int) -> None:
            try:
                self.emu.migration_api.run(ctx, vmid, source, target, online, True, {})
            finally:
                with self.lock:
                    if sid in self.resources:
                        self.service_state[sid] = "started"

        self._worker(sid, "qmigrate", vmid, source, body)

    # --- /cluster/ha/status/current ---------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        emu = self.emu
        now = int(time.time())
        stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now))
        local = emu.local_node
        quorate = emu.quorate()
        result: list[dict[str, Any]] = [
            {
                "id": "quorum",
                "type": "quorum",
                "node": local,
                "status": "OK" if quorate else f"No quorum on node '{local}'!",
                "quorate": int(quorate),
            }
        ]
        if not self.resources:
            return result
        master = local
        result.append(
            {
                "id": "master",
                "type": "master",
                "node": master,
                "status": f"{master} (active, {stamp})",
                "timestamp": now,
            }
        )
        for node in emu.settings.nodes:
            if node in emu.offline:
                text = f"{node} (old timestamp - dead?, {stamp})"
            else:
                active = self._load(node) > 0
                text = f"{node} ({'active' if active else 'idle'}, {stamp})"
            result.append(
                {"id": f"lrm:{node}", "type": "lrm", "node": node, "status": text, "timestamp": now}
            )
        for sid in sorted(self.resources):
            config = self.resources[sid]
            vmid = int(sid[3:]) if sid.startswith("vm:") else None
            node = self.store.node_of(vmid) if vmid is not None else local
            state = self.service_state.get(sid, self._default_state(sid))
            entry: dict[str, Any] = {
                "id": f"service:{sid}",
                "type": "service",
                "sid": sid,
                "node": node,
                "state": state,
                "crm_state": state,
                "request_state": config.get("state", "started"),
                "status": f"{sid} ({node}, {state})",
                "max_restart": int(config.get("max_restart", 1)),
                "max_relocate": int(config.get("max_relocate", 1)),
            }
            if emu.release != "8.4":
                entry["failback"] = int(config.get("failback", 1))
            result.append(entry)
        return result
