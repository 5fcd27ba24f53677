"""The secret scan on a lab directory laid out on disk (stopped machines: their rootfs is read)."""

from __future__ import annotations

import base64
import gzip
import os
from pathlib import Path

import pytest

from ailab_deploy.adapters.secrets import SecretStore
from ailab_deploy.lab.secret_scan import Secret, held_secrets, scan_lab

PASSWORD = "pw-0123456789abcdefghijklmnopqrstu"
LLM_KEY = "key-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123"
TOKEN = "token-zyxwvutsrqponmlkjihgfedcba987"


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    lab_dir = tmp_path / "lab"
    _write(lab_dir / "secrets" / "api-token", (TOKEN + "\n").encode(), 0o600)
    store = SecretStore(lab_dir / ".ailab")
    store.put("postgresql-ailab.password", PASSWORD)
    store.put("llm-api.key", LLM_KEY)
    rootfs = lab_dir / "machines" / "101" / "rootfs"
    _write(rootfs / "etc" / "passwd", f"root:x:{os.getuid()}:0::/root:/bin/sh\n".encode())
    return lab_dir


def test_held_secrets_are_the_token_and_the_store(lab: Path) -> None:
    secrets = {secret.label: secret.value for secret in held_secrets(lab)}
    assert secrets == {"api-token": TOKEN, "database-password:ailab": PASSWORD, "llm-api-key": LLM_KEY}


def test_allowed_places_pass_and_everything_else_is_named(lab: Path) -> None:
    rootfs = lab / "machines" / "101" / "rootfs"
    _write(rootfs / "etc" / "ailab" / "lab_api.env", f"DATABASE_URL=x://a:{PASSWORD}@h\n".encode(), 0o600)
    _write(rootfs / "etc" / "ailab" / "lab_status.env", f"AILAB_LLM_API_KEY={LLM_KEY}\n".encode(), 0o644)
    journal = rootfs / "var" / "log" / "journal" / "x" / "user-1000.journal"
    _write(journal, b"\0\0COMMAND=" + PASSWORD.encode())
    _write(rootfs / "var" / "log" / "syslog.2.gz", gzip.compress(f"sudo: {LLM_KEY}".encode()))
    _write(rootfs / "tmp" / "b64", b"x" + base64.b64encode(b"ab" + TOKEN.encode() + b"cd"))
    _write(rootfs / "usr" / "share" / "doc" / "clean", b"nothing secret here" * 1000)
    artifact = lab / ".ailab" / "runner" / "artifacts" / "run-1" / "stdout"
    _write(artifact, f"ok {PASSWORD}\n".encode())

    result = scan_lab(lab, held_secrets(lab))
    violations = {(hit.where, hit.path, hit.label) for hit in result.violations}
    assert violations == {
        ("vm 101", "/etc/ailab/lab_status.env", "llm-api-key"),  # mode 0644
        ("vm 101", "/var/log/journal/x/user-1000.journal", "database-password:ailab"),
        ("vm 101", "/var/log/syslog.2.gz", "llm-api-key"),
        ("vm 101", "/tmp/b64", "api-token"),
        ("controller", str(artifact), "database-password:ailab"),
    }
    mode_problem = next(hit for hit in result.violations if hit.path.endswith("lab_status.env"))
    assert "0o600" in mode_problem.problem
    allowed = {(hit.where, hit.path) for hit in result.hits if not hit.problem}
    assert ("vm 101", "/etc/ailab/lab_api.env") in allowed
    assert ("controller", str(lab / "secrets" / "api-token")) in allowed
    assert ("controller", str(lab / ".ailab" / "secrets" / "llm-api.key")) in allowed
    vm = result.coverage["vm 101"]
    assert vm.files == 7 and vm.bytes >= len(b"nothing secret here") * 1000
    # Not a journal journalctl can read: its raw bytes were searched, and the decoding is reported.
    assert [line.split(" (")[0] for line in vm.unreadable] == ["/var/log/journal/x/user-1000.journal"]


def test_a_secret_of_another_kind_in_an_allowed_place_is_a_violation(lab: Path) -> None:
    rootfs = lab / "machines" / "101" / "rootfs"
    _write(rootfs / "etc" / "ailab-llm" / "api-key", PASSWORD.encode(), 0o600)
    result = scan_lab(lab, [Secret("database-password:ailab", PASSWORD)])
    (hit,) = result.violations
    assert hit.path == "/etc/ailab-llm/api-key" and "not for a database-password" in hit.problem


def test_a_stopped_machine_is_read_from_its_writable_layer_and_an_empty_one_skipped(lab: Path) -> None:
    machines = lab / "machines"
    _write(machines / "102" / "upper" / "var" / "log" / "auth.log", f"sudo: {PASSWORD}".encode())
    (machines / "9000").mkdir()
    result = scan_lab(lab, [Secret("database-password:ailab", PASSWORD)])
    assert [(hit.where, hit.path) for hit in result.violations] == [("vm 102", "/var/log/auth.log")]
    assert set(result.coverage) == {"vm 101", "vm 102", "controller"}


def test_a_match_split_across_read_chunks_is_found(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ailab_deploy.lab.secret_scan._CHUNK", 16)
    rootfs = lab / "machines" / "101" / "rootfs"
    _write(rootfs / "root" / ".bash_history", b"a" * 13 + PASSWORD.encode() + b"b" * 40)
    result = scan_lab(lab, [Secret("database-password:ailab", PASSWORD)])
    assert [hit.path for hit in result.violations] == ["/root/.bash_history"]
