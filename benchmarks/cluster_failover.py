"""The HA failover timeline of the emulator's three-node cluster (API only, null backend).

One HA VM runs on pve1; pve1 fails; prints when the VM's config moved to another node and when
it runs there, against the configured fence delay:

    .venv/bin/python benchmarks/cluster_failover.py [--fence-seconds 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from ailab_deploy.lab.emulator import Emulator, RunningEmulator, load_settings

TOKEN = "root@pam!bench"
SECRET = "bench-secret"


def run_once(fence_seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
        lab_dir = Path(tmp)
        settings = {
            "tokens": [{"tokenid": TOKEN, "secret": SECRET}],
            "nodes": ["pve1", "pve2", "pve3"],
            "fence_seconds": fence_seconds,
            "ha_tick_seconds": 0.1,
            "task_seconds": 0.05,
            "auth_failure_delay": 0,
        }
        (lab_dir / "settings.json").write_text(json.dumps(settings))
        running = RunningEmulator(Emulator(load_settings(lab_dir)), "127.0.0.1", 0).start()
        try:
            return _timeline(running, lab_dir)
        finally:
            running.stop()


def _timeline(running: RunningEmulator, lab_dir: Path) -> dict[str, float]:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(lab_dir / "tls" / "pve-ssl.pem")
    auth = {"Authorization": f"PVEAPIToken={TOKEN}={SECRET}"}
    session.headers.update(auth)
    base = running.url

    def wait(check: object, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return time.monotonic()
            time.sleep(0.02)
        raise RuntimeError("timed out")

    def vm() -> dict[str, object]:
        items = session.get(f"{base}/cluster/resources", params={"type": "vm"}).json()["data"]
        return next(item for item in items if item["vmid"] == 101)

    upid = session.post(f"{base}/nodes/pve1/qemu/9000/clone", data={"newid": 101}).json()["data"]
    wait(lambda: session.get(f"{base}/nodes/pve1/tasks/{upid}/status").json()["data"]["status"] == "stopped")
    session.post(f"{base}/cluster/ha/resources", data={"sid": "vm:101"}).raise_for_status()
    wait(lambda: vm()["status"] == "running")
    admin = base.removesuffix("/api2/json") + "/_lab/nodes/pve1/fail"
    failed = time.monotonic()
    session.post(admin).raise_for_status()

    moved = wait(lambda: vm()["node"] != "pve1")  # the fenced node's config is taken over
    started = wait(lambda: vm()["status"] == "running")
    return {"config moved": moved - failed, "running": started - failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fence-seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [run_once(args.fence_seconds) for _ in range(args.runs)]
    print(
        f"failover of one HA VM, fence delay {args.fence_seconds:g} s, {args.runs} runs "
        "(seconds after the fail):"
    )
    for key in results[0]:
        values = [r[key] for r in results]
        print(f"  {key:<18} median {statistics.median(values):.2f}  max {max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
