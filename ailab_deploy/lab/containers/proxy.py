"""The guests' only way out: tinyproxy on the bridge gateway (10.77.0.1:8888).

It runs in the host's network namespace, so it reaches the Debian mirror and PyPI exactly as
the host does. If the host itself goes through a proxy (``https_proxy``/``http_proxy``), it is
used as tinyproxy's upstream.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from ailab_deploy.errors import LabError
from ailab_deploy.lab.containers import network
from ailab_deploy.lab.containers.proc import (
    cmdline,
    is_alive,
    last_line,
    processes_matching,
    read_pid,
    send_signal,
    wait_for,
    wait_gone,
)
from ailab_deploy.lab.network_constants import LAB_PROXY_PORT

log = logging.getLogger(__name__)

PORT = LAB_PROXY_PORT
PROXY_URL = f"http://{network.GATEWAY}:{PORT}"
CONFIG_NAME = "ailab-tinyproxy.conf"  # also how leftovers() recognises our tinyproxy
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def proxy_dir(lab_dir: Path) -> Path:
    return lab_dir / "proxy"


def is_lab_proxy(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == "tinyproxy" and any(arg.endswith(CONFIG_NAME) for arg in argv)


def upstream_from_env() -> str | None:
    """``host:port`` of the proxy the host uses for HTTPS/HTTP, if any."""
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        value = os.environ.get(var)
        if value:
            parts = urlsplit(value if "://" in value else f"http://{value}")
            if parts.hostname:
                return f"{parts.hostname}:{parts.port or 80}"
    return None


def render_config(upstream: str | None) -> str:
    lines = [
        "User nobody",
        "Group nogroup",
        f"Port {PORT}",
        f"Listen {network.GATEWAY}",  # the bridge only: never the host's other interfaces
        "Timeout 600",
        "MaxClients 100",
        f"Allow {network.SUBNET}",
        "ConnectPort 443",
        "DisableViaHeader Yes",
        "LogLevel Notice",
    ]
    if upstream:
        lines.append(f"Upstream http {upstream}")
    return "\n".join(lines) + "\n"


def _pid(lab_dir: Path) -> int | None:
    pid = read_pid(proxy_dir(lab_dir) / "tinyproxy.pid")
    if pid is not None and is_alive(pid) and is_lab_proxy(cmdline(pid)):
        return pid
    return None


def _listening() -> bool | None:
    try:
        with socket.create_connection((network.GATEWAY, PORT), timeout=0.5):
            return True
    except OSError:
        return None


def proxy_up(lab_dir: Path) -> str:
    """Start tinyproxy (idempotent; needs the bridge). Returns the proxy URL for guests."""
    if _pid(lab_dir) is not None:
        return PROXY_URL
    directory = proxy_dir(lab_dir)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_NAME
    config.write_text(render_config(upstream_from_env()))
    log_path = directory / "tinyproxy.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (directory / "tinyproxy.pid").write_text(f"{process.pid}\n")

    def ready() -> bool | None:
        if process.poll() is not None:
            raise LabError(f"tinyproxy exited {process.returncode}: {last_line(log_path.read_text())}")
        return _listening()

    wait_for(ready, timeout=START_TIMEOUT, what=f"tinyproxy on {network.GATEWAY}:{PORT}")
    log.info("tinyproxy listening on %s (pid %d)", PROXY_URL, process.pid)
    return PROXY_URL


def proxy_down(lab_dir: Path | None = None) -> None:
    """Stop the lab's tinyproxy (every one: there is one lab bridge per host). Idempotent."""
    pids = processes_matching(is_lab_proxy)
    for pid in pids:
        send_signal(pid, signal.SIGTERM)
    if not wait_gone(pids, timeout=STOP_TIMEOUT):
        raise LabError(f"tinyproxy (pid {', '.join(map(str, pids))}) did not exit")
    if lab_dir is not None:
        (proxy_dir(lab_dir) / "tinyproxy.pid").unlink(missing_ok=True)
