"""The Proxmox client without a Proxmox: token secret, TLS pinning, retries, masking, wire format.

A tiny HTTPS server on 127.0.0.1 with a throw-away self-signed certificate stands in
for PVE, so TLS and the bytes on the wire are real.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import logging
import os
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ailab_deploy.adapters.proxmox import (
    ProxmoxApiError,
    ProxmoxClient,
    TaskFailed,
    TaskTimeout,
    _form,
    normalise_fingerprint,
    token_secret,
)
from ailab_deploy.adapters.retry import Backoff
from ailab_deploy.core.desired import desired_vms
from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.errors import ConfigError, ProxmoxError

SECRET = "0b7e4f7e-1111-2222-3333-444455556666"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKXb5TstYyBC8ZY37UK5ewvvtSTlk7vgrNso1D+ZZdFh me"


class FakePve:
    """Scripted answers; records every request it gets."""

    def __init__(self, tmp_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve.test")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        self.fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        self.cert_path = tmp_path / "pve.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = tmp_path / "pve.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.answers: list[tuple[int, str, Any]] = []
        self.default: tuple[int, str, Any] = (200, "OK", None)
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length).decode(),
                    }
                )
                status, reason, data = fake.answers.pop(0) if fake.answers else fake.default
                body = json.dumps({"data": data}).encode()
                self.send_response(status, reason)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, key_path)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.sleeps: list[float] = []
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self, **kwargs: Any) -> ProxmoxClient:
        kwargs.setdefault("ca_file", self.cert_path)
        return ProxmoxClient(
            host="127.0.0.1",
            port=self.port,
            node="pve",
            token_id="ailab@pve!deploy",
            secret=SECRET,
            timeout=5,
            retry=Backoff(attempts=4, first_delay=0.01),
            sleep=self.sleeps.append,
            **kwargs,
        )


@pytest.fixture
def pve(tmp_path: Path) -> Iterator[FakePve]:
    fake = FakePve(tmp_path)
    yield fake
    fake.server.shutdown()


# ---- token secret


def _plan(repo_root: Path, tmp_path: Path, extra: str) -> Any:
    text = (repo_root / "tests/plans/valid-minimal.yaml").read_text()
    text = text.replace("  token_id: ailab@pve!deploy\n", f"  token_id: ailab@pve!deploy\n{extra}")
    return load_plan_text(text, "vms.yaml", tmp_path / "vms.yaml")


def test_token_secret_from_the_environment(repo_root: Path, tmp_path: Path) -> None:
    loaded = _plan(repo_root, tmp_path, "  token_secret_env: MY_SECRET\n")
    assert token_secret(loaded, {"MY_SECRET": "s3cret\n"}) == "s3cret"


def test_missing_token_secret_names_the_plan_line(repo_root: Path, tmp_path: Path) -> None:
    loaded = _plan(repo_root, tmp_path, "  token_secret_env: MY_SECRET\n")
    with pytest.raises(ConfigError) as error:
        token_secret(loaded, {})
    assert str(error.value).startswith(
        "vms.yaml:6: proxmox.token_secret_env: environment variable MY_SECRET is not set"
    )
    assert error.value.exit_code == 2


def test_token_secret_file_must_be_0600(repo_root: Path, tmp_path: Path) -> None:
    loaded = _plan(repo_root, tmp_path, "  token_secret_file: pve.secret\n")
    secret_file = tmp_path / "pve.secret"  # relative to the plan file
    secret_file.write_text(SECRET + "\n")
    os.chmod(secret_file, 0o644)
    with pytest.raises(
        ConfigError, match=r"vms.yaml:6: proxmox.token_secret_file: .* has mode 0644; it must be 0600"
    ):
        token_secret(loaded, {})
    os.chmod(secret_file, 0o600)
    assert token_secret(loaded, {}) == SECRET


# ---- small pieces


def test_form_values_booleans_as_0_1_and_none_dropped() -> None:
    assert _form({"full": True, "start": False, "name": "a", "pool": None}) == {
        "full": 1,
        "start": 0,
        "name": "a",
    }


@pytest.mark.parametrize(
    ("status", "reason", "transient", "lock_timeout"),
    [
        (500, "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout", True, True),
        (500, "internal error (lab fault)", True, False),
        (500, "VM is locked (backup)", True, False),
        (503, "Service Unavailable", True, False),
        (500, "unable to create VM 101: config file already exists", False, False),
        (500, "shrinking disks is not supported", False, False),
        (400, "Parameter verification failed.", False, False),
        (403, "Permission check failed (/vms/100, VM.Audit)", False, False),
    ],
)
def test_error_classification(status: int, reason: str, transient: bool, lock_timeout: bool) -> None:
    error = ProxmoxApiError("POST", "x", status, reason)
    assert (error.transient, error.lock_timeout) == (transient, lock_timeout)


def test_fingerprint_format_is_checked() -> None:
    assert normalise_fingerprint(":".join(["Ab"] * 32)) == "ab" * 32
    with pytest.raises(ConfigError):
        normalise_fingerprint("AB:CD")


# ---- against the fake server


def test_pinned_fingerprint_replaces_ca_validation(pve: FakePve) -> None:
    pve.default = (200, "OK", [])
    pinned = pve.client(ca_file=None, fingerprint=pve.fingerprint)
    assert pinned.cluster_vms() == {}
    assert pve.requests[0]["headers"]["Authorization"] == f"PVEAPIToken=ailab@pve!deploy={SECRET}"


def test_wrong_fingerprint_fails_before_the_token_is_sent(pve: FakePve) -> None:
    wrong = pve.client(ca_file=None, fingerprint=":".join(["AB"] * 32))
    with pytest.raises(ProxmoxError, match="TLS check") as error:
        wrong.cluster_vms()
    assert SECRET not in str(error.value)
    assert pve.requests == []


def test_without_the_ca_a_self_signed_node_is_refused(pve: FakePve) -> None:
    with pytest.raises(ProxmoxError, match="TLS check"):
        pve.client(ca_file=None).cluster_vms()
    assert pve.requests == []


def test_transient_500s_are_retried_with_backoff(pve: FakePve) -> None:
    lock = "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
    pve.answers = [(500, lock, None), (500, lock, None), (200, "OK", "UPID:pve:1:2:3:qmclone:9000:x:")]
    client = pve.client()
    assert client.call("POST", "nodes/pve/qemu/9000/clone", {"newid": 101}).startswith("UPID:")
    assert len(pve.requests) == 3 and len(pve.sleeps) == 2 and pve.sleeps[1] > pve.sleeps[0]
    assert client.stats.writes == 3


def test_final_500s_are_not_retried(pve: FakePve) -> None:
    pve.answers = [(500, "unable to create VM 101: config file already exists", None)]
    with pytest.raises(ProxmoxApiError, match="already exists"):
        pve.client().call("POST", "nodes/pve/qemu/9000/clone", {"newid": 101})
    assert len(pve.requests) == 1 and pve.sleeps == []


def test_retries_are_bounded(pve: FakePve) -> None:
    pve.default = (500, "internal error", None)
    with pytest.raises(ProxmoxApiError, match="internal error"):
        pve.client().get("cluster/resources")
    assert len(pve.requests) == 4


def test_sshkeys_double_encoded_and_booleans_as_numbers_on_the_wire(repo_root: Path, pve: FakePve) -> None:
    loaded = load_plan_text((repo_root / "tests/plans/valid-minimal.yaml").read_text())
    sshkeys = desired_vms(loaded.plan, [KEY])[0].config["sshkeys"]
    pve.client().call("PUT", "nodes/pve/qemu/100/config", {"sshkeys": sshkeys, "onboot": True})
    body = pve.requests[0]["body"]
    assert "sshkeys=ssh-ed25519%2520AAAA" in body and "%252B" in body  # '+' -> %2B -> %252B
    assert "onboot=1" in body


def test_logs_mask_the_secret(pve: FakePve, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="ailab_deploy.adapters.proxmox"):
        pve.client().call("PUT", "nodes/pve/qemu/100/config", {"description": f"leak {SECRET}"})
    text = caplog.text
    assert "PUT /nodes/pve/qemu/100/config -> 200" in text
    assert SECRET not in text and "***" in text


def test_task_wait_is_bounded_and_reports_failures(pve: FakePve) -> None:
    upid = "UPID:pve:0003A1B2:01C2D3E4:6613A1B2:qmclone:9000:ailab@pve!deploy:"
    client = pve.client()
    pve.default = (200, "OK", {"status": "running"})
    with pytest.raises(TaskTimeout, match=r"clone was still running after 0.2 s"):
        client.wait_task(upid, "clone", timeout=0.2)
    pve.default = (200, "OK", {"status": "stopped", "exitstatus": "clone failed: disk on fire"})
    with pytest.raises(TaskFailed, match="clone failed: disk on fire"):
        client.wait_task(upid, "clone", timeout=5)
    pve.default = (200, "OK", {"status": "stopped", "exitstatus": "WARNINGS: 1"})
    client.wait_task(upid, "clone", timeout=5)


def test_vm_calls_go_to_the_node_that_holds_the_vm(pve: FakePve) -> None:
    client = pve.client()
    pve.answers = [
        (
            200,
            "OK",
            [
                {"type": "qemu", "vmid": 100, "name": "postgres", "node": "pve2", "status": "running"},
                {"type": "qemu", "vmid": 101, "name": "llm", "node": "pve3", "status": "running"},
                {"type": "node", "node": "pve1", "status": "online"},
            ],
        )
    ]
    vms = client.cluster_vms()
    assert {vmid: vm.node for vmid, vm in vms.items()} == {100: "pve2", 101: "pve3"}
    pve.default = (200, "OK", {"status": "running"})
    client.vm_status(100)
    client.vm_config(101)
    client.vm_status(555)  # not in the cluster's list: the home node answers for it
    paths = [request["path"] for request in pve.requests[1:]]
    assert paths == [
        "/api2/json/nodes/pve2/qemu/100/status/current",
        "/api2/json/nodes/pve3/qemu/101/config",
        "/api2/json/nodes/pve/qemu/555/status/current",
    ]


def test_a_task_is_polled_on_the_node_in_its_upid(pve: FakePve) -> None:
    client = pve.client()
    pve.default = (200, "OK", {"status": "stopped", "exitstatus": "OK"})
    client.wait_task("UPID:pve3:0003A1B2:01C2D3E4:6613A1B2:qmigrate:100:ailab@pve!deploy:", "migrate", 5)
    assert pve.requests[-1]["path"].startswith("/api2/json/nodes/pve3/tasks/UPID")
