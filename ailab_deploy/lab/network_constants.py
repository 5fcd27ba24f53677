"""The lab's one private network: a bridge on this machine and nothing beyond it."""

from __future__ import annotations

LAB_BRIDGE = "ailab0"
LAB_SUBNET = "10.77.0.0/24"
LAB_GATEWAY = "10.77.0.1"
LAB_NODE_ADDRESS = "10.77.0.2"
LAB_PROXY_PORT = 8888
LAB_PROXY_URL = f"http://{LAB_GATEWAY}:{LAB_PROXY_PORT}"
LAB_VM_ADDRESSES = ("10.77.0.10", "10.77.0.11", "10.77.0.12")
