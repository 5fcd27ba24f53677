"""Read latency of the Proxmox API emulator with many VMs in state.

Starts the emulator as a separate process (own temp lab dir, random loopback port),
clones the lab template into N VMs (default 300), then times GET .../config and
GET /cluster/resources?type=vm over one keep-alive HTTPS session and prints p50/p99.
With ``--nodes N`` the lab is a cluster pve1..pveN and the clones are spread over its nodes
(clone ``target=``; the template is on shared storage).

    .venv/bin/python benchmarks/emulator_reads.py [--vms 300] [--samples 500] [--nodes 3]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

TOKEN = "root@pam!bench"
SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=300)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args()
    nodes = ["pve"] if args.nodes < 2 else [f"pve{i}" for i in range(1, args.nodes + 1)]
    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as tmp:
        lab_dir = Path(tmp)
        port = free_port()
        settings = {
            "tokens": [{"tokenid": TOKEN, "secret": SECRET}],
            "task_seconds": 0,
            "auth_failure_delay": 0,
            **({"nodes": nodes} if len(nodes) > 1 else {}),
        }
        (lab_dir / "settings.json").write_text(json.dumps(settings))
        log = (lab_dir / "emulator.log").open("wb")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ailab_deploy.lab.emulator",
                "--lab-dir",
                str(lab_dir),
                "--port",
                str(port),
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            return run(lab_dir, port, args.vms, args.samples, nodes)
        finally:
            server.terminate()
            server.wait(10)


def run(lab_dir: Path, port: int, vms: int, samples: int, nodes: list[str]) -> int:
    base = f"https://127.0.0.1:{port}/api2/json"
    deadline = time.monotonic() + 30
    while not (lab_dir / "emulator.ready").exists():  # written once it serves
        if time.monotonic() > deadline:
            print("emulator did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify; no proxies either
    session.headers["Authorization"] = f"PVEAPIToken={TOKEN}={SECRET}"
    session.verify = str(lab_dir / "tls" / "pve-ssl.pem")
    session.get(f"{base}/version", timeout=5).raise_for_status()
    started = time.perf_counter()
    upids = []
    home = nodes[0]  # the template's node
    for i in range(vms):
        clone = {"newid": 1000 + i, "name": f"vm{i}"}
        if nodes[i % len(nodes)] != home:
            clone["target"] = nodes[i % len(nodes)]
        answer = session.post(f"{base}/nodes/{home}/qemu/9000/clone", data=clone)
        answer.raise_for_status()
        upids.append(answer.json()["data"])
    for upid in upids:
        while True:
            status = session.get(f"{base}/nodes/{home}/tasks/{upid}/status").json()["data"]
            if status["status"] == "stopped":
                assert status["exitstatus"] == "OK", status
                break
            time.sleep(0.01)
    print(
        f"created {vms} VMs by linked clone on {len(nodes)} node(s) in {time.perf_counter() - started:.1f} s"
    )
    count = len(session.get(f"{base}/cluster/resources", params={"type": "vm"}).json()["data"])
    assert count == vms + 1, count
    ids = list(range(1000, 1000 + vms))
    for name, url in (
        ("GET /nodes/{node}/qemu/{vmid}/config", lambda: _config_url(base, nodes, random.choice(ids))),
        ("GET /cluster/resources?type=vm", lambda: f"{base}/cluster/resources?type=vm"),
    ):
        for _ in range(20):  # warm-up
            session.get(url())
        timings = []
        for _ in range(samples):
            target = url()
            t0 = time.perf_counter()
            answer = session.get(target)
            answer.json()
            timings.append((time.perf_counter() - t0) * 1000)
            answer.raise_for_status()
        print(
            f"{name:<38} n={samples} p50={percentile(timings, 0.50):.2f} ms "
            f"p99={percentile(timings, 0.99):.2f} ms mean={statistics.mean(timings):.2f} ms"
        )
    return 0


def _config_url(base: str, nodes: list[str], vmid: int) -> str:
    return f"{base}/nodes/{nodes[(vmid - 1000) % len(nodes)]}/qemu/{vmid}/config"


if __name__ == "__main__":
    sys.exit(main())
