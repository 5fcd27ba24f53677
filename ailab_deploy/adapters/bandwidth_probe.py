"""A memory-bandwidth probe that needs nothing but python3, so it runs on any VM.

Each of N processes copies a buffer much larger than the caches (a memcpy through
memoryview assignment); bandwidth counts bytes read plus bytes written, as STREAM's
copy kernel does. The probe source is sent to VMs over SSH and printed back as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE_SOURCE = r"""
import json, multiprocessing as mp, os, sys, time

def worker(size, rounds, queue):
    src = bytearray(os.urandom(1 << 20)) * (size >> 20)
    dst = bytearray(size)
    view_src, view_dst = memoryview(src), memoryview(dst)
    view_dst[:] = view_src  # warm up: fault in every page
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        view_dst[:] = view_src
        best = min(best, time.perf_counter() - start)
    queue.put(2 * size / best)

def main():
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 256 << 20
    queue = mp.Queue()
    procs = [mp.Process(target=worker, args=(size, 5, queue)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    rates = [queue.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    print(json.dumps({"workers": workers, "buffer_bytes": size,
                      "bandwidth_gbs": round(sum(rates) / 1e9, 2)}))

main()
"""


def parse_probe_output(text: str) -> float:
    """The GB/s figure from the probe's JSON line."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return float(json.loads(line)["bandwidth_gbs"])
    raise ValueError(f"no probe result in output: {text[-200:]!r}")


def measure_locally(workers: int | None = None, buffer_bytes: int = 256 << 20) -> float:
    """Run the probe on this machine; GB/s."""
    args = [sys.executable, "-c", PROBE_SOURCE, str(workers or 0), str(buffer_bytes)]
    if workers is None:
        args = args[:3]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    return parse_probe_output(result.stdout)
