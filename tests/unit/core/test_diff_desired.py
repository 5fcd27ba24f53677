"""Plan -> desired VM specs: exact PVE strings, sizing-derived LLM layout, per-VM spec hashes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from ailab_deploy.core.desired import DESCRIPTION_MARKER, carries_marker, desired_vms
from ailab_deploy.core.loader import LoadedPlan, load_plan
from ailab_deploy.core.plan import HighAvailability
from ailab_deploy.core.sizing import size_plan

KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKXb5TstYyBC8ZY37UK5ewvvtSTlk7vgrNso1D+ZZdFh one",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAb/cd+ef== two",
]


@pytest.fixture
def loaded(repo_root: Path) -> LoadedPlan:
    return load_plan(repo_root / "tests/plans/valid-minimal.yaml")


def test_llm_vm_gets_the_sizing_layout_and_others_do_not(loaded: LoadedPlan) -> None:
    specs = {vm.name: vm for vm in desired_vms(loaded.plan, KEYS)}
    numa = size_plan(loaded.plan).llm
    assert numa is not None
    llm = specs["llm"].config
    assert (llm["cpu"], llm["sockets"], llm["cores"], llm["numa"]) == (
        numa.numa.cpu_type,
        str(numa.numa.sockets),
        str(numa.numa.cores),
        "1",
    )
    assert llm["numa0"] == numa.numa.numa0
    assert "affinity" not in llm  # root@pam only on PVE: not something a token can manage
    postgres = specs["postgres"].config
    assert (postgres["cpu"], postgres["numa"], postgres["numa0"]) == ("host", "0", None)
    assert "affinity" not in postgres


def test_sshkeys_are_percent_encoded_with_nothing_safe(loaded: LoadedPlan) -> None:
    encoded = desired_vms(loaded.plan, KEYS)[0].config["sshkeys"]
    assert encoded is not None
    assert "/" not in encoded and "+" not in encoded and " " not in encoded
    assert "%2F" in encoded and "%2B" in encoded and "%0A" in encoded
    assert unquote(encoded).split("\n") == KEYS


def test_tags_description_and_exact_strings(loaded: LoadedPlan) -> None:
    apps = next(vm for vm in desired_vms(loaded.plan, KEYS) if vm.name == "apps")
    assert apps.config["tags"] == "ailab;common;python_app"
    assert apps.config["description"] == f"{DESCRIPTION_MARKER}{apps.spec_hash}"
    assert carries_marker(apps.config["description"] or "")
    assert apps.config["memory"] == "4096" and apps.config["onboot"] == "1"
    assert apps.config["ipconfig0"] == "ip=10.10.0.12/24,gw=10.10.0.1"


def test_spec_hash_is_per_vm(loaded: LoadedPlan) -> None:
    before = {vm.name: vm.spec_hash for vm in desired_vms(loaded.plan, KEYS)}
    vms = list(loaded.plan.vms)
    vms[2] = vms[2].model_copy(update={"cores": 3})
    changed = loaded.plan.model_copy(update={"vms": vms})
    after = {vm.name: vm.spec_hash for vm in desired_vms(changed, KEYS)}
    assert after["postgres"] == before["postgres"] and after["llm"] == before["llm"]
    assert after["apps"] != before["apps"]


def test_vms_boot_with_the_vendor_snippet_only_when_the_node_is_prepared(loaded: LoadedPlan) -> None:
    prepared = desired_vms(loaded.plan, KEYS)
    assert {vm.config["cicustom"] for vm in prepared} == {"vendor=local:snippets/ailab-vendor.yaml"}
    proxmox = loaded.plan.proxmox.model_copy(update={"prepare_node": False, "snippets_storage": "x"})
    unprepared = desired_vms(loaded.plan.model_copy(update={"proxmox": proxmox}), KEYS)
    assert all("cicustom" not in vm.config for vm in unprepared)  # a hand-set cicustom is left alone


def test_only_a_vm_whose_ha_state_is_stopped_is_kept_off(loaded: LoadedPlan) -> None:
    vms = [
        loaded.plan.vms[0].model_copy(update={"ha": HighAvailability(state=state)})
        for state in ("stopped", "started", "ignored")
    ]
    plan = loaded.plan.model_copy(update={"vms": [*vms, *loaded.plan.vms[1:]]})
    kept_off = [vm.kept_off_by_ha for vm in desired_vms(plan, KEYS)]
    assert kept_off == [True, False, False] + [False] * (len(loaded.plan.vms) - 1)
