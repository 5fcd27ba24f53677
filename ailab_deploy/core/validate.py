"""Rules that relate several parts of a plan: addresses, uniqueness, capacity, roles.

Each rule returns :class:`Problem` values pointing at the plan path to blame,
so the loader can name the file line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from ailab_deploy.core.cluster import hardware_path, need_of, placements, room_of
from ailab_deploy.core.placement import ha_capacity_findings
from ailab_deploy.core.plan import KNOWN_ROLES, VM, AppSource, Host, Plan
from ailab_deploy.core.problems import Problem
from ailab_deploy.core.releases import named_release
from ailab_deploy.core.sizing import known_model
from ailab_deploy.core.units import GIB, MIB, format_bytes


def check_plan(plan: Plan) -> list[Problem]:
    """Every cross-field problem of ``plan``, errors and warnings (sizing adds its own: the loader)."""
    problems: list[Problem] = []
    for rule in (
        _unique_vmids,
        _unique_names,
        _addresses,
        _node_form,
        _storage_names,
        _one_node_capacity,
        _cluster_placement,
        _cluster_references,
        _roles,
        _database_refs,
        _apps,
        _llm_model_source,
        _template_keys,
        _template_release,
    ):
        problems.extend(rule(plan))
    return problems


def _unique_vmids(plan: Plan) -> Iterator[Problem]:
    seen: dict[int, str] = {plan.template.vmid: "template.vmid"}
    for index, vm in enumerate(plan.vms):
        if vm.vmid in seen:
            yield Problem(("vms", index, "vmid"), f"vmid {vm.vmid} is already used by {seen[vm.vmid]}")
        else:
            seen[vm.vmid] = f"vms[{index}] ({vm.name})"


def _unique_names(plan: Plan) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for index, vm in enumerate(plan.vms):
        if vm.name in seen:
            yield Problem(("vms", index, "name"), f"name {vm.name!r} is already used by vms[{seen[vm.name]}]")
        else:
            seen[vm.name] = index


def _addresses(plan: Plan) -> Iterator[Problem]:
    net = plan.network
    subnet = net.subnet
    if net.gateway not in subnet:
        yield Problem(("network", "gateway"), f"gateway {net.gateway} is outside subnet {subnet}")
    seen: dict[str, int] = {}
    for index, vm in enumerate(plan.vms):
        where = ("vms", index, "ip")
        if vm.ip not in subnet:
            yield Problem(where, f"{vm.ip} is outside subnet {subnet}")
        elif vm.ip == subnet.network_address:
            yield Problem(where, f"{vm.ip} is the network address of {subnet}")
        elif vm.ip == subnet.broadcast_address and subnet.prefixlen < 31:
            yield Problem(where, f"{vm.ip} is the broadcast address of {subnet}")
        elif vm.ip == net.gateway:
            yield Problem(where, f"{vm.ip} is the gateway address")
        if str(vm.ip) in seen:
            yield Problem(where, f"{vm.ip} is already used by vms[{seen[str(vm.ip)]}]")
        else:
            seen[str(vm.ip)] = index


def _node_form(plan: Plan) -> Iterator[Problem]:
    """One node (proxmox.node with the top-level host) or a cluster (proxmox.nodes), not a mix."""
    proxmox = plan.proxmox
    if proxmox.nodes:
        if proxmox.node is not None:
            yield Problem(("proxmox", "node"), "give proxmox.node or proxmox.nodes, not both")
        if plan.host is not None:
            yield Problem(("host",), "a cluster gives each node's hardware under proxmox.nodes; remove host")
        names = [node.name for node in proxmox.nodes]
        for index, name in enumerate(names):
            if names.index(name) != index:
                yield Problem(("proxmox", "nodes", index, "name"), f"node {name!r} is declared twice")
        return
    if proxmox.node is None:
        yield Problem(("proxmox", "node"), "required key is missing (or proxmox.nodes, for a cluster)")
    if plan.host is None:
        yield Problem(
            ("host",), "required key is missing: the node's hardware (or proxmox.nodes, for a cluster)"
        )


def _storage_names(plan: Plan) -> Iterator[Problem]:
    declared: list[str] = []
    for node_index, node in enumerate(plan.nodes):
        names = [pool.name for pool in node.hardware.storage]
        for name, count in Counter(names).items():
            if count > 1:
                position = names.index(name)
                yield Problem(
                    (*hardware_path(plan, node_index), "storage", position, "name"),
                    f"storage {name!r} is declared {count} times",
                )
        declared.extend(name for name in names if name not in declared)
    if not plan.nodes:
        return
    known = ", ".join(declared)
    if plan.storage(plan.template.storage) is None:
        yield Problem(
            ("template", "storage"), f"unknown storage {plan.template.storage!r} (declared: {known})"
        )
    for index, vm in enumerate(plan.vms):
        if plan.storage(vm.storage) is None:
            yield Problem(("vms", index, "storage"), f"unknown storage {vm.storage!r} (declared: {known})")


def _one_node_capacity(plan: Plan) -> Iterator[Problem]:
    """Disks, memory and CPU of every VM against the one node (a cluster: ``_cluster_placement``)."""
    if len(plan.nodes) != 1 or plan.proxmox.nodes:
        return
    host = plan.nodes[0].hardware
    for index, pool in enumerate(host.storage):
        users = [vm for vm in plan.vms if vm.storage == pool.name]
        needed = sum(vm.disk for vm in users) * GIB
        if needed > pool.capacity:
            names = ", ".join(f"{vm.name} {vm.disk} GiB" for vm in users)
            yield Problem(
                ("host", "storage", index, "capacity"),
                f"disks on {pool.name} need {format_bytes(needed)} ({names}) "
                f"but it holds {format_bytes(pool.capacity)}",
            )
    vm_total = sum(vm.memory for vm in plan.vms)
    needed = vm_total + host.reserved_memory
    if needed > host.memory:
        yield Problem(
            ("host", "memory"),
            f"VMs need {format_bytes(vm_total * MIB)} plus a host reserve of "
            f"{format_bytes(host.reserved_memory * MIB)} = {format_bytes(needed * MIB)}, "
            f"more than the host's {format_bytes(host.memory * MIB)}",
        )
    yield from _cpu_oversubscription(host, plan.vms)


def _cpu_oversubscription(host: Host, vms: Sequence[VM], where: str = "") -> Iterator[Problem]:
    threads = host.sockets * host.cores_per_socket * host.threads_per_core
    for index, vm in enumerate(vms):
        if vm.vcpus > threads:
            yield Problem(("vms", index, "cores"), f"{vm.vcpus} vCPUs exceed the host's {threads} threads")
        if vm.sockets > host.sockets:
            yield Problem(("vms", index, "sockets"), f"{vm.sockets} sockets exceed the host's {host.sockets}")
    total = sum(vm.vcpus for vm in vms)
    ratio = total / threads
    summary = f"{where}{total} vCPUs on {threads} host threads is {ratio:.2f} per thread"
    if ratio > host.cpu_oversubscription_max:
        yield Problem(("vms",), f"{summary}, above the limit of {host.cpu_oversubscription_max}")
    elif ratio > host.cpu_oversubscription_warn:
        yield Problem(
            ("vms",),
            f"{summary}, above {host.cpu_oversubscription_warn}: VMs will compete for CPU",
            "warning",
        )


def _cluster_placement(plan: Plan) -> Iterator[Problem]:
    """A cluster: every VM placed on a node it fits, and HA VMs with somewhere to go."""
    if not plan.proxmox.nodes:
        return
    chosen, problems = placements(plan)
    yield from problems
    where = {placement.vm: placement.node for placement in chosen}
    for node in plan.nodes:
        hosted = [vm for vm in plan.vms if where.get(vm.name) == node.name]
        for problem in _cpu_oversubscription(node.hardware, hosted, f"node {node.name}: "):
            if problem.severity == "warning":  # the limit itself is a placement rule
                yield problem
    yield from ha_capacity_findings(
        [room_of(node) for node in plan.nodes], [need_of(vm) for vm in plan.vms], chosen
    )


def _cluster_references(plan: Plan) -> Iterator[Problem]:
    nodes = {node.name for node in plan.nodes}
    known = ", ".join(sorted(nodes))
    for index, vm in enumerate(plan.vms):
        if vm.node is not None and not plan.proxmox.nodes and vm.node not in nodes:
            yield Problem(("vms", index, "node"), f"node {vm.node!r} is not the plan's node ({known})")
        if vm.ha is None:
            continue
        for position, name in enumerate(vm.ha.nodes):
            if name not in nodes:
                yield Problem(
                    ("vms", index, "ha", "nodes", position),
                    f"node {name!r} is not one of the plan's nodes ({known})",
                )
        pool = plan.storage(vm.storage)
        if pool is not None and not pool.shared:
            yield Problem(
                ("vms", index, "ha"),
                f"HA needs the disk on shared storage, and {vm.storage!r} is local: "
                "Proxmox cannot restart the VM on another node",
            )
        if len(nodes) < 3:
            yield Problem(
                ("vms", index, "ha"),
                f"HA needs three or more nodes to keep quorum when one fails ({len(nodes)} here)",
                "warning",
            )


def _roles(plan: Plan) -> Iterator[Problem]:
    for index, vm in enumerate(plan.vms):
        for position, role in enumerate(vm.roles):
            if role not in KNOWN_ROLES:
                yield Problem(
                    ("vms", index, "roles", position),
                    f"unknown role {role!r} (known: {', '.join(KNOWN_ROLES)})",
                )
        if "backup" in vm.roles and "postgresql" not in vm.roles:
            position = vm.roles.index("backup")
            yield Problem(
                ("vms", index, "roles", position), "role 'backup' needs 'postgresql' on the same VM"
            )
        if "common" not in vm.roles:
            yield Problem(
                ("vms", index, "roles"), "every VM needs the 'common' role (base system, SSH, firewall)"
            )
    for role in ("postgresql", "llm"):
        holders = [i for i, vm in enumerate(plan.vms) if role in vm.roles]
        if len(holders) > 1:
            yield Problem(("vms", holders[1], "roles"), f"role {role!r} is on more than one VM")
    if plan.apps.apps and not plan.vms_with_role("python_app"):
        yield Problem(("apps", "apps"), "apps are declared but no VM has the 'python_app' role")
    if plan.database.databases and not plan.vms_with_role("postgresql"):
        yield Problem(("database", "databases"), "databases are declared but no VM has the 'postgresql' role")


def _database_refs(plan: Plan) -> Iterator[Problem]:
    db = plan.database
    users = {user.name for user in db.users}
    names = [spec.name for spec in db.databases]
    for index, spec in enumerate(db.databases):
        if spec.owner not in users:
            yield Problem(
                ("database", "databases", index, "owner"), f"owner {spec.owner!r} is not in database.users"
            )
        if names.count(spec.name) > 1 and names.index(spec.name) != index:
            yield Problem(
                ("database", "databases", index, "name"), f"database {spec.name!r} is declared twice"
            )
    user_names = [user.name for user in db.users]
    for index, user in enumerate(db.users):
        if user_names.index(user.name) != index:
            yield Problem(("database", "users", index, "name"), f"user {user.name!r} is declared twice")
    shipped = plan.debian
    if db.version is not None and db.source == "debian" and db.version != shipped.postgresql:
        yield Problem(
            ("database", "version"),
            f"PostgreSQL {db.version} needs source: pgdg (Debian {shipped.major} ships {shipped.postgresql})",
        )


def _source_problems(source: AppSource) -> Iterator[tuple[str, str]]:
    needs = {"wheel": ("path",), "path": ("path",), "git": ("url", "ref"), "pypi": ("spec",)}
    for key in needs[source.kind]:
        if getattr(source, key) is None:
            yield key, f"a {source.kind!r} source needs {key!r}"


def _apps(plan: Plan) -> Iterator[Problem]:
    databases = {spec.name for spec in plan.database.databases}
    users = {user.name for user in plan.database.users}
    if plan.apps.framework is not None:
        for key, message in _source_problems(plan.apps.framework):
            yield Problem(("apps", "framework", key), message)
    ports: dict[int, str] = {}
    names: set[str] = set()
    for index, app in enumerate(plan.apps.apps):
        if app.name in names:
            yield Problem(("apps", "apps", index, "name"), f"app {app.name!r} is declared twice")
        names.add(app.name)
        if app.port in ports:
            yield Problem(
                ("apps", "apps", index, "port"), f"port {app.port} is already used by app {ports[app.port]!r}"
            )
        ports[app.port] = app.name
        for key, message in _source_problems(app.source):
            yield Problem(("apps", "apps", index, "source", key), message)
        if app.database is not None and app.database not in databases:
            yield Problem(
                ("apps", "apps", index, "database"), f"database {app.database!r} is not in database.databases"
            )
        if app.database_user is not None and app.database_user not in users:
            yield Problem(
                ("apps", "apps", index, "database_user"),
                f"user {app.database_user!r} is not in database.users",
            )
        if app.kind == "asgi" and ":" not in app.entrypoint:
            yield Problem(("apps", "apps", index, "entrypoint"), "an ASGI entrypoint is 'module:attribute'")


def _llm_model_source(plan: Plan) -> Iterator[Problem]:
    llm = plan.llm
    if llm.engine == "llamacpp":
        model = llm.llamacpp.model
        if model is None:
            yield Problem(("llm", "llamacpp"), "the llamacpp engine needs llamacpp.model (a GGUF source)")
        else:
            given = [key for key in ("url", "path", "pypi_package") if getattr(model, key)]
            if len(given) != 1:
                yield Problem(
                    ("llm", "llamacpp", "model"),
                    "give exactly one of url, path or pypi_package"
                    + (f" (got {', '.join(given)})" if given else ""),
                )
    if known_model(llm.model) is None and llm.architecture is None:
        yield Problem(
            ("llm", "model"),
            f"model {llm.model!r} is not in the sizing table; describe it in llm.architecture",
        )
    if llm.kv_cache_type != "f16" and not llm.flash_attention:
        yield Problem(("llm", "kv_cache_type"), "a quantized KV cache needs flash_attention: true")


def _template_keys(plan: Plan) -> Iterator[Problem]:
    template = plan.template
    if not template.ssh_public_keys and not template.ssh_public_key_files:
        yield Problem(
            ("template", "ssh_public_keys"),
            "no SSH public key for the admin user: add ssh_public_keys or ssh_public_key_files",
        )
    for index, key in enumerate(template.ssh_public_keys):
        parts = key.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
            yield Problem(
                ("template", "ssh_public_keys", index),
                "not an SSH public key ('ssh-ed25519 AAAA... comment')",
            )


def _template_release(plan: Plan) -> Iterator[Problem]:
    """The cloud image and the template's name must not name another release than template.release:
    the roles would adapt to the host, but sizing and verification would expect the wrong one."""
    template, wanted = plan.template, plan.debian
    if template.image_url:
        named = named_release(template.image_url)
        if named is not None and named != wanted:
            yield Problem(
                ("template", "image_url"),
                f"is a Debian {named.major} image but template.release is {wanted.major} "
                f"(Debian {wanted.major}: {wanted.image_url})",
            )
    named = named_release(template.name)
    if named is not None and named != wanted:
        yield Problem(
            ("template", "name"),
            f"{template.name!r} names Debian {named.major} but template.release is {wanted.major}; "
            f"a new release needs a new template ({wanted.template_name}) and new VMs",
            severity="warning",
        )
