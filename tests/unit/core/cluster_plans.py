"""Cluster plans for tests: the reference vms.yaml spread over three nodes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REFERENCE = Path(__file__).resolve().parents[3] / "vms.yaml"


def reference() -> dict[str, Any]:
    tree: dict[str, Any] = yaml.safe_load(REFERENCE.read_text())
    return tree


def cluster(tree: dict[str, Any], memories: tuple[str, ...] = ("126G", "64G", "64G")) -> dict[str, Any]:
    """The reference plan on three nodes; HDDStorage becomes an NFS share every node sees."""
    tree = copy.deepcopy(tree)
    host = tree.pop("host")
    host["storage"] = [
        {"name": "HDDStorage", "kind": "hdd", "capacity": "2.18TB", "shared": True},
        {"name": "local-lvm", "kind": "ssd", "capacity": "237GB"},
    ]
    node_name = tree["proxmox"].pop("node")
    tree["proxmox"]["nodes"] = [
        {"name": f"{node_name}{n}", "host": f"pve{n}.home.arpa", "hardware": {**host, "memory": memory}}
        for n, memory in enumerate(memories, start=1)
    ]
    return tree
