"""The one list of privileges: SETUP.md is generated from it, per release and per feature."""

from __future__ import annotations

from pathlib import Path

import pytest

from ailab_deploy.core import privileges as catalogue
from ailab_deploy.core.loader import load_plan

ROOT = Path(__file__).resolve().parents[3]


def test_setup_md_holds_the_generated_commands() -> None:
    text = (ROOT / "SETUP.md").read_text()
    start = text.index(catalogue.SETUP_BEGIN)
    end = text.index(catalogue.SETUP_END) + len(catalogue.SETUP_END)
    assert text[start:end] == catalogue.setup_markdown(), (
        "SETUP.md's privilege section drifted from ailab_deploy/core/privileges.py; "
        "replace it with the output of `ailab-deploy privileges --markdown`"
    )
    for release in catalogue.RELEASES:
        one_node = catalogue.privileges(release, catalogue.ONE_NODE_FEATURES)
        assert f'pveum role add AilabDeploy --privs "{" ".join(one_node)}"' in text
    # a cluster's and HA's extra privileges are granted only by those who use them
    assert '--privs "VM.Migrate"' in text and '--privs "Sys.Console"' in text
    assert "Sys.Console" not in catalogue.privileges("9.1", catalogue.ONE_NODE_FEATURES)


def test_releases_differ_only_in_the_guest_agent_privilege() -> None:
    nine, eight = catalogue.privileges("9.1"), catalogue.privileges("8.4")
    assert set(nine) ^ set(eight) == {"VM.GuestAgent.Audit", "VM.Monitor"}
    assert "VM.Monitor" not in nine  # PVE 9 removed it
    with pytest.raises(ValueError, match=r"'7\.4' is not one of 9\.1, 8\.4"):
        catalogue.privileges("7.4")
    with pytest.raises(ValueError, match="unknown feature"):
        catalogue.privileges("9.1", ["pools"])


def test_features_of_a_plan_pick_their_privileges() -> None:
    plan = load_plan(ROOT / "tests" / "plans" / "valid-minimal.yaml").plan
    features = catalogue.plan_features(plan)
    assert features[0] == "core" and features[-1] == "snapshots"
    core = catalogue.privileges("9.1", ["core"])
    assert "Sys.Modify" not in core and "Datastore.AllocateTemplate" not in core
    # download-url takes Sys.AccessNetwork, unless the backup job's Sys.Audit + Sys.Modify are there
    assert "Sys.AccessNetwork" in catalogue.privileges("9.1", ["core", "template"])
    assert "Sys.AccessNetwork" not in catalogue.privileges("9.1", ["core", "template", "vzdump"])
    no_backup = plan.model_copy(
        update={
            "proxmox": plan.proxmox.model_copy(
                update={"vzdump": plan.proxmox.vzdump.model_copy(update={"enabled": False})}
            )
        }
    )
    assert "vzdump" not in catalogue.plan_features(no_backup)


def test_a_refusal_becomes_one_line_with_the_privilege_path_and_fix() -> None:
    named = catalogue.denied_hint(
        "PUT", "nodes/pve/qemu/100/config", "Permission check failed (/vms/100, VM.Config.Memory)\n"
    )
    assert named == (
        "PUT /nodes/pve/qemu/100/config: permission denied: VM.Config.Memory on /vms/100 is missing; "
        "grant it with `pveum role modify AilabDeploy --append 1 --privs VM.Config.Memory` "
        "(PVE: Permission check failed (/vms/100, VM.Config.Memory))"
    )
    either = catalogue.denied_hint(
        "GET",
        "nodes/pve/qemu/100/agent/network-get-interfaces",
        "Permission check failed (/vms/100, VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted)",
    )
    assert (
        "VM.GuestAgent.Audit (one of VM.GuestAgent.Audit, VM.GuestAgent.Unrestricted) on /vms/100" in either
    )
    bare = catalogue.denied_hint(
        "POST", "nodes/pve/qemu/9000/clone", "Permission check failed", {"newid": 101}
    )
    assert "permission denied: VM.Allocate on /vms/101 is missing" in bare
    download = catalogue.denied_hint(
        "POST", "nodes/pve/storage/local/download-url", "Permission check failed"
    )
    assert "Sys.AccessNetwork on /nodes/pve (or Sys.Audit and Sys.Modify on /)" in download
