"""Every Molecule scenario against lab VMs, idempotence included, on labs of the module's own.

Every scenario runs on Debian 13 (the default release); `common` and `postgresql`, where the
releases differ most (packages, PostgreSQL 17 vs 15), run on Debian 12 as well, which keeps
CI's time (one more template image, no second llama.cpp build).

`lab up` once per release; `lab vm create/destroy` (Molecule's create and destroy) make one
scratch VM per scenario; `lab down` at the end must leave nothing behind. The llm scenario
builds llama.cpp (5 to 10 min on 2 cores) into /var/cache/ailab-deploy/llamacpp, so it runs
before python_app, which then unpacks the cached build.

Run as root: ``pytest --lab tests/lab/test_molecule.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from ailab_deploy.lab.containers import leftovers
from ailab_deploy.lab.scratch_vms import read_registry

from .conftest import ailab_cli, free_port

pytestmark = [pytest.mark.vm, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
# In test order: llm fills the llama.cpp build cache that python_app then uses.
SCENARIOS = ["common", "postgresql", "backup", "llm", "python_app", "llm_ollama_standin"]
ALSO_ON_DEBIAN_12 = ["common", "postgresql"]
RUNS = [(13, scenario) for scenario in SCENARIOS] + [(12, scenario) for scenario in ALSO_ON_DEBIAN_12]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _env(lab_dir: Path) -> dict[str, str]:
    # Molecule's create/destroy playbooks call `ailab-deploy` by name: this interpreter's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "AILAB_LAB_DIR": str(lab_dir)}


def cli(
    lab_dir: Path, *args: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return ailab_cli(*args, check=check, timeout=timeout, env=_env(lab_dir))


@pytest.fixture(scope="module")
def lab_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lab serving the Debian release of the test's parameter (one lab at a time: one bridge)."""
    release = str(request.param)
    directory = tmp_path_factory.mktemp(f"molecule-debian{release}") / "lab"
    try:
        up = ["lab", "up", "--lab-dir", str(directory), "--port", str(free_port()), "--json"]
        status = json.loads(cli(directory, *up, "--debian-release", release).stdout)
        assert status["running"] and status["backend"] == "containers"
        assert status["debian_release"] == int(release)
        yield directory
    finally:
        cli(directory, "lab", "down", "--purge", "--lab-dir", str(directory), check=False)
    assert leftovers(directory) == []


@pytest.mark.parametrize("lab_dir", [13], indirect=True, ids=["debian13"])
def test_lab_vm_create_is_idempotent_reachable_and_destroyed(lab_dir: Path, tmp_path: Path) -> None:
    created = json.loads(cli(lab_dir, "lab", "vm", "create", "--name", "scratch-check", "--json").stdout)
    assert set(created) == {"name", "address", "user", "port", "identity_file", "host_key"}
    again = json.loads(cli(lab_dir, "lab", "vm", "create", "--name", "scratch-check", "--json").stdout)
    assert again == created  # the same VM, address and host key
    other = json.loads(cli(lab_dir, "lab", "vm", "create", "--name", "scratch-other", "--json").stdout)
    assert other["address"] != created["address"]
    try:
        known_hosts = tmp_path / "known_hosts"  # what Molecule's create.yml pins
        known_hosts.write_text(f"{created['address']} {created['host_key']}\n")
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())  # host key checking stays on
        client.connect(
            created["address"],
            port=created["port"],
            username=created["user"],
            key_filename=created["identity_file"],
            allow_agent=False,
            look_for_keys=False,
            timeout=20,
        )
        _, stdout, _ = client.exec_command("sudo -n true && cat /etc/debian_version && hostname", timeout=60)
        version, hostname = stdout.read().decode().split()
        client.close()
        assert version.split(".")[0] == "13" and hostname == "scratch-check"
    finally:
        cli(lab_dir, "lab", "vm", "destroy", "--name", "scratch-check")
        cli(lab_dir, "lab", "vm", "destroy", "--name", "scratch-other")
    gone = cli(lab_dir, "lab", "vm", "destroy", "--name", "scratch-check", check=False)
    assert gone.returncode == 2
    assert gone.stderr.strip() == "no lab VM is named 'scratch-check' (lab VMs: none)"
    assert read_registry(lab_dir) == {}


def molecule(lab_dir: Path, command: str, scenario: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["molecule", command, "-s", scenario],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(lab_dir),
    )


@pytest.mark.parametrize(
    ("lab_dir", "scenario"), RUNS, indirect=["lab_dir"], ids=[f"debian{r}-{s}" for r, s in RUNS]
)
def test_molecule_scenario(lab_dir: Path, scenario: str) -> None:
    # An interrupted earlier run leaves Molecule's state saying "created" for a VM that a new
    # lab does not have; Molecule would then skip create and converge nothing reachable.
    reset = molecule(lab_dir, "reset", scenario, timeout=120)
    assert reset.returncode == 0, reset.stderr[-2000:]
    result = molecule(lab_dir, "test", scenario, timeout=3600)
    output = ANSI.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, output[-6000:]
    # Molecule fails the idempotence step when the second converge changes anything; here it
    # must also have run, against the scenario's host (a platform in no group is in no play).
    for step in ("converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"{scenario}\s+\S+\s+{step}: Executed: Successful", output), output[-6000:]
    assert "no hosts matched" not in output, output[-6000:]
    assert read_registry(lab_dir) == {}  # destroy removed the scenario's VM
