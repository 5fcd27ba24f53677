"""The lab network: bridge ``ailab0`` (10.77.0.1/24), a firewall that forwards nothing out of
it, and one network namespace + veth pair per container. All calls are idempotent."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from pathlib import Path

from ailab_deploy.errors import LabError
from ailab_deploy.lab.containers.proc import last_line, run, wait_for
from ailab_deploy.lab.network_constants import LAB_BRIDGE, LAB_GATEWAY, LAB_NODE_ADDRESS, LAB_SUBNET

log = logging.getLogger(__name__)

BRIDGE = LAB_BRIDGE
SUBNET = ipaddress.IPv4Network(LAB_SUBNET)
GATEWAY = LAB_GATEWAY
NODE_ADDRESS = LAB_NODE_ADDRESS
NETNS_PREFIX = "ailab-"
VETH_PREFIX = "ailv"  # host end of a container's veth; + name must fit IFNAMSIZ (15)
GUEST_IFNAME = "eth0"
NFT_TABLE = "ailab"
NETNS_DIR = Path("/run/netns")
OWNER_FILE = Path("/run/ailab-deploy/lab-owner")  # the lab dir whose lab holds the bridge

# Guests reach only the host (proxy, emulator) and each other; nothing is routed in or out,
# whatever ip_forward says. With br_netfilter loaded, traffic between two ports of the bridge
# also passes this hook, in and out of the bridge: that is the lab's own network, so it passes.
NFT_RULES = f"""\
table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{BRIDGE}" oifname "{BRIDGE}" accept
        iifname "{BRIDGE}" drop
        oifname "{BRIDGE}" drop
    }}
}}
"""


def netns_name(machine: str) -> str:
    return f"{NETNS_PREFIX}{machine}"


def veth_name(machine: str) -> str:
    name = f"{VETH_PREFIX}{machine}"
    if len(name) > 15:
        raise ValueError(f"machine name {machine!r} is too long for an interface name")
    return name


def link_names() -> list[str]:
    links = json.loads(run(["ip", "-j", "link", "show"], what="listing links").stdout or "[]")
    return [str(link["ifname"]) for link in links]


def namespaces() -> list[str]:
    """Lab network namespaces that exist now."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


def firewall_present() -> bool:
    result = run(["nft", "list", "table", "inet", NFT_TABLE], what="nft", check=False)
    return result.returncode == 0


def bridge_up() -> None:
    """Create the bridge with the gateway address and the forward-drop firewall."""
    if BRIDGE not in link_names():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"], what=f"creating bridge {BRIDGE}")
    addresses = run(["ip", "-j", "addr", "show", "dev", BRIDGE], what="reading bridge addresses")
    gateway = f"{GATEWAY}/{SUBNET.prefixlen}"
    if GATEWAY not in addresses.stdout:
        run(["ip", "addr", "add", gateway, "dev", BRIDGE], what=f"addressing bridge {BRIDGE}")
    run(["ip", "link", "set", BRIDGE, "up"], what=f"bringing bridge {BRIDGE} up")
    # No IPv6 on the lab bridge: the lab is IPv4-only and must not talk to anything else.
    Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6").write_text("1\n")
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("0\n")
    # Replaced as a whole, in one nft transaction, so an older lab's rules never linger.
    flush = f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
    run(["nft", "-f", "-"], what="loading the lab firewall", stdin_text=flush + NFT_RULES)


def bridge_down() -> None:
    if firewall_present():
        run(["nft", "delete", "table", "inet", NFT_TABLE], what="removing the lab firewall")
    if BRIDGE in link_names():
        run(["ip", "link", "delete", BRIDGE], what=f"deleting bridge {BRIDGE}")


def attach(machine: str, mac: str | None) -> str:
    """A fresh netns for ``machine`` with a veth: ``eth0`` inside, the other end on the bridge."""
    detach(machine)
    netns, veth = netns_name(machine), veth_name(machine)
    run(["ip", "netns", "add", netns], what=f"creating network namespace {netns}")
    peer = ["peer", "name", GUEST_IFNAME, *(["address", mac] if mac else []), "netns", netns]
    run(["ip", "link", "add", veth, "type", "veth", *peer], what=f"creating veth {veth}")
    # A bridge port needs no address of its own; keep it from speaking IPv6 on the lab bridge.
    Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1\n")
    run(["ip", "link", "set", veth, "master", BRIDGE, "up"], what=f"attaching {veth} to {BRIDGE}")
    return netns


def detach(machine: str) -> None:
    """Remove the machine's veth pair (deleting one end deletes both) and its netns."""
    netns, veth = netns_name(machine), veth_name(machine)
    if veth in link_names():
        result = run(["ip", "link", "delete", veth], what=f"deleting veth {veth}", check=False)
        if result.returncode != 0 and veth in link_names():
            raise LabError(f"deleting veth {veth}: {last_line(result.stderr)}")
    if netns in namespaces():
        run(["ip", "netns", "delete", netns], what=f"deleting network namespace {netns}")


def ssh_banner(address: str) -> bool | None:
    """True once ``address``:22 answers with an SSH banner (lab addresses only)."""
    if ipaddress.IPv4Address(address) not in SUBNET:
        raise ValueError(f"{address} is not a lab address")
    try:
        with socket.create_connection((address, 22), timeout=1) as conn:
            return True if conn.recv(4).startswith(b"SSH-") else None
    except OSError:
        return None


def wait_ssh(address: str, timeout: float) -> None:
    wait_for(lambda: ssh_banner(address), timeout=timeout, what=f"SSH on {address}")


def owner() -> Path | None:
    """The lab dir that brought the lab network up, if it is still up."""
    try:
        claimed = Path(OWNER_FILE.read_text().strip())
    except OSError:
        return None
    # A lab whose dir is gone (or whose bridge is gone) cannot be taken down by anyone else.
    return claimed if claimed.is_dir() and BRIDGE in link_names() else None


def check_owner(lab_dir: Path) -> None:
    """Raise if another lab dir's lab holds the network: one lab per host (the subnet is fixed)."""
    current = owner()
    if current is not None and current != lab_dir.resolve():
        raise LabError(
            f"the lab network {BRIDGE} is in use by the lab in {current}: take that lab down "
            "first (or run lab_down() without a lab dir to clear everything)"
        )


def claim(lab_dir: Path) -> None:
    check_owner(lab_dir)
    OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(f"{lab_dir.resolve()}\n")


def release() -> None:
    OWNER_FILE.unlink(missing_ok=True)
