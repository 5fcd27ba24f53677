"""plan / apply / re-apply / destroy against the Proxmox API emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ailab_deploy.adapters.ledger import apply_lock
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.adapters.statedir import facts_dir
from ailab_deploy.core.diff import ActualVM, Conflict, Error, Grow, NoOp, Orphan, Update, diff_vm
from ailab_deploy.errors import AilabError, ProxmoxError
from tests.lab.provision_fixtures import (
    LAB_OPTIONS,
    SECRET_ENV,
    TEST_KEY,
    Engine,
    emulator_client,
    lab_vm,
    make_engine,
    write_lab_plan,
)

pytestmark = pytest.mark.lab


def guests(lab: Any) -> dict[int, dict[str, Any]]:
    return {int(r["vmid"]): r for r in lab.api().cluster.resources.get(type="vm")}


def config(lab: Any, vmid: int) -> dict[str, Any]:
    return dict(lab.api().nodes(lab.node).qemu(vmid).config.get())


def assert_exactly_the_plan(engine: Engine) -> None:
    """No duplicates, no orphans, nothing left to do."""
    provisioner = engine.provisioner()
    wanted = {vm.vmid for vm in provisioner.desired.values()}
    assert set(guests(engine.lab)) == wanted | {9000}
    plan = provisioner.compute()
    assert all(vm.actions == (NoOp(),) for vm in plan.vms), plan.to_dict()


def test_plan_apply_reapply_destroy(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    planner = engine.provisioner()
    plan = planner.compute()
    assert [a.kind for vm in plan.vms for a in vm.actions] == ["create"] * 3
    assert planner.client.stats.as_dict()["by_kind"] == {"GET cluster/resources": 1}

    report = engine.provisioner().apply(LAB_OPTIONS)
    assert not report.failed
    postgres, llm = config(emulator, 100), config(emulator, 101)
    assert postgres["tags"] == "ailab;common;postgresql"
    assert postgres["cpu"] == "host"
    assert set(postgres["ipconfig0"].split(",")) == {"ip=10.77.0.10/24", "gw=10.77.0.1"}
    assert postgres["onboot"] == 1 and postgres["agent"] == "1"
    # stored still percent-encoded (so it was double-encoded on the wire), and it decodes to the key
    assert "%2B" in postgres["sshkeys"] and unquote(postgres["sshkeys"]) == TEST_KEY
    assert postgres["description"].endswith(
        f"ailab-deploy: plan={engine.provisioner().desired['postgres'].spec_hash}"
    )
    assert "size=8G" in postgres["scsi0"]
    assert (llm["cpu"], llm["sockets"], llm["cores"], llm["numa"]) == ("host", 1, 2, 1)
    assert llm["numa0"] == "cpus=0-1,hostnodes=0,memory=2048,policy=bind" and "affinity" not in llm
    assert {vmid: r["status"] for vmid, r in guests(emulator).items() if vmid != 9000} == {
        100: "running",
        101: "running",
        102: "running",
    }

    assert backup_jobs(emulator) == {"ailab-pve": "100,101,102"}

    again = engine.provisioner()
    second = again.apply(LAB_OPTIONS)
    assert second.api_calls["writes"] == 0, again.client.stats.write_calls
    assert all(not r.done for r in second.results)
    assert_exactly_the_plan(engine)

    destroyer = engine.provisioner()
    destroyed = destroyer.destroy(destroyer.destroy_targets(["apps"]), LAB_OPTIONS)
    assert backup_jobs(emulator) == {"ailab-pve": "100,101"}  # the job follows the managed VMs
    destroyed = destroyer.destroy(destroyer.destroy_targets(None), LAB_OPTIONS)
    assert not destroyed.failed
    assert set(guests(emulator)) == {9000}
    assert destroyer.ledger.managed_vmids() == set()
    assert backup_jobs(emulator) == {}  # PVE refuses a job with no VMs: it is removed


def backup_jobs(emulator: Any) -> dict[str, str]:
    return {job["id"]: str(job.get("vmid", "")) for job in emulator.api().cluster.backup.get()}


def test_update_in_place_grow_and_per_vm_hash(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    engine.provisioner().apply(LAB_OPTIONS)
    engine.rewrite([lab_vm(0), lab_vm(1), lab_vm(2, cores=4, disk="12G", tags=["web"])])

    plan = engine.provisioner().compute()
    by_name = {vm.name: vm for vm in plan.vms}
    # a change to apps changes no other VM's spec hash, so they stay no-ops
    assert by_name["postgres"].actions == (NoOp(),) and by_name["llm"].actions == (NoOp(),)
    update = by_name["apps"].first(Update)
    assert isinstance(update, Update) and update.needs_restart  # cores on a running VM
    assert {c.key for c in update.changes} == {"cores", "tags", "description"}
    assert by_name["apps"].first(Grow) == Grow("scsi0", 8.0, 12)

    engine.provisioner().apply(LAB_OPTIONS)
    apps = config(emulator, 102)
    assert (apps["cores"], apps["tags"]) == (4, "ailab;common;python_app;web")
    assert "size=12G" in apps["scsi0"]
    assert_exactly_the_plan(engine)


def test_shrink_is_an_error_and_nothing_is_written(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    engine.provisioner().apply(LAB_OPTIONS)
    engine.rewrite([lab_vm(0, disk="4G"), lab_vm(1), lab_vm(2)])
    provisioner = engine.provisioner()
    plan = provisioner.compute()
    error = plan.vms[0].first(Error)
    assert isinstance(error, Error) and "shrinking disks is not supported" in error.reason
    with pytest.raises(AilabError, match="shrinking"):
        provisioner.apply(LAB_OPTIONS)
    assert provisioner.client.stats.writes == 0


def test_unmanaged_vms_are_ignored_and_a_taken_vmid_is_a_conflict(emulator: Any, tmp_path: Path) -> None:
    node = emulator.api().nodes(emulator.node)
    emulator.wait(node.qemu.post(vmid=101, name="someone-elses", memory="512"))
    emulator.wait(node.qemu.post(vmid=500, name="bystander", memory="512", tags="ailab"))
    engine = make_engine(emulator, tmp_path)
    provisioner = engine.provisioner()
    plan = provisioner.compute()
    conflict = plan.vms[1].first(Conflict)
    assert isinstance(conflict, Conflict) and "does not manage" in conflict.reason
    assert [vm.vmid for vm in plan.vms] == [100, 101, 102]  # the bystander is not listed, not even as orphan
    assert provisioner.client.stats.as_dict()["by_kind"] == {"GET cluster/resources": 1}  # no config reads
    with pytest.raises(AilabError, match="VMID 101 is already used"):
        provisioner.apply(LAB_OPTIONS)
    assert provisioner.client.stats.writes == 0
    assert set(guests(emulator)) == {9000, 101, 500}


def test_a_tagged_vm_missing_from_the_ledger_is_not_touched(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    engine.provisioner().apply(LAB_OPTIONS)
    (engine.state_dir / "ledger.sqlite").unlink()  # e.g. another checkout of the plan
    for suffix in ("-wal", "-shm"):
        (engine.state_dir / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    provisioner = engine.provisioner()
    assert all(isinstance(vm.actions[0], Conflict) for vm in provisioner.compute().vms)
    with pytest.raises(AilabError):
        provisioner.destroy(provisioner.destroy_targets(["apps"]), LAB_OPTIONS)
    assert provisioner.client.stats.writes == 0


def test_removed_vm_is_an_orphan_destroy_one_and_protection(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    engine.provisioner().apply(LAB_OPTIONS)
    engine.rewrite([lab_vm(0, protection=True), lab_vm(1)])
    plan = engine.provisioner().compute()
    assert plan.vms[-1].name == "apps" and plan.vms[-1].actions == (Orphan(),)
    engine.provisioner().apply(LAB_OPTIONS)  # sets protection on postgres; leaves the orphan alone
    assert 102 in guests(emulator)

    provisioner = engine.provisioner()
    with pytest.raises(AilabError, match="protection is on for postgres"):
        provisioner.destroy(provisioner.destroy_targets(["postgres"]), LAB_OPTIONS)
    provisioner.destroy(provisioner.destroy_targets(["apps"]), LAB_OPTIONS)
    assert set(guests(emulator)) == {9000, 100, 101}


def test_second_concurrent_apply_is_refused(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    provisioner = engine.provisioner()
    with apply_lock(engine.state_dir, "held"), pytest.raises(AilabError, match="another apply"):
        provisioner.apply(LAB_OPTIONS)
    assert provisioner.client.stats.writes == 0


def test_snapshot_before_change_and_rollback(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    engine.provisioner().apply(LAB_OPTIONS)
    engine.rewrite([lab_vm(0, memory="3G"), lab_vm(1), lab_vm(2)])
    report = engine.provisioner().apply(LAB_OPTIONS.__class__(**{**LAB_OPTIONS.__dict__, "snapshot": True}))
    assert any(step.startswith("snapshot ailab-") for step in report.results[0].done)
    assert config(emulator, 100)["memory"] == "3072"
    message = engine.provisioner().rollback("postgres", None, LAB_OPTIONS)
    assert message.startswith("rolled back to ailab-")
    assert config(emulator, 100)["memory"] == "2048"


def test_fingerprint_pinning(emulator: Any) -> None:
    def client(fingerprint: str) -> ProxmoxClient:
        return emulator_client(emulator, fingerprint=fingerprint)

    assert 9000 in client(emulator.fingerprint).cluster_vms()
    wrong = ":".join(["AB"] * 32)
    with pytest.raises(ProxmoxError, match="TLS check"):
        client(wrong).cluster_vms()


@pytest.mark.parametrize("release", ["9.1", "8.4"])
def test_cli_plan_apply_destroy(make_emulator: Any, tmp_path: Path, release: str) -> None:
    emulator = make_emulator(version=release)
    assert emulator.api().version.get()["release"] == release
    engine = make_engine(emulator, tmp_path)
    # the plan pins the emulator's certificate (as the lab plan does) instead of naming a CA
    write_lab_plan(emulator, engine.plan_path.parent, [lab_vm(i) for i in range(3)], fingerprint=True)
    env = {**os.environ, SECRET_ENV: emulator.token_secret}
    env.pop("AILAB_STATE_DIR", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ailab_deploy", *args, "--plan", str(engine.plan_path)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    planned = cli("plan", "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["counts"] == {"create": 3}
    applied = cli("apply", "--no-wait-ssh", "--agent-timeout", "5")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(cli("plan", "--json").stdout)["counts"] == {"no-op": 3}
    reapplied = cli("apply", "--no-wait-ssh")
    assert "0 writes" in reapplied.stdout
    refused = cli("destroy")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    destroyed = cli("destroy", "--vm", "apps", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert set(guests(emulator)) == {9000, 100, 101}
    assert cli("destroy", "--yes").returncode == 0
    assert set(guests(emulator)) == {9000}
    assert emulator.api().cluster.backup.get() == []  # the backup job went with the last managed VM

    del env[SECRET_ENV]
    missing = cli("plan")
    assert missing.returncode == 2
    assert (
        f"vms.yaml:7: proxmox.token_secret_env: environment variable {SECRET_ENV} is not set"
        in missing.stderr
    )


def test_key_files_are_read_relative_to_the_plan(emulator: Any, tmp_path: Path) -> None:
    engine = make_engine(emulator, tmp_path)
    text = engine.plan_path.read_text().replace(
        "  ssh_public_keys:", "  ssh_public_key_files: [keys/missing.pub]\n  ssh_public_keys:"
    )
    engine.plan_path.write_text(text)
    with pytest.raises(AilabError, match=r"template.ssh_public_key_files\[0\]: cannot read .*missing.pub"):
        engine.provisioner()
    (engine.plan_path.parent / "keys").mkdir()
    second = ed25519.Ed25519PrivateKey.generate().public_key()
    second_line = second.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    (engine.plan_path.parent / "keys" / "missing.pub").write_text(f"# a comment\n{second_line} second\n")
    keys = unquote(engine.provisioner().desired["apps"].config["sshkeys"] or "").split("\n")
    assert keys == [TEST_KEY, f"{second_line} second"]
    engine.provisioner().apply(LAB_OPTIONS)  # PVE accepts both keys
    assert unquote(config(emulator, 100)["sshkeys"]).split("\n") == keys


def test_missing_template_is_a_clear_error_or_built_from_the_image(
    make_emulator: Any, tmp_path: Path
) -> None:
    url = "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2"
    image = tmp_path / "debian-13.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(20) + (2 * 1024**3).to_bytes(8, "big"))  # qcow2 header, 2 GiB
    lab = make_emulator(template=None, download_map={url: str(image)})
    engine = make_engine(lab, tmp_path)
    with pytest.raises(AilabError, match=r"template VM 9000 \(debian-13-cloud\) does not exist .*image_url"):
        engine.provisioner().apply(LAB_OPTIONS)

    write_lab_plan(lab, engine.plan_path.parent, [lab_vm(i) for i in range(3)], image_url=url)
    assert not engine.provisioner().apply(LAB_OPTIONS).failed
    template = guests(lab)[9000]
    assert template["template"] == 1 and template["name"] == "debian-13-cloud"
    assert "import-from" not in config(lab, 9000)["scsi0"]  # imported, then a base disk
    second = engine.provisioner()
    assert second.apply(LAB_OPTIONS).api_calls["writes"] == 0
    assert_exactly_the_plan(engine)


def test_what_pve_returns_after_a_create_diffs_to_nothing(emulator: Any, tmp_path: Path) -> None:
    """Round trip: each VM's config as the node answers after apply made it (the raw API answer,
    with PVE's types and the keys PVE adds) diffs to a no-op against the plan: no perpetual diff."""
    engine = make_engine(emulator, tmp_path)
    provisioner = engine.provisioner()
    assert not provisioner.apply(LAB_OPTIONS).failed
    node = emulator.api().nodes(emulator.node)
    for desired in provisioner.desired.values():
        config = node.qemu(desired.vmid).config.get()
        assert "digest" in config and isinstance(config["cores"], int)  # PVE's answer, not the plan's strings
        status = node.qemu(desired.vmid).status.current.get()["status"]
        actual = ActualVM(
            desired.vmid, config["name"], emulator.node, "qemu", status, tags=config["tags"], config=config
        )
        assert diff_vm(desired, actual, {desired.vmid}, emulator.node).actions == (NoOp(),), desired.name


def test_cached_facts_are_kept_for_unchanged_vms_and_dropped_for_changed_or_new_ones(
    emulator: Any, tmp_path: Path
) -> None:
    engine = make_engine(emulator, tmp_path)
    facts = facts_dir(engine.state_dir)
    facts.mkdir(parents=True)
    stale = {name: facts / f"s1_{name}" for name in ("postgres", "llm", "apps")}
    for path in stale.values():
        path.write_text("{}")  # facts of VMs with these names from an earlier life
    engine.provisioner().apply(LAB_OPTIONS)
    assert not any(path.exists() for path in stale.values())  # created now: gathered afresh

    for path in stale.values():
        path.write_text("{}")  # what configure caches after the first run
    engine.provisioner().apply(LAB_OPTIONS)  # nothing to change
    assert all(path.exists() for path in stale.values())

    engine.rewrite([lab_vm(0), lab_vm(1), lab_vm(2, cores=4)])
    engine.provisioner().apply(LAB_OPTIONS)  # apps gets more cores
    assert {name for name, path in stale.items() if path.exists()} == {"postgres", "llm"}
