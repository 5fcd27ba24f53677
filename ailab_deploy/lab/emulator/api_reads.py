"""Reads that common clients make first: cluster status, versions, pools, storage config, LXC
(none), node network and guest-agent probes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import propstr, schema
from .apierror import fail
from .router import Request
from .schema import P, words

if TYPE_CHECKING:
    from .app import Emulator

# What the guest agent reports per Debian release of the lab's template: codename, cloud kernel.
GUEST_OS = {13: ("trixie", "6.12.57+deb13-cloud-amd64"), 12: ("bookworm", "6.1.0-28-cloud-amd64")}
NETWORK_TYPES = {
    "8.4": words(
        "bridge bond eth alias vlan OVSBridge OVSBond OVSPort OVSIntPort vnet any_bridge "
        "any_local_bridge include_sdn"
    ),
    "9.1": words(
        "bridge bond eth alias vlan fabric OVSBridge OVSBond OVSPort OVSIntPort vnet any_bridge "
        "any_local_bridge include_sdn"
    ),
}
STORAGE_TYPES = {
    "8.4": "btrfs cephfs cifs dir esxi glusterfs iscsi iscsidirect lvm lvmthin nfs pbs rbd zfs zfspool",
    "9.1": "btrfs cephfs cifs dir esxi iscsi iscsidirect lvm lvmthin nfs pbs rbd zfs zfspool",
}
USERID = r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+(?:![A-Za-z][A-Za-z0-9.\-_]+)?"


def register(emu: Emulator) -> ReadsApi:
    api = ReadsApi(emu)
    add = emu.router.add
    add("GET", "/cluster/status", api.cluster_status)
    add("GET", "/nodes/{node}/version", api.node_version)
    add("GET", "/pools", api.pools)
    add("GET", "/pools/{poolid}", api.pool)
    add("GET", "/storage", api.storage_list)
    add("GET", "/storage/{storage}", api.storage_get)
    add("GET", "/nodes/{node}/lxc", api.lxc_list)
    add("GET", "/nodes/{node}/network", api.network)
    add("POST", "/nodes/{node}/qemu/{vmid}/agent/ping", api.agent_ping)
    add("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo", api.agent_osinfo)
    add("GET", "/nodes/{node}/qemu/{vmid}/agent/get-host-name", api.agent_host_name)
    add("GET", "/cluster/backup-info/not-backed-up", api.not_backed_up)
    add("GET", "/nodes/{node}/replication", api.replication)
    add("GET", "/nodes/{node}/subscription", api.subscription)
    return api


class ReadsApi:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def _node(self, req: Request, spec: dict[str, P] | None = None) -> dict[str, Any]:
        return self.emu.nodes_api._node(req, spec)

    def cluster_status(self, req: Request) -> Any:
        schema.check(req.params, {})
        settings = self.emu.settings
        if not settings.clustered:
            # a single node without a cluster: PVE lists only the node (nodeid 0)
            return [
                {
                    "type": "node",
                    "id": f"node/{self.emu.node}",
                    "name": self.emu.node,
                    "ip": settings.listen,
                    "level": "",
                    "local": 1,
                    "nodeid": 0,
                    "online": 1,
                }
            ]
        # pve-manager's Cluster.pm status: the cluster entry, then each node as corosync knows it
        local = self.emu.local_node
        result: list[dict[str, Any]] = [
            {
                "type": "cluster",
                "id": "cluster",
                "name": settings.cluster_name,
                "nodes": len(settings.nodes),
                "quorate": int(self.emu.quorate()),
                "version": len(settings.nodes),  # config_version: one bump per node joined
            }
        ]
        for nodeid, node in enumerate(settings.nodes, 1):
            result.append(
                {
                    "type": "node",
                    "id": f"node/{node}",
                    "name": node,
                    "ip": settings.node_address(node),
                    "level": "",
                    "local": int(node == local),
                    "nodeid": nodeid,
                    "online": int(node not in self.emu.offline),
                }
            )
        return result

    def node_version(self, req: Request) -> Any:
        self._node(req)
        return self.emu.nodes_api.version(Request(req.method, "/version", {}, req.identity))

    def pools(self, req: Request) -> Any:
        params = schema.check(
            req.params,
            {
                "poolid": P(format="pve-poolid"),
                "type": P(enum=("qemu", "lxc", "storage"), requires="poolid"),
            },
        )
        pools = self.emu.settings.pools
        wanted = params.get("poolid")
        if wanted is not None and wanted not in pools:
            raise fail(f"pool '{wanted}' does not exist")
        result = []
        for poolid in sorted(pools):
            if wanted not in (None, poolid):
                continue
            entry: dict[str, Any] = {"poolid": poolid}
            if pools[poolid]:
                entry["comment"] = pools[poolid]
            if wanted is not None:  # the members are listed for one pool, as PVE does
                entry["members"] = [
                    self._member(vmid)
                    for vmid in self.emu.store.pool_members.get(poolid, [])
                    if vmid in self.emu.store.vms and params.get("type") in (None, "qemu")
                ]
            result.append(entry)
        return result

    def pool(self, req: Request) -> Any:
        params = schema.check(
            req.params,
            {"poolid": P(optional=False, format="pve-poolid"), "type": P(enum=("qemu", "lxc", "storage"))},
        )
        poolid = params["poolid"]
        if poolid not in self.emu.settings.pools:
            raise fail(f"pool '{poolid}' does not exist")
        members = [
            self._member(vmid)
            for vmid in self.emu.store.pool_members.get(poolid, [])
            if vmid in self.emu.store.vms and params.get("type") in (None, "qemu")
        ]
        result: dict[str, Any] = {"members": members}
        if self.emu.settings.pools[poolid]:
            result["comment"] = self.emu.settings.pools[poolid]
        return result

    def _member(self, vmid: int) -> dict[str, Any]:
        vm = self.emu.store.vms[vmid]
        return {
            "id": f"qemu/{vmid}",
            "vmid": vmid,
            "node": self.emu.store.node_of(vmid),
            "type": "qemu",
            "name": vm.conf.get("name", f"VM {vmid}"),
            "status": "running" if self.emu.store.is_running(vmid) else "stopped",
            "template": int(vm.is_template),
        }

    def _storage_entry(self, name: str) -> dict[str, Any]:
        storage = self.emu.settings.storage(name)
        if storage is None:
            raise fail(f"storage '{name}' does not exist")
        entry: dict[str, Any] = {
            "storage": storage.storage,
            "type": storage.type,
            "content": storage.content,
            "digest": self.emu.settings.storage_digest,
        }
        if storage.type in ("dir", "nfs", "cifs", "btrfs") and storage.path is not None:
            entry["path"] = str(storage.path)
        if storage.shared:
            entry["shared"] = 1
        entry.update(storage.options)
        return entry

    def storage_list(self, req: Request) -> Any:
        types = words(STORAGE_TYPES[self.emu.release])
        params = schema.check(req.params, {"type": P(enum=types)})
        return [
            self._storage_entry(s.storage)
            for s in self.emu.settings.storages
            if params.get("type") in (None, s.type)
        ]

    def storage_get(self, req: Request) -> Any:
        params = schema.check(req.params, {"storage": schema.STORAGE_REQUIRED})
        return self._storage_entry(params["storage"])

    def lxc_list(self, req: Request) -> Any:
        self._node(req)
        return []  # the lab has no containers

    def network(self, req: Request) -> Any:
        params = self._node(req, {"type": P(enum=NETWORK_TYPES[self.emu.release])})
        interfaces = [
            {
                "iface": "eno1",
                "type": "eth",
                "method": "manual",
                "method6": "manual",
                "active": 1,
                "exists": 1,
                "families": ["inet"],
                "priority": 3,
            },
            {
                "iface": "vmbr0",
                "type": "bridge",
                "method": "static",
                "method6": "manual",
                "active": 1,
                "autostart": 1,
                "bridge_ports": "eno1",
                "bridge_stp": "off",
                "bridge_fd": "0",
                "families": ["inet"],
                "priority": 4,
            },
        ]
        wanted = params.get("type")
        if wanted in ("any_bridge", "any_local_bridge"):
            wanted = "bridge"
        return [i for i in interfaces if wanted in (None, "include_sdn", i["type"])]

    def _agent_vm(self, req: Request) -> dict[str, str]:
        params = self.emu.qemu._params(req, {})
        vmid = params["vmid"]
        vm = self.emu.qemu._vm(vmid)
        if not propstr.agent_enabled(vm.conf.get("agent")):
            raise fail("No QEMU guest agent configured")
        if not self.emu.store.is_running(vmid):
            raise fail(f"VM {vmid} is not running")
        self.emu.qemu.agent_interfaces(req)  # the same readiness (and faults) as the interfaces
        return dict(vm.conf)

    def agent_ping(self, req: Request) -> Any:
        self._agent_vm(req)
        return {}

    def agent_osinfo(self, req: Request) -> Any:
        self._agent_vm(req)
        release = self.emu.settings.debian_release  # the lab's template image, so every guest's
        codename, kernel = GUEST_OS[release]
        return {
            "result": {
                "id": "debian",
                "name": "Debian GNU/Linux",
                "pretty-name": f"Debian GNU/Linux {release} ({codename})",
                "version": f"{release} ({codename})",
                "version-id": str(release),
                "kernel-release": kernel,
                "machine": "x86_64",
            }
        }

    def agent_host_name(self, req: Request) -> Any:
        conf = self._agent_vm(req)
        return {"result": {"host-name": conf.get("name", f"VM{req.params.get('vmid')}")}}

    def not_backed_up(self, req: Request) -> Any:
        """Guests no enabled backup job covers (by vmid, all minus exclude, or pool); a job with
        ``node`` covers only the guests on that node (PVE's VZDump get_included_guests)."""
        schema.check(req.params, {})
        store = self.emu.store
        covered: set[int] = set()
        with store.lock:
            every = [vmid for vmid, vm in store.vms.items() if not vm.is_template]
            for job in store.jobs.values():
                if str(job.get("enabled", "1")) == "0":
                    continue
                included: set[int] = set()
                if str(job.get("all", "0")) == "1":
                    excluded = {int(v) for v in propstr.split_list(str(job.get("exclude", "")))}
                    included |= set(every) - excluded
                included |= {int(v) for v in propstr.split_list(str(job.get("vmid", "")))}
                if job.get("pool"):
                    included |= set(store.pool_members.get(str(job["pool"]), []))
                if job.get("node"):
                    included = {v for v in included if v in store.vms and store.node_of(v) == job["node"]}
                covered |= included
            result = []
            for vmid in sorted(set(every) - covered):
                entry: dict[str, Any] = {"vmid": vmid, "type": "qemu"}
                if "name" in store.vms[vmid].conf:
                    entry["name"] = store.vms[vmid].conf["name"]
                result.append(entry)
        return result

    def replication(self, req: Request) -> Any:
        self._node(req, {"guest": P("integer", minimum=100, maximum=999999999, format="pve-vmid")})
        return []  # no replication jobs in the lab

    def subscription(self, req: Request) -> Any:
        self._node(req)
        # a node without a subscription key, as PVE answers for it
        return {
            "status": "notfound",
            "message": "There is no subscription key",
            "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing",
        }
