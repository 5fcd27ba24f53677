"""Print the container lab's timings: template build (cold, warm) and VM start to SSH-ready.

Run as root: ``.venv/bin/python benchmarks/lab_vms.py [--skip-cold] [--vms 3]``.
The cold build uses a throw-away cache dir, so the real image cache is left as it is.
Target: a VM is SSH-ready less than 10 s after its start.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from ailab_deploy.lab.containers import ContainerBackend, lab_down, lab_up, leftovers, network
from ailab_deploy.lab.containers.image import build_template
from ailab_deploy.lab.containers.node import lab_key

TEMPLATE_VMID = 9000
TARGET_SECONDS = 10.0


def vm_config(vmid: int, address: str, public_key: str) -> dict[str, str]:
    return {
        "name": f"bench{vmid}",
        "ciuser": "ailab",
        "sshkeys": quote(public_key, safe=""),
        "ipconfig0": f"ip={address}/24,gw={network.GATEWAY}",
        "nameserver": network.GATEWAY,
    }


def timed_start(backend: ContainerBackend, vmids: dict[int, str], public_key: str) -> dict[int, float]:
    """Start the VMs together; seconds from each start() call to its SSH banner."""
    started = {}
    for vmid, address in vmids.items():
        backend.clone(TEMPLATE_VMID, vmid, {})
        started[vmid] = time.monotonic()
        backend.start(vmid, vm_config(vmid, address, public_key))
    ready = {}
    for vmid, address in vmids.items():
        network.wait_ssh(address, 120)
        ready[vmid] = time.monotonic() - started[vmid]
    return ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true", help="do not time a cold build")
    parser.add_argument("--vms", type=int, default=3, help="VMs per round (max 50)")
    args = parser.parse_args()
    rows: list[tuple[str, float]] = []

    if not args.skip_cold:
        cold_cache = Path(tempfile.mkdtemp(prefix="ailab-cold-images-", dir="/var/tmp"))
        try:
            rows.append(
                ("template build, cold (debootstrap + configure)", build_template(cold_cache).seconds)
            )
        finally:
            shutil.rmtree(cold_cache)
    build_template()  # make sure the real cache is filled, then time a warm lookup
    rows.append(("template build, warm (cache hit)", build_template().seconds))

    with tempfile.TemporaryDirectory(prefix="ailab-bench-") as tmp:
        lab_dir = Path(tmp) / "lab"
        key = lab_key(Path(tmp) / "user")
        public_key = key.with_suffix(".pub").read_text().strip()
        started = time.monotonic()
        infra = lab_up(lab_dir)
        rows.append(("lab up (bridge, proxy, image, node SSH-ready)", time.monotonic() - started))
        backend = ContainerBackend(lab_dir, template_rootfs=infra.template.rootfs)
        backend.register_template(TEMPLATE_VMID, {})
        try:
            addresses = {200 + i: f"10.77.0.{100 + i}" for i in range(args.vms)}
            for vmid, address in addresses.items():  # one at a time
                seconds = timed_start(backend, {vmid: address}, public_key)[vmid]
                rows.append((f"VM {vmid} start -> SSH-ready (alone)", seconds))
                backend.destroy(vmid)
            together = timed_start(backend, addresses, public_key)
            for vmid, seconds in together.items():
                rows.append((f"VM {vmid} start -> SSH-ready ({args.vms} at once)", seconds))
            started = time.monotonic()
            for vmid in addresses:
                backend.destroy(vmid)
            rows.append((f"destroy {args.vms} VMs", time.monotonic() - started))
        finally:
            started = time.monotonic()
            lab_down(lab_dir)
            rows.append(("lab down", time.monotonic() - started))
    left = leftovers()

    width = max(len(label) for label, _ in rows)
    for label, seconds in rows:
        flag = ""
        if "SSH-ready" in label and "lab up" not in label:
            flag = "  ok" if seconds < TARGET_SECONDS else f"  OVER {TARGET_SECONDS:.0f} s TARGET"
        print(f"{label:<{width}}  {seconds:7.1f} s{flag}")
    print(f"leftovers after down: {left or 'none'}")


if __name__ == "__main__":
    main()
