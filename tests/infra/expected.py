"""What each host should hold, worked out from the plan and its sizing, never from the inventory.

The inventory is what the roles were given: a wrong value there would be applied and then
"confirmed" by a test reading the same inventory. So the infra tests take the values that
matter (PostgreSQL settings, LLM flags, firewall sources) from here, and a unit test checks
these helpers against literal values for the lab plan.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ailab_deploy.core.plan import VM, Plan
from ailab_deploy.core.sizing import size_llm, size_postgres

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SSH_PORT = 22  # roles/common's common_ssh_port; the plan does not change it
SERVED_MODEL_NAME = "ailab-llm"  # the name the apps ask the LLM server for
LLAMACPP_API_KEY_FILE = "/etc/ailab-llm/api-key"  # roles/llm's __llm_api_key_file
OLLAMA_BACKEND_PORT = 11435  # roles/llm's llm_ollama_backend_port: Ollama on loopback, behind the proxy


def plan_vm(plan: Plan, name: str) -> VM:
    return next(vm for vm in plan.vms if vm.name == name)


def networks(sources: Iterable[Any]) -> frozenset[Network]:
    """The addresses ``sources`` cover, as the fewest networks (nft merges overlapping elements
    too), so two spellings of the same sources compare equal and any other difference shows."""
    parsed = [ipaddress.ip_network(str(source), strict=False) for source in sources]
    v4 = [network for network in parsed if network.version == 4]
    v6 = [network for network in parsed if network.version == 6]
    return frozenset([*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)])


def debian_release(plan: Plan) -> int:
    """The Debian major release every VM runs: the plan's template.release."""
    return plan.template.release


def postgresql_major(plan: Plan) -> int:
    """The pinned PGDG major, else the one the release ships (17 on Debian 13, 15 on 12)."""
    return plan.postgresql_major


def postgresql_unit(plan: Plan) -> str:
    """Debian's cluster unit: postgresql@<major>-main."""
    return f"postgresql@{postgresql_major(plan)}-main"


def python_version(plan: Plan) -> str:
    """The python3 of the release, which the apps' venv runs ("3.13" on Debian 13, "3.11" on 12)."""
    return plan.debian.python


def postgresql_settings(plan: Plan, vm: VM) -> dict[str, str]:
    return dict(size_postgres(plan, vm).settings)


def postgresql_clients(plan: Plan) -> frozenset[Network]:
    """pg_hba lets in the apps VMs, nobody else (besides loopback)."""
    return networks(vm.ip for vm in plan.vms_with_role("python_app"))


def llamacpp_flags(plan: Plan, vm: VM) -> dict[str, str]:
    llm = plan.llm
    return {
        "--host": str(vm.ip),
        "--port": str(llm.port),
        "--threads": str(size_llm(plan, vm).threads),
        "--parallel": str(llm.parallel),
        # llama-server splits --ctx-size between its slots: each request gets context_length.
        "--ctx-size": str(llm.context_length * llm.parallel),
        "--cache-type-k": llm.kv_cache_type,
        "--cache-type-v": llm.kv_cache_type,
        "--alias": SERVED_MODEL_NAME,
        # The key comes from a file only llama-server's user reads, never from the command line.
        "--api-key-file": LLAMACPP_API_KEY_FILE,
    }


def ollama_environment(plan: Plan, vm: VM) -> dict[str, str]:
    llm = plan.llm
    return {
        # Ollama itself on loopback only; the key-checking proxy listens on the private address.
        "OLLAMA_HOST": f"127.0.0.1:{OLLAMA_BACKEND_PORT}",
        "OLLAMA_MAX_LOADED_MODELS": "1",
        "OLLAMA_NUM_PARALLEL": str(llm.parallel),
        "OLLAMA_CONTEXT_LENGTH": str(llm.context_length),
        "OLLAMA_KV_CACHE_TYPE": llm.kv_cache_type,
    }


def open_ports(plan: Plan, vm: VM) -> dict[int, frozenset[Network]]:
    """TCP port -> the source networks the firewall of ``vm`` accepts on it.

    SSH from the admin networks; the database and the LLM only from the apps VMs (closed when
    there are none); each app from the admin networks.
    """
    apps_vms = networks(other.ip for other in plan.vms_with_role("python_app"))
    admins = networks(plan.network.admin_sources)
    ports: dict[int, frozenset[Network]] = {SSH_PORT: admins}
    if "postgresql" in vm.roles and apps_vms:
        ports[plan.database.port] = apps_vms
    if "llm" in vm.roles and apps_vms:
        ports[plan.llm.port] = apps_vms
    if "python_app" in vm.roles:
        for app in plan.apps.apps:
            ports[app.port] = admins
    return ports


# ---- nftables: `nft -j list ruleset` parsed into (port -> accepted source networks)


def _addresses(right: Any) -> list[Network]:
    """The networks of a match's right-hand side: an address, a prefix, a range or a set of them."""
    if isinstance(right, dict) and "set" in right:
        return [network for item in right["set"] for network in _addresses(item)]
    if isinstance(right, dict) and "prefix" in right:
        prefix = right["prefix"]
        return [ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}")]
    if isinstance(right, dict) and "range" in right:
        first, last = (ipaddress.ip_address(end) for end in right["range"])
        return list(ipaddress.summarize_address_range(first, last))
    return [ipaddress.ip_network(str(right))]


def _ports(right: Any) -> list[int]:
    if isinstance(right, dict) and "set" in right:
        return [port for item in right["set"] for port in _ports(item)]
    if isinstance(right, dict) and "range" in right:
        first, last = right["range"]
        return list(range(int(first), int(last) + 1))
    return [int(right)]


def accepted_tcp_sources(
    ruleset: dict[str, Any], chain: str = "input"
) -> dict[int, frozenset[Network] | None]:
    """TCP port -> source networks that an ``accept`` rule of ``chain`` lets in (None: any source).

    Only rules whose matches are all ``==`` on ``tcp dport`` and ``ip/ip6 saddr`` count; a rule
    that also matches something else (ct state, iif) is not a port opening and is left out.
    """
    accepted: dict[int, frozenset[Network] | None] = {}
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("chain") != chain:
            continue
        expressions = rule.get("expr", [])
        if not any("accept" in expression for expression in expressions):
            continue
        ports: list[int] = []
        sources: list[Network] | None = None
        understood = True
        for expression in expressions:
            match = expression.get("match")
            if match is None:
                continue
            payload = match.get("left", {}).get("payload", {})
            field = (payload.get("protocol"), payload.get("field"))
            if match.get("op") not in ("==", "in") or field not in (
                ("tcp", "dport"),
                ("ip", "saddr"),
                ("ip6", "saddr"),
            ):
                understood = False
            elif field == ("tcp", "dport"):
                ports += _ports(match["right"])
            else:
                sources = (sources or []) + _addresses(match["right"])
        if not understood or not ports:
            continue
        for port in ports:
            known = accepted.get(port, frozenset())
            accepted[port] = None if sources is None or known is None else networks([*known, *sources])
    return accepted
