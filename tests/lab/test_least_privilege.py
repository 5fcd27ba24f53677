"""The deploy token with exactly the listed privileges runs the whole life cycle; without any
one of them, a named command fails with PVE's refusal turned into one line with the fix."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer import ResourceException

from ailab_deploy.adapters.proxmox import PermissionDenied
from ailab_deploy.core import privileges as catalogue
from ailab_deploy.core.loader import load_plan
from ailab_deploy.errors import AilabError
from ailab_deploy.lab.deploy_token import ensure_deploy_token
from ailab_deploy.pipeline.provision import ApplyFailed
from tests.lab.conftest import ailab_cli, free_port, housekeeping_client
from tests.lab.lifecycle import (
    CLUSTER_FEATURES,
    cluster_life_cycle,
    cluster_settings,
    lab_settings,
    life_cycle,
)
from tests.lab.provision_fixtures import emulator_client

pytestmark = pytest.mark.lab
ONE_NODE = list(catalogue.ONE_NODE_FEATURES)  # this life cycle runs on one node, without HA

# For each privilege: the first command of the life cycle that fails without it, and what its
# one-line error says (PVE's path; where PVE's refusal names nothing, what the list knows).
FIRST_FAILURE = {
    "VM.Audit": ("apply", "VM.Audit on /vms/10"),  # invisible VMs: the first read of a new clone
    "VM.Allocate": ("apply", "VM.Allocate on /vms/9000"),  # the template is created
    "VM.Clone": ("apply", "VM.Clone on /vms/9000"),
    "VM.Config.CPU": ("apply", "VM.Config.CPU on /vms/9000"),  # the template gets cores and CPU type
    "VM.Config.Memory": ("apply", "VM.Config.Memory on /vms/9000"),  # and its memory
    "VM.Config.Disk": ("apply", "VM.Config.Disk on /vms/9000"),  # the template's boot order
    "VM.Config.Network": ("apply", "VM.Config.Network on /vms/9000"),  # the template's NIC
    "VM.Config.Options": ("apply", "VM.Config.Options on /vms/9000"),  # the template's name
    "VM.PowerMgmt": ("apply", "VM.PowerMgmt on /vms/10"),
    "VM.GuestAgent.Audit": (
        "apply",
        "VM.GuestAgent.Audit (one of VM.GuestAgent.Audit, VM.GuestAgent.Unrestricted) on /vms/10",
    ),
    "VM.Monitor": ("apply", "VM.Monitor on /vms/10"),
    "Datastore.AllocateSpace": ("apply", "Datastore.AllocateSpace on /storage/local"),  # not listed
    "SDN.Use": ("apply", "SDN.Use on /sdn/zones/localnetwork/vmbr0"),
    "Datastore.AllocateTemplate": ("apply", "Datastore.AllocateTemplate on /storage/local"),
    "Sys.AccessNetwork": ("apply", "Sys.AccessNetwork on /nodes/pve"),
    "VM.Config.HWType": ("apply", "VM.Config.HWType on /vms/9000"),
    # download-url takes Sys.AccessNetwork on the node, or these two on /: the error names both ways
    "Sys.Audit": ("apply", "or Sys.Audit and Sys.Modify on /"),
    "Sys.Modify": ("apply", "or Sys.Audit and Sys.Modify on /"),
    "Datastore.Allocate": ("apply", "Datastore.Allocate on /storage/"),
    "VM.Snapshot": ("apply --snapshot (memory change)", "VM.Snapshot on /vms/100"),
    "VM.Backup": ("backups --run", "VM.Backup on /vms/100"),
}


def deploy_token(
    lab: Any, release: str, tmp_path: Path, without: tuple[str, ...] = (), features: list[str] | None = None
) -> tuple[str, str]:
    root = emulator_client(lab, ca_file=Path(lab.ca_path))  # the lab's housekeeping token
    secret_file = tmp_path / "deploy-token"
    tokenid = ensure_deploy_token(root, release, features, secret_file, without=without)
    return tokenid, secret_file.read_text().strip()


def _denied(error: BaseException) -> str:
    """The one-line refusal, from a raised PermissionDenied or inside an apply report."""
    if isinstance(error, AilabError) and not isinstance(error, (ApplyFailed, PermissionDenied)):
        return str(error)  # a check of the product's own that names the privilege
    if isinstance(error, ApplyFailed):
        lines = [line for line in str(error).splitlines() if "permission denied:" in line]
        assert len(lines) == 1, str(error)  # one line however many VMs met it
        return lines[0]
    assert isinstance(error, PermissionDenied), repr(error)
    return str(error)


@pytest.mark.parametrize("release", catalogue.RELEASES)
def test_the_listed_privileges_run_the_whole_life_cycle(
    make_emulator: Any, tmp_path: Path, release: str
) -> None:
    lab = make_emulator(version=release, **lab_settings(tmp_path))
    token = deploy_token(lab, release, tmp_path, features=ONE_NODE)
    assert token[0] == "ailab@pve!deploy"
    # the role on / propagates: the token holds exactly the list on every path, here a VM's
    held = lab.api().access.permissions.get(userid=token[0], path="/vms/100")["/vms/100"]
    assert set(held) == set(catalogue.privileges(release, ONE_NODE))
    for _command, run in life_cycle(lab, tmp_path, token=token):
        run()
    assert {int(r["vmid"]) for r in lab.api().cluster.resources.get(type="vm")} == {9000}


WITHOUT_BACKUP_JOB = ["core", "template", "snapshots"]
CASES = [
    (release, ONE_NODE, p) for release in catalogue.RELEASES for p in catalogue.privileges(release, ONE_NODE)
] + [
    # without the backup job's Sys.Audit and Sys.Modify on /, download-url needs Sys.AccessNetwork
    (release, WITHOUT_BACKUP_JOB, "Sys.AccessNetwork")
    for release in catalogue.RELEASES
]


@pytest.mark.parametrize(
    ("release", "features", "privilege"),
    CASES,
    ids=[f"{r}-{'one-node' if f == ONE_NODE else 'some'}-{p}" for r, f, p in CASES],
)
def test_each_listed_privilege_is_needed(
    make_emulator: Any, tmp_path: Path, release: str, features: list[str] | None, privilege: str
) -> None:
    assert privilege in catalogue.privileges(release, features)
    lab = make_emulator(version=release, **lab_settings(tmp_path))
    token = deploy_token(lab, release, tmp_path, without=(privilege,), features=features)
    failed: tuple[str, str] | None = None
    for command, run in life_cycle(lab, tmp_path, token=token, vzdump=features == ONE_NODE):
        try:
            run()
        except Exception as error:  # the first failing command, whatever it raised
            failed = (command, _denied(error))
            break
    assert failed is not None, f"the whole life cycle passed without {privilege}"
    command, line = failed
    expected_command, says = FIRST_FAILURE[privilege]
    assert command == expected_command, line
    assert says in line, line
    assert "`pveum role modify AilabDeploy --append 1 --privs " in line, line  # and how to grant it
    assert "\n" not in line


# A cluster's and HA's own privileges: the command of the cluster life cycle that fails without
# each, and what its one line says.
CLUSTER_FIRST_FAILURE = {
    "VM.Migrate": ("apply (node changed)", "VM.Migrate on /vms/102"),
    "Sys.Audit": ("apply", "Sys.Audit on /"),  # reading the HA config
    "Sys.Console": ("apply", "Sys.Console on /"),  # changing it
}


def _first_failure(steps: list[tuple[str, Any]]) -> tuple[str, str] | None:
    for command, run in steps:
        try:
            run()
        except Exception as error:  # the first failing command, whatever it raised
            return command, _denied(error)
    return None


@pytest.mark.parametrize("release", catalogue.RELEASES)
def test_the_listed_privileges_run_the_cluster_life_cycle(
    make_emulator: Any, tmp_path: Path, release: str
) -> None:
    lab = make_emulator(version=release, **cluster_settings())
    token = deploy_token(lab, release, tmp_path, features=CLUSTER_FEATURES)
    held = lab.api().access.permissions.get(userid=token[0], path="/")["/"]
    assert set(held) == set(catalogue.privileges(release, CLUSTER_FEATURES))
    assert {"VM.Migrate", "Sys.Console", "Sys.Audit"} <= set(held)
    where: dict[str, dict[int, str]] = {}
    for command, run in cluster_life_cycle(lab, tmp_path, token=token):
        run()
        found = lab.api().cluster.resources.get(type="vm")
        where[command] = {int(r["vmid"]): str(r["node"]) for r in found}
    assert where["apply"] == {9000: "pve1", 100: "pve1", 102: "pve2"}
    assert where["apply (node changed)"] == {9000: "pve1", 100: "pve1", 102: "pve3"}  # migrated
    assert where["destroy"] == {9000: "pve1"}
    assert lab.api().cluster.ha.resources.get() == []


CLUSTER_CASES = [(release, p) for release in catalogue.RELEASES for p in CLUSTER_FIRST_FAILURE]


@pytest.mark.parametrize(("release", "privilege"), CLUSTER_CASES, ids=[f"{r}-{p}" for r, p in CLUSTER_CASES])
def test_each_cluster_privilege_is_needed(
    make_emulator: Any, tmp_path: Path, release: str, privilege: str
) -> None:
    assert privilege in catalogue.privileges(release, CLUSTER_FEATURES)
    lab = make_emulator(version=release, **cluster_settings())
    token = deploy_token(lab, release, tmp_path, without=(privilege,), features=CLUSTER_FEATURES)
    failed = _first_failure(cluster_life_cycle(lab, tmp_path, token=token))
    assert failed is not None, f"the cluster life cycle passed without {privilege}"
    command, line = failed
    expected_command, says = CLUSTER_FIRST_FAILURE[privilege]
    assert command == expected_command, line
    assert says in line, line
    assert f"`pveum role modify AilabDeploy --append 1 --privs {privilege}`" in line, line
    assert "\n" not in line


def test_lab_up_deploys_with_the_least_privilege_token(tmp_path: Path) -> None:
    """`lab up` makes the role, user and token; the lab plan deploys with it; a privilege taken
    away stops apply with one line and exit 1, and the same apply resumes once it is back."""
    lab_dir = tmp_path / "lab"
    env = {**os.environ, "AILAB_LAB_DIR": str(lab_dir)}
    env.pop("AILAB_LAB_TOKEN_SECRET", None)
    try:
        info = json.loads(
            ailab_cli(
                "lab",
                "up",
                "--api-only",
                "--pve-version",
                "8.4",
                "--port",
                str(free_port()),
                "--json",
                env=env,
            ).stdout
        )
        plan = yaml.safe_load(Path(info["lab_plan"]).read_text())
        assert plan["proxmox"]["token_id"] == "ailab@pve!deploy" == info["deploy_token_id"]
        secret = Path(plan["proxmox"]["token_secret_file"])
        assert secret == Path(info["deploy_token_secret_path"])
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        root = housekeeping_client(info)
        features = catalogue.plan_features(load_plan(Path(info["lab_plan"])).plan)
        wanted = set(catalogue.privileges("8.4", features))
        held = root.call("GET", "access/permissions", {"userid": "ailab@pve!deploy", "path": "/"})["/"]
        assert set(held) == wanted and "VM.Monitor" in wanted  # 8.4's guest-agent privilege
        tokens = root.get("access/users/ailab@pve/token")
        assert [(t["tokenid"], t["privsep"]) for t in tokens] == [("deploy", 1)]

        root.call(
            "PUT", "access/roles/AilabDeploy", {"privs": ",".join(sorted(wanted - {"VM.Config.Options"}))}
        )
        refused = ailab_cli("apply", "--plan", info["lab_plan"], "--no-wait-ssh", check=False, env=env)
        assert refused.returncode == 1, refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        denied = [line for line in errors if "permission denied" in line]  # once, though 3 VMs met it
        assert len(denied) == 1, refused.stderr
        assert "VM.Config.Options on /vms/" in denied[0]
        assert "`pveum role modify AilabDeploy --append 1 --privs VM.Config.Options`" in denied[0]

        root.call("PUT", "access/roles/AilabDeploy", {"privs": ",".join(sorted(wanted))})
        resumed = ailab_cli("apply", "--plan", info["lab_plan"], "--no-wait-ssh", env=env)
        assert "permission denied" not in resumed.stderr
        again = json.loads(ailab_cli("plan", "--plan", info["lab_plan"], "--json", env=env).stdout)
        assert set(again["counts"]) == {"no-op"}
        ailab_cli("destroy", "--plan", info["lab_plan"], "--yes", env=env)  # with the same token
        assert list(root.cluster_vms()) == [9000]
    finally:
        ailab_cli("lab", "down", "--purge", env=env, check=False)


# The role SETUP.md documented before the list above existed.
PREVIOUS_SETUP_ROLE = [
    "VM.Allocate",
    "VM.Clone",
    "VM.Audit",
    "VM.PowerMgmt",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Disk",
    "VM.Config.Network",
    "VM.Config.Cloudinit",
    "VM.Config.Options",
    "VM.Config.HWType",
    "VM.Monitor",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
    "VM.Backup",
    "Datastore.Audit",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Sys.Audit",
    "SDN.Use",
]


def test_the_previous_setup_role_cannot_be_made_on_pve_9(emulator: Any) -> None:
    with pytest.raises(ResourceException) as refused:
        emulator.api().access.roles.post(roleid="AilabDeploy", privs=",".join(PREVIOUS_SETUP_ROLE))
    assert refused.value.status_code == 400
    assert refused.value.errors == {"privs": "invalid format - invalid privilege name 'VM.Monitor'\n"}


@pytest.mark.parametrize("release", catalogue.RELEASES)
def test_what_the_previous_setup_role_lacked(make_emulator: Any, tmp_path: Path, release: str) -> None:
    """With the template in place (no download), the old role, made valid for the release, stops
    apply at the backup job: Sys.Modify on /, then Datastore.Allocate on the job's storage."""
    lab = make_emulator(version=release)
    agent = "VM.Monitor" if release == "8.4" else "VM.GuestAgent.Audit"  # what 9.x has instead
    old = [agent if p == "VM.Monitor" else p for p in PREVIOUS_SETUP_ROLE]
    root = emulator_client(lab, ca_file=Path(lab.ca_path))
    tokenid = ensure_deploy_token(root, release, ["core"], tmp_path / "deploy-token")
    root.call("PUT", "access/roles/AilabDeploy", {"privs": ",".join(old)})
    token = (tokenid, (tmp_path / "deploy-token").read_text().strip())
    steps = dict(life_cycle(lab, tmp_path, token=token))
    missing = []
    for _ in range(3):
        try:
            steps["apply"]()
            break
        except AilabError as error:
            line = str(error).splitlines()[0]
            privilege = line.split("permission denied: ", 1)[1].split()[0]
            missing.append((line.split(":", 1)[0], privilege, line.split(" on ", 1)[1].split()[0]))
            root.call("PUT", "access/roles/AilabDeploy", {"privs": privilege, "append": 1})
    assert missing == [
        ("POST /cluster/backup", "Sys.Modify", "/"),
        ("POST /cluster/backup", "Datastore.Allocate", "/storage/HDDStorage"),  # first backup storage
    ]
