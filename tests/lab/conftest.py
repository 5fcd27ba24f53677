"""Fixtures for tests against the Proxmox API emulator (``pytest --lab``).

``emulator`` gives a fresh in-process emulator per test: HTTPS on a random free
loopback port, its own temporary lab directory, the null VM backend, no 3 s
delay on authentication failures and 0.05 s tasks. ``make_emulator(**settings)``
starts one with other settings.json values (e.g. ``task_seconds=1``, ``faults=[...]``).

    def test_x(emulator):
        api = emulator.api()               # proxmoxer, API token (emulator.api("ticket"): password)
        upid = api.nodes(emulator.node).qemu(9000).clone.post(newid=101)
        assert emulator.wait(upid)["exitstatus"] == "OK"
        emulator.add_fault(kind="http_500", path="^/cluster/resources$", count=1)
        emulator.restart()                 # same lab directory and port, state reloaded

The lab's template VM 9000 (``debian-13-cloud``) is present in every new lab.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.lab.emulator import Emulator, RunningEmulator, load_settings

TOKEN_NAME = "test"
TOKEN_ID = f"root@pam!{TOKEN_NAME}"
TOKEN_SECRET = "4f1c1a9e-lab-test-token"
PASSWORD = "lab-root-password"
TEMPLATE_VMID = 9000
# One new connection when a TLS handshake fails before any request is sent: CI once saw a
# handshake read foreign bytes ("wrong version number"), possibly from paramiko, which shares
# this process with the emulator and can close a socket under its own reader thread (#520).
# A reply cut short is a read error, and read errors are never retried.
HANDSHAKE_RETRY = Retry(total=1, connect=1, read=0, status=0, redirect=0, other=1)


def ailab_cli(
    *args: str, timeout: float = 900, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``ailab-deploy ARGS`` as a user would; never a traceback, and the exit status checked."""
    result = subprocess.run(
        [sys.executable, "-m", "ailab_deploy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if check and result.returncode != 0:
        raise AssertionError(
            f"ailab-deploy {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def housekeeping_client(info: dict[str, Any]) -> ProxmoxClient:
    """The project's client with the lab's root@pam token, from `lab up/status --json`."""
    return ProxmoxClient(
        host=info["host"],
        port=info["port"],
        node=info["node"],
        token_id=info["token_id"],
        secret=Path(info["token_secret_path"]).read_text().strip(),
        fingerprint=info["fingerprint"],
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lab:
    """A running emulator and everything a client needs to talk to it."""

    def __init__(self, lab_dir: Path, settings: dict[str, Any]) -> None:
        self.lab_dir = lab_dir
        self.host = "127.0.0.1"
        self.port = free_port()
        # the node the API is asked on: a cluster's first node unless settings name one
        self.node = settings.get("node") or next(iter(settings.get("nodes") or []), "pve")
        self.user = "root@pam"
        self.password = PASSWORD
        self.token_id = TOKEN_ID
        self.token_name = TOKEN_NAME
        self.token_secret = TOKEN_SECRET
        base = {
            "users": [{"userid": self.user, "password": PASSWORD}],
            "tokens": [{"tokenid": TOKEN_ID, "secret": TOKEN_SECRET}],
            "auth_failure_delay": 0,
            "task_seconds": 0.05,
        }
        lab_dir.mkdir(parents=True, exist_ok=True)
        (lab_dir / "settings.json").write_text(json.dumps({**base, **settings}))
        self.running: RunningEmulator | None = None
        self.start()

    def start(self) -> None:
        settings = load_settings(self.lab_dir)
        self.running = RunningEmulator(Emulator(settings), self.host, self.port).start()

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def emulator(self) -> Emulator:
        assert self.running is not None
        return self.running.emulator

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/api2/json"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_path(self) -> str:
        return str(self.lab_dir / "tls" / "pve-ssl.pem")

    @property
    def fingerprint(self) -> str:
        return self.emulator.fingerprint

    def api(self, auth: str = "token", **kwargs: Any) -> ProxmoxAPI:
        if auth == "ticket":
            credentials = {"password": self.password}
        else:
            credentials = {"token_name": self.token_name, "token_value": self.token_secret}
        api = ProxmoxAPI(
            self.host,
            port=self.port,
            user=self.user,
            verify_ssl=self.ca_path,
            **credentials,
            **kwargs,
        )
        api._store["session"].mount("https://", HTTPAdapter(max_retries=HANDSHAKE_RETRY))
        return api

    def token_header(self) -> dict[str, str]:
        return {"Authorization": f"PVEAPIToken={self.token_id}={self.token_secret}"}

    def http(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A raw request below /api2/json with the token (pass headers={} to go without)."""
        headers = kwargs.pop("headers", self.token_header())
        return requests.request(
            method, self.url + path, headers=headers, verify=self.ca_path, timeout=10, **kwargs
        )

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = requests.request(
            method,
            f"{self.base_url}/_lab{path}",
            headers=self.token_header(),
            json=body,
            verify=self.ca_path,
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json()["data"]

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        return dict(self.admin("POST", "/faults", rule))

    def clear_faults(self) -> None:
        self.admin("DELETE", "/faults")

    def wait(self, upid: str, timeout: float = 15.0, api: ProxmoxAPI | None = None) -> dict[str, Any]:
        status = Tasks.blocking_status(api or self.api(), upid, timeout=timeout, polling_interval=0.02)
        assert status is not None, f"task {upid} did not finish in {timeout}s"
        return dict(status)


@pytest.fixture
def make_emulator(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(**settings: Any) -> Lab:
        lab = Lab(tmp_path / f"lab{len(labs)}", settings)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.stop()
    for lab in labs:
        shutil.rmtree(lab.lab_dir, ignore_errors=True)


@pytest.fixture
def emulator(make_emulator: Callable[..., Lab]) -> Lab:
    return make_emulator()
