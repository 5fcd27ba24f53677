"""Every endpoint through proxmoxer, with the shapes and types PVE returns."""

from __future__ import annotations

import hashlib
import time
import uuid
from urllib.parse import quote

import pytest
from proxmoxer import ResourceException

pytestmark = pytest.mark.lab

GIB = 1024**3
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvbvmS/mLpi1rXhO0rIVr6+YYWRo1dMv9+GJPB3bSkM lab@test"


def run(emulator, upid, ok=True):
    status = emulator.wait(upid)
    if ok:
        assert status["exitstatus"] == "OK", status
    return status


def clone(emulator, newid, **kwargs):
    api = emulator.api()
    upid = api.nodes(emulator.node).qemu(9000).clone.post(newid=newid, **kwargs)
    run(emulator, upid)
    return api.nodes(emulator.node).qemu(newid)


def test_version_and_nodes(emulator):
    api = emulator.api()
    version = api.version.get()
    assert version["version"] == "9.1.3" and version["release"] == "9.1"
    assert len(version["repoid"]) == 16
    (node,) = api.nodes.get()
    assert node["node"] == emulator.node and node["status"] == "online"
    assert node["maxcpu"] == 72
    assert node["ssl_fingerprint"] == emulator.fingerprint


def test_node_status_reports_the_reference_host(emulator):
    status = emulator.api().nodes(emulator.node).status.get()
    cpu = status["cpuinfo"]
    assert cpu["model"] == "Intel(R) Xeon(R) CPU E5-2699 v3 @ 2.30GHz"
    assert (cpu["sockets"], cpu["cores"], cpu["cpus"]) == (2, 36, 72)
    assert isinstance(cpu["mhz"], str)
    assert status["memory"]["total"] == 126 * GIB
    assert status["pveversion"].startswith("pve-manager/9.1.3/")


def test_node_hardware_is_configurable(make_emulator):
    lab = make_emulator(
        hardware={
            "sockets": 1,
            "cores_per_socket": 16,
            "threads_per_core": 2,
            "cpu_model": "AMD EPYC 7302P 16-Core Processor",
            "memory": "64G",
        }
    )
    cpu = lab.api().nodes(lab.node).status.get()["cpuinfo"]
    assert (cpu["sockets"], cpu["cores"], cpu["cpus"], cpu["model"]) == (
        1,
        16,
        32,
        "AMD EPYC 7302P 16-Core Processor",
    )


def test_unknown_node_fails(emulator):
    with pytest.raises(ResourceException) as err:
        emulator.api().nodes("nope").status.get()
    assert err.value.status_code == 500
    assert "hostname lookup 'nope' failed" in err.value.content


def test_storage_list_and_status_account_for_allocated_disks(emulator):
    api = emulator.api()
    storages = {s["storage"]: s for s in api.nodes(emulator.node).storage.get()}
    assert set(storages) == {"local", "local-lvm", "HDDStorage"}
    assert storages["local-lvm"]["type"] == "lvmthin"
    assert storages["local-lvm"]["content"] == "images,rootdir"
    assert storages["local"]["content"] == "iso,vztmpl,backup,snippets,import"
    assert storages["HDDStorage"]["total"] == 2_180_000_000_000
    before = api.nodes(emulator.node).storage("HDDStorage").status.get()
    assert "storage" not in before and before["used"] == 0
    upid = api.nodes(emulator.node).qemu.post(vmid=120, scsi0="HDDStorage:32", memory="1024")
    run(emulator, upid)
    after = api.nodes(emulator.node).storage("HDDStorage").status.get()
    assert after["used"] - before["used"] == 32 * GIB
    assert after["avail"] == after["total"] - after["used"]
    only = api.nodes(emulator.node).storage.get(content="images")
    assert {s["storage"] for s in only} == {"local-lvm", "HDDStorage"}
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).storage.get(storage="nope")
    assert err.value.errors == {"storage": "No such storage."}


def test_storages_are_configurable(make_emulator):
    lab = make_emulator(storages=[{"storage": "tank", "type": "zfspool", "content": "images", "total": "1T"}])
    (tank,) = lab.api().nodes(lab.node).storage.get()
    assert (tank["storage"], tank["type"], tank["total"]) == ("tank", "zfspool", 1024**4)


def test_nextid_is_a_string_and_refuses_taken_ids(emulator):
    api = emulator.api()
    assert api.cluster.nextid.get() == "100"
    clone(emulator, 100)
    assert api.cluster.nextid.get() == "101"
    assert api.cluster.nextid.get(vmid=555) == "555"
    with pytest.raises(ResourceException) as err:
        api.cluster.nextid.get(vmid=100)
    assert err.value.status_code == 400
    assert err.value.errors == {"vmid": "VM 100 already exists"}


def test_cluster_resources(emulator):
    api = emulator.api()
    vm = clone(emulator, 101, name="web1")
    vm.config.put(tags="b,A")
    resources = api.cluster.resources.get(type="vm")
    by_id = {r["id"]: r for r in resources}
    assert set(by_id) == {"qemu/9000", "qemu/101"}
    web = by_id["qemu/101"]
    assert web["vmid"] == 101 and web["type"] == "qemu" and web["template"] == 0
    assert web["name"] == "web1" and web["status"] == "stopped"
    assert web["tags"] == "a;b"
    assert by_id["qemu/9000"]["template"] == 1
    assert web["maxmem"] == 2048 * 1024**2
    everything = api.cluster.resources.get()
    assert {r["type"] for r in everything} == {"qemu", "node", "storage"}
    storages = [r for r in api.cluster.resources.get(type="storage")]
    assert {r["storage"] for r in storages} == {"local", "local-lvm", "HDDStorage"}


def test_create_vm_writes_pve_defaults(emulator):
    api = emulator.api()
    upid = api.nodes(emulator.node).qemu.post(
        vmid=130,
        name="db",
        memory="4096",
        cores=2,
        sockets=1,
        scsi0="local-lvm:20,discard=on",
        ide2="local-lvm:cloudinit",
        net0="virtio,bridge=vmbr0",
        agent="enabled=1",
        onboot=1,
        scsihw="virtio-scsi-single",
    )
    assert upid.startswith(f"UPID:{emulator.node}:") and ":qmcreate:130:" in upid
    run(emulator, upid)
    config = api.nodes(emulator.node).qemu(130).config.get()
    assert config["scsi0"] == "local-lvm:vm-130-disk-0,discard=on,size=20G"
    assert config["ide2"] == "local-lvm:vm-130-cloudinit,media=cdrom"
    assert config["net0"].startswith("virtio=BC:24:11:") and config["net0"].endswith(",bridge=vmbr0")
    assert config["boot"] == "order=scsi0;net0"
    assert config["memory"] == "4096" and config["cores"] == 2 and config["onboot"] == 1
    assert config["smbios1"].startswith("uuid=") and "vmgenid" in config
    assert config["meta"].startswith("creation-qemu=")
    assert "lock" not in config
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).qemu.post(vmid=130, memory="512")
    assert err.value.content == f"unable to create VM 130 - VM 130 already exists on node '{emulator.node}'"


def test_create_then_digest_is_sha1_of_the_config_file(emulator):
    api = emulator.api()
    config = api.nodes(emulator.node).qemu(9000).config.get()
    text = (emulator.lab_dir / "state" / "qemu-server" / "9000.conf").read_text()
    assert config["digest"] == hashlib.sha1(text.encode()).hexdigest()
    assert "template: 1" in text


def test_clone_linked_and_full(emulator):
    api = emulator.api()
    linked = clone(emulator, 101)
    config = linked.config.get()
    assert config["name"] == "Copy-of-VM-debian-13-cloud"
    assert config["scsi0"].startswith("local-lvm:base-9000-disk-0/vm-101-disk-0,")
    assert config["ide2"] == "local-lvm:vm-101-cloudinit,media=cdrom"
    assert "template" not in config
    template = api.nodes(emulator.node).qemu(9000).config.get()
    assert config["net0"] != template["net0"]
    assert config["smbios1"] != template["smbios1"]
    full = clone(emulator, 102, name="full", full=1, storage="HDDStorage")
    assert full.config.get()["scsi0"].startswith("HDDStorage:vm-102-disk-0,")
    log = api.nodes(emulator.node).tasks(api.nodes(emulator.node).qemu(9000).clone.post(newid=103)).log.get()
    assert any("create linked clone of drive scsi0 (local-lvm:base-9000-disk-0)" in line["t"] for line in log)


def test_clone_synchronous_errors(emulator):
    api = emulator.api()
    clone(emulator, 101)
    cases = [
        (dict(newid=101), "unable to create VM 101: config file already exists"),
        (dict(newid=102, storage="HDDStorage"), "parameter 'storage' not allowed for linked clones"),
        (dict(newid=102, snapname="nope"), "snapshot 'nope' does not exist"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ResourceException) as err:
            api.nodes(emulator.node).qemu(9000).clone.post(**kwargs)
        assert (err.value.status_code, err.value.content) == (500, message)
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).qemu(999).clone.post(newid=102)
    assert err.value.content == f"unable to find configuration file for VM 999 on node '{emulator.node}'"


def test_config_put_post_digest_delete(emulator):
    vm = clone(emulator, 101)
    digest = vm.config.get()["digest"]
    assert vm.config.put(cores=4, description="first", digest=digest) is None
    with pytest.raises(ResourceException) as err:
        vm.config.put(cores=2, digest=digest)
    assert err.value.content == "checksum mismatch (file change by other user?)"
    upid = vm.config.post(memory="3072", delete="description")
    assert ":qmconfig:101:" in upid
    run(emulator, upid)
    config = vm.config.get()
    assert config["memory"] == "3072" and config["cores"] == 4 and "description" not in config
    with pytest.raises(ResourceException) as err:
        vm.config.put(delete="bogus")
    assert err.value.errors == {"delete": "unknown option 'bogus'"}
    with pytest.raises(ResourceException) as err:
        vm.config.put()
    assert err.value.content == "no options specified"
    assert vm.config.post(name="renamed", background_delay=5) is None
    assert vm.config.get()["name"] == "renamed"
    status = run(emulator, vm.config.post(delete="onboot"), ok=False)
    assert status["exitstatus"] == "WARNINGS: 1"


def test_config_changes_on_running_vm_wait_in_pending(emulator):
    vm = clone(emulator, 101)
    run(emulator, vm.status.start.post())
    vm.config.put(cores=8, name="hot")
    assert vm.config.get(current=1)["cores"] == 2
    assert vm.config.get()["cores"] == 8
    assert vm.config.get(current=1)["name"] == "hot"
    pending = {p["key"]: p for p in vm.pending.get()}
    assert pending["cores"]["pending"] == 8 and pending["cores"]["value"] == 2
    run(emulator, vm.status.reboot.post())
    assert vm.config.get(current=1)["cores"] == 8


# (change on a running VM with the default hotplug=network,disk,usb, applied at once?) from
# qemu-server's vmconfig_hotplug_pending / vmconfig_update_disk / vmconfig_update_net
HOTPLUG_CASES = [
    ({"cores": "4"}, False),
    ({"memory": "4096"}, False),  # no memory hotplug by default
    ({"onboot": "1", "tags": "lab"}, True),  # fast-plug keys
    ({"ipconfig0": "ip=dhcp", "ciuser": "ops"}, True),  # cloud-init keys
    ({"scsi1": "local-lvm:1"}, True),  # a new disk on a hot-pluggable bus
    ({"sata1": "local-lvm:1"}, False),  # sata/ide disks cannot be hot-plugged
    ({"scsi0": "+,cache=writeback"}, False),  # "+": added to the disk's current value
    ({"scsi0": "+,mbps_rd=100"}, True),  # I/O limits change live
    ({"net0": "virtio,bridge=vmbr1,tag=5"}, True),  # bridge and tag change live
    ({"ide2": "none,media=cdrom"}, True),  # a medium change
    ({"balloon": "0"}, False),  # turning the balloon device off
    ({"cpuunits": "200"}, True),
    ({"hotplug": "network,disk,memory"}, False),
]


@pytest.mark.parametrize(("change", "live"), HOTPLUG_CASES)
def test_running_vm_applies_what_pve_hotplugs(emulator, change, live):
    vm = clone(emulator, 101)
    run(emulator, vm.status.start.post())
    before = vm.config.get(current=1)
    change = {k: before[k] + v[1:] if v.startswith("+") else v for k, v in change.items()}
    vm.config.put(**change)
    current = vm.config.get(current=1)
    pending = {p["key"] for p in vm.pending.get() if "pending" in p}
    for key in change:
        assert (key not in pending) == live, (key, pending)
        if not live:
            assert current.get(key) == before.get(key)


def test_running_vm_deletes_as_pve_hotplugs(emulator):
    vm = clone(emulator, 101)
    vm.config.put(sata1="local-lvm:1", scsi1="local-lvm:1", onboot=1, cores=4)
    run(emulator, vm.status.start.post())
    vm.config.put(delete="sata1,scsi1,onboot,cores")
    marked = {p["key"] for p in vm.pending.get() if p.get("delete")}
    assert marked == {"sata1", "cores"}  # scsi1 unplugged and onboot (fast-plug) dropped at once
    current = vm.config.get(current=1)
    assert "scsi1" not in current and "onboot" not in current and current["cores"] == 4


def test_update_semantics_from_qemu_server(emulator):
    vm = clone(emulator, 101)
    with pytest.raises(ResourceException) as err:
        vm.config.put(cores=2, delete="cores")
    assert err.value.errors == {"delete": "you can't use '-cores' and -delete cores' at the same time"}
    with pytest.raises(ResourceException) as err:
        vm.config.put(delete="cores", revert="cores")
    assert err.value.errors == {"revert": "you can't use '-delete cores' and -revert cores' at the same time"}
    with pytest.raises(ResourceException) as err:
        vm.config.put(revert="bogus")
    assert err.value.errors == {"revert": "unknown option 'bogus'"}
    with pytest.raises(ResourceException) as err:
        vm.config.put(name="x", digest="0" * 40)
    assert (err.value.status_code, err.value.content) == (
        500,
        "checksum mismatch (file change by other user?)",
    )
    vm.config.put(cdrom="none")  # the alias of ide2, as a CD-ROM
    assert vm.config.get()["ide2"] == "none,media=cdrom"
    with pytest.raises(ResourceException) as err:  # no API token may set it, root@pam's neither
        vm.config.put(vmgenid="1")
    assert (err.value.status_code, err.value.content) == (500, "only root can set 'vmgenid' config")
    as_root = emulator.api("ticket").nodes(emulator.node).qemu(101)  # root@pam itself
    as_root.config.put(vmgenid="1")  # 1 asks for a new generation id
    assert uuid.UUID(vm.config.get()["vmgenid"]).version == 4


def test_boot_order_follows_deleted_and_new_drives(emulator):
    vm = clone(emulator, 101)
    vm.config.put(scsi1="local-lvm:1", boot="order=scsi0;scsi1;net0")
    vm.config.put(delete="scsi1")
    assert vm.config.get()["boot"] == "order=scsi0;net0"
    vm.config.put(ide3="none,media=cdrom")  # a new CD drive is marked bootable
    assert vm.config.get()["boot"] == "order=scsi0;net0;ide3"


def test_revert_drops_a_pending_change(emulator):
    vm = clone(emulator, 101)
    run(emulator, vm.status.start.post())
    vm.config.put(cores=6, sockets=2)
    vm.config.put(revert="cores")
    pending = {p["key"] for p in vm.pending.get() if "pending" in p}
    assert "cores" not in pending and "sockets" in pending
    assert vm.config.get()["cores"] == vm.config.get(current=1)["cores"]


def test_cipassword_is_hidden(emulator):
    vm = clone(emulator, 101)
    vm.config.put(cipassword="s3cret", ciuser="ailab")
    assert vm.config.get()["cipassword"] == "**********"
    text = (emulator.lab_dir / "state" / "qemu-server" / "101.conf").read_text()
    assert "s3cret" not in text and "cipassword: $5$" in text


def test_resize_grows_and_refuses_to_shrink(emulator):
    vm = clone(emulator, 101)
    upid = vm.resize.put(disk="scsi0", size="+5G")
    assert ":resize:101:" in upid
    run(emulator, upid)
    assert vm.config.get()["scsi0"].endswith("size=8G")
    run(emulator, vm.resize.put(disk="scsi0", size="42G"))
    assert "size=42G" in vm.config.get()["scsi0"]
    for size, message in (("10G", "shrinking disks is not supported"),):
        status = run(emulator, vm.resize.put(disk="scsi0", size=size), ok=False)
        assert status["exitstatus"] == message
    status = run(emulator, vm.resize.put(disk="scsi5", size="+1G"), ok=False)
    assert status["exitstatus"] == "disk 'scsi5' does not exist"
    status = run(emulator, vm.resize.put(disk="ide2", size="+1G"), ok=False)
    assert status["exitstatus"] == "you can't resize a cdrom"


def test_power_cycle_and_status_current(emulator):
    vm = clone(emulator, 101)
    current = vm.status.current.get()
    assert current["status"] == "stopped" and current["qmpstatus"] == "stopped"
    assert current["ha"] == {"managed": 0} and current["agent"] == 1
    with pytest.raises(ResourceException) as err:
        vm.status.reboot.post()
    assert err.value.content == "VM 101 not running"
    run(emulator, vm.status.start.post())
    current = vm.status.current.get()
    assert current["status"] == "running" and "pid" in current
    assert run(emulator, vm.status.start.post(), ok=False)["exitstatus"] == "VM 101 already running"
    run(emulator, vm.status.reboot.post())
    run(emulator, vm.status.shutdown.post(timeout=30))
    assert vm.status.current.get()["status"] == "stopped"
    run(emulator, vm.status.stop.post())  # stopping a stopped VM is a no-op
    run(emulator, vm.status.start.post())
    run(emulator, vm.status.stop.post())
    assert vm.status.current.get()["status"] == "stopped"
    template = emulator.api().nodes(emulator.node).qemu(9000)
    status = run(emulator, template.status.start.post(), ok=False)
    assert status["exitstatus"] == "you can't start a vm if it's a template"


def test_missing_vm_messages(emulator):
    api = emulator.api()
    missing = f"Configuration file 'nodes/{emulator.node}/qemu-server/999.conf' does not exist"
    for call in (
        lambda: api.nodes(emulator.node).qemu(999).config.get(),
        lambda: api.nodes(emulator.node).qemu(999).status.current.get(),
        lambda: api.nodes(emulator.node).qemu(999).delete(),
    ):
        with pytest.raises(ResourceException) as err:
            call()
        assert (err.value.status_code, err.value.content) == (500, missing)
    status = run(emulator, api.nodes(emulator.node).qemu(999).status.start.post(), ok=False)
    assert status["exitstatus"] == missing


def test_agent_network_interfaces(emulator):
    vm = clone(emulator, 101)
    vm.config.put(ipconfig0="ip=10.77.0.10/24,gw=10.77.0.1")
    with pytest.raises(ResourceException) as err:
        vm.agent("network-get-interfaces").get()
    assert err.value.content == "VM 101 is not running"
    run(emulator, vm.status.start.post())
    result = vm.agent("network-get-interfaces").get()["result"]
    eth0 = next(i for i in result if i["name"] == "eth0")
    assert eth0["ip-addresses"][0]["ip-address"] == "10.77.0.10"
    vm.config.put(delete="agent")  # not hot-pluggable: pending until the VM stops and starts
    assert vm.agent("network-get-interfaces").get()["result"]
    run(emulator, vm.status.stop.post())
    run(emulator, vm.status.start.post())
    with pytest.raises(ResourceException) as err:
        vm.agent("network-get-interfaces").get()
    assert err.value.content == "No QEMU guest agent configured"


def test_template_and_destroy(emulator):
    api = emulator.api()
    upid = api.nodes(emulator.node).qemu.post(vmid=140, scsi0="local-lvm:4", memory="1024")
    run(emulator, upid)
    vm = api.nodes(emulator.node).qemu(140)
    run(emulator, vm.template.post())
    config = vm.config.get()
    assert config["template"] == 1 and config["scsi0"].startswith("local-lvm:base-140-disk-0,")
    with pytest.raises(ResourceException) as err:
        vm.template.post()
    assert err.value.content == "you can't convert a template to a template"
    other = clone(emulator, 141)
    run(emulator, other.status.start.post())
    with pytest.raises(ResourceException) as err:
        other.delete()
    assert err.value.content == "VM 141 is running - destroy failed"
    run(emulator, other.status.stop.post())
    upid = other.delete(purge=1)
    assert ":qmdestroy:141:" in upid
    run(emulator, upid)
    assert 141 not in {r["vmid"] for r in api.cluster.resources.get(type="vm")}
    assert not (emulator.lab_dir / "state" / "qemu-server" / "141.conf").exists()


def test_snapshots_create_list_rollback_delete(emulator):
    vm = clone(emulator, 101)
    upid = vm.snapshot.post(snapname="before", description="clean")
    assert ":qmsnapshot:101:" in upid
    run(emulator, upid)
    vm.config.put(cores=6)
    snaps = {s["name"]: s for s in vm.snapshot.get()}
    assert snaps["before"]["description"] == "clean" and snaps["before"]["vmstate"] == 0
    assert isinstance(snaps["before"]["snaptime"], int)
    assert snaps["current"]["parent"] == "before" and snaps["current"]["description"] == "You are here!"
    assert run(emulator, vm.snapshot.post(snapname="before"), ok=False)["exitstatus"] == (
        "snapshot name 'before' already used"
    )
    with pytest.raises(ResourceException) as err:
        vm.snapshot.post(snapname="current")
    assert err.value.content == "unable to use snapshot name 'current' (reserved name)"
    run(emulator, vm.snapshot("before").rollback.post())
    assert vm.config.get()["cores"] == 2
    run(emulator, vm.snapshot.post(snapname="second"))
    assert {s["name"]: s for s in vm.snapshot.get()}["second"]["parent"] == "before"
    run(emulator, vm.snapshot("before").delete())
    snaps = {s["name"]: s for s in vm.snapshot.get()}
    assert set(snaps) == {"second", "current"} and "parent" not in snaps["second"]
    status = run(emulator, vm.snapshot("nope").delete(), ok=False)
    assert status["exitstatus"] == "snapshot 'nope' does not exist"


def test_task_status_and_log(emulator):
    api = emulator.api()
    upid = api.nodes(emulator.node).qemu(9000).clone.post(newid=101)
    status = run(emulator, upid)
    assert status["type"] == "qmclone" and status["id"] == "9000"
    assert status["user"] == "root@pam" and status["tokenid"] == emulator.token_name
    log = api.nodes(emulator.node).tasks(upid).log.get()
    assert log[-1] == {"n": len(log), "t": "TASK OK"}
    answer = emulator.http("GET", f"/nodes/{emulator.node}/tasks/{upid}/log", params={"start": 1, "limit": 1})
    assert answer.json()["total"] == len(log) and len(answer.json()["data"]) == 1
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).tasks("UPID:bogus").status.get()
    assert err.value.errors == {"upid": "unable to parse worker upid"}
    unknown = upid.replace(":qmclone:", ":qmstart:")
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).tasks(unknown).status.get()
    assert err.value.errors == {"upid": "no such task"}
    listed = api.nodes(emulator.node).tasks.get(vmid=9000)
    assert listed[0]["upid"] == upid and listed[0]["status"] == "OK"


def test_task_list_filters_as_pve(make_emulator):
    lab = make_emulator(task_seconds_by_type={"qmstart": 30})
    api = lab.api()
    node = api.nodes(lab.node)
    ok = node.qemu(9000).clone.post(newid=101)
    run(lab, ok)
    failed = node.qemu(101).resize.put(disk="scsi0", size="1G")  # shrinking: the task fails
    assert run(lab, failed, ok=False)["exitstatus"] == "shrinking disks is not supported"
    running = node.qemu(101).status.start.post()
    archive = node.tasks.get()  # default source=archive: finished tasks only
    assert {t["upid"] for t in archive} >= {ok, failed} and running not in {t["upid"] for t in archive}
    active = node.tasks.get(source="active")
    assert [(t["upid"], t["status"]) for t in active] == [(running, "RUNNING")]
    assert {t["upid"] for t in node.tasks.get(errors=1)} == {failed}
    assert {t["upid"] for t in node.tasks.get(statusfilter="ok", typefilter="qmclone")} == {ok}
    assert [t["upid"] for t in node.tasks.get(source="all", vmid=101)] == [running, failed]
    assert node.tasks.get(userfilter="nobody") == []
    answer = lab.http("GET", f"/nodes/{lab.node}/tasks", params={"limit": 1})
    assert len(answer.json()["data"]) == 1 and answer.json()["total"] == 2  # the two finished
    assert node.tasks.get(since=int(time.time()) + 3600) == []


def test_download_url_import_then_template_from_cloud_image(make_emulator, tmp_path):
    image = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    header = b"QFI\xfb" + (3).to_bytes(4, "big") + b"\0" * 16 + (2 * GIB).to_bytes(8, "big")
    image.write_bytes(header + b"\0" * 1024)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    url = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
    emulator = make_emulator(download_map={url: str(image)})
    api = emulator.api()
    storage = api.nodes(emulator.node).storage("local")
    upid = storage("download-url").post(
        url=url,
        content="import",
        filename="debian-12.qcow2",
        checksum=digest,
        **{"checksum-algorithm": "sha256"},
    )
    assert ":download:debian-12.qcow2:" in upid
    run(emulator, upid)
    volids = {c["volid"] for c in storage.content.get()}
    assert "local:import/debian-12.qcow2" in volids
    upid = api.nodes(emulator.node).qemu.post(
        vmid=9100,
        name="tpl",
        memory="2048",
        scsi0="local-lvm:0,import-from=local:import/debian-12.qcow2",
        ide2="local-lvm:cloudinit",
    )
    run(emulator, upid)
    vm = api.nodes(emulator.node).qemu(9100)
    assert vm.config.get()["scsi0"] == "local-lvm:vm-9100-disk-0,size=2G"
    run(emulator, vm.template.post())
    assert vm.config.get()["scsi0"].startswith("local-lvm:base-9100-disk-0")
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).qemu.post(
            vmid=9101, scsi0="local-lvm:8,import-from=local:import/debian-12.qcow2"
        )
    assert err.value.status_code == 400
    assert "'import-from' requires special syntax" in err.value.errors["scsi0"]


def test_download_url_never_touches_the_network(emulator):
    storage = emulator.api().nodes(emulator.node).storage("local")
    upid = storage("download-url").post(
        url="https://cloud.debian.org/x.qcow2", content="import", filename="x.qcow2"
    )
    status = run(emulator, upid, ok=False)
    assert "the lab sends no network traffic" in status["exitstatus"]


def test_download_url_mapped_in_settings(make_emulator, tmp_path):
    image = tmp_path / "cached.iso"
    image.write_bytes(b"iso")
    url = "https://example.org/debian.iso"
    lab = make_emulator(download_map={url: str(image)})
    storage = lab.api().nodes(lab.node).storage("local")
    run(lab, storage("download-url").post(url=url, content="iso", filename="debian.iso"))
    assert (lab.lab_dir / "storage" / "local" / "template" / "iso" / "debian.iso").read_bytes() == b"iso"


def test_backup_jobs_crud(emulator):
    backup = emulator.api().cluster.backup
    assert (
        backup.post(
            id="nightly",
            schedule="sat 02:00",
            storage="HDDStorage",
            vmid="101,102",
            mode="snapshot",
            compress="zstd",
        )
        is None
    )
    job = backup("nightly").get()
    assert job["type"] == "vzdump" and job["schedule"] == "sat 02:00" and job["enabled"] == 1
    assert job["next-run"] > time.time()
    assert time.localtime(job["next-run"]).tm_wday == 5
    with pytest.raises(ResourceException) as err:
        backup.post(id="nightly", schedule="daily", all=1)
    assert err.value.content == "Job 'nightly' already exists"
    backup("nightly").put(schedule="mon..fri 21:00", delete="compress")
    job = backup("nightly").get()
    assert job["schedule"] == "mon..fri 21:00" and "compress" not in job
    backup.post(starttime="03:00", dow="sun", all=1, storage="HDDStorage")
    listed = backup.get()
    assert len(listed) == 2
    generated = next(j for j in listed if j["id"] != "nightly")
    assert generated["id"].startswith("backup-") and generated["schedule"] == "sun 03:00"
    backup("nightly").delete()
    with pytest.raises(ResourceException) as err:
        backup("nightly").get()
    assert err.value.errors == {"id": "No such job 'nightly'"}


def test_sshkeys_double_encoding(emulator):
    vm = clone(emulator, 101)
    encoded = quote(SSH_KEY, safe="")
    vm.config.put(sshkeys=encoded)
    assert vm.config.get()["sshkeys"] == encoded
    with pytest.raises(ResourceException) as err:
        vm.config.put(sshkeys=quote(SSH_KEY))  # default safe='/' leaves '/'
    assert err.value.status_code == 400
    assert err.value.errors["sshkeys"].startswith("invalid format - invalid urlencoded string: ")
    with pytest.raises(ResourceException) as err:
        vm.config.put(sshkeys=quote("ssh-ed25519 AAAAnotakey", safe=""))
    assert (err.value.status_code, err.value.content) == (500, "SSH public key validation error")


def test_reads_common_clients_make_first(make_emulator):
    lab = make_emulator(version="8.4.1")
    api = lab.api()
    assert api.cluster.status.get() == [
        {
            "type": "node",
            "id": f"node/{lab.node}",
            "name": lab.node,
            "ip": "127.0.0.1",
            "level": "",
            "local": 1,
            "nodeid": 0,
            "online": 1,
        }
    ]
    assert api.nodes(lab.node).version.get()["release"] == "8.4"
    assert api.nodes(lab.node).lxc.get() == []
    assert api.pools.get() == []
    bridges = api.nodes(lab.node).network.get(type="bridge")
    assert [b["iface"] for b in bridges] == ["vmbr0"]
    privileges = api.access.permissions.get()["/"]
    assert privileges["VM.Monitor"] == 1 and "VM.GuestAgent.Audit" not in privileges


def test_pve9_privileges_and_guest_agent_probes(emulator):
    api = emulator.api()
    privileges = api.access.permissions.get(path="/vms/101")["/vms/101"]  # {path: privileges}, as PVE
    assert privileges["VM.GuestAgent.Audit"] == 1 and "VM.Monitor" not in privileges
    vm = clone(emulator, 101)
    with pytest.raises(ResourceException) as err:
        vm.agent.ping.post()
    assert err.value.content == "VM 101 is not running"
    run(emulator, vm.status.start.post())
    vm.config.put(ipconfig0="ip=10.77.0.21/24,gw=10.77.0.1")
    assert vm.agent.ping.post() == {}
    assert vm.agent("get-host-name").get() == {"result": {"host-name": vm.config.get()["name"]}}
    osinfo = vm.agent("get-osinfo").get()["result"]
    assert (osinfo["id"], osinfo["version-id"]) == ("debian", "13")  # the lab's default release


def test_storage_comes_from_a_pve_storage_cfg(emulator):
    cfg = emulator.lab_dir / "storage.cfg"
    written = cfg.read_text()  # a new lab writes its storages down in PVE's format
    assert written.startswith("dir: local\n\tpath ")
    snippets = emulator.lab_dir / "snippets-store"
    cfg.write_text(written + f"\ndir: snip\n\tpath {snippets}\n\tcontent snippets\n\tshared 1\n\tnodes pve\n")
    emulator.restart()
    api = emulator.api()
    entry = api.storage("snip").get()
    assert entry["type"] == "dir" and entry["path"] == str(snippets) and entry["shared"] == 1
    assert entry["content"] == "snippets" and entry["nodes"] == "pve"
    assert {s["storage"] for s in api.storage.get(type="dir")} >= {"local", "snip"}
    listed = {s["storage"]: s for s in api.nodes(emulator.node).storage.get()}
    assert listed["snip"]["content"] == "snippets"
    cfg.write_text("dir local\n")
    with pytest.raises(Exception, match=r"storage.cfg:1: cannot parse 'dir local'"):
        emulator.restart()


def test_content_listing_formats_as_pve_storage(emulator):
    root = emulator.lab_dir / "storage" / "local"
    files = {
        "template/cache/debian-12-standard_12.7-1_amd64.tar.zst": b"t",
        "template/iso/debian.iso": b"i",
        "snippets/user-data.yaml": b"s",
        "dump/vzdump-qemu-101-2026_01_02-03_04_05.vma.zst": b"b",
        "dump/not-a-backup.txt": b"x",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    content = {c["volid"]: c for c in emulator.api().nodes(emulator.node).storage("local").content.get()}
    assert content["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"]["format"] == "tzst"
    assert content["local:iso/debian.iso"]["format"] == "iso"
    assert content["local:snippets/user-data.yaml"]["format"] == "snippet"
    backup = content["local:backup/vzdump-qemu-101-2026_01_02-03_04_05.vma.zst"]
    assert (backup["format"], backup["subtype"], backup["vmid"], backup["size"]) == (
        "vma.zst",
        "qemu",
        101,
        1,
    )
    assert "local:backup/not-a-backup.txt" not in content


def test_disks_name_existing_volumes_or_a_size(emulator):
    vm = clone(emulator, 101)
    with pytest.raises(ResourceException) as err:
        vm.config.put(scsi1="local-lvm:vm-101-disk-9")
    assert (err.value.status_code, err.value.content) == (
        500,
        "volume local-lvm:vm-101-disk-9 does not exist",
    )
    with pytest.raises(ResourceException) as err:
        vm.config.put(ide3="local:iso/missing.iso,media=cdrom")
    assert err.value.content == "volume local:iso/missing.iso does not exist"
    iso = emulator.lab_dir / "storage" / "local" / "template" / "iso" / "debian.iso"
    iso.parent.mkdir(parents=True, exist_ok=True)
    iso.write_bytes(b"\0" * 2048)
    vm.config.put(ide3="local:iso/debian.iso,media=cdrom")
    assert vm.config.get()["ide3"] == "local:iso/debian.iso,media=cdrom,size=2K"  # the size PVE finds
    vm.config.put(ide2="local-lvm:vm-101-cloudinit,media=cdrom")  # the VM's own cloud-init drive


def test_create_names_each_new_disk_as_pve(emulator):
    node = emulator.api().nodes(emulator.node)
    run(
        emulator,
        node.qemu.post(vmid=103, scsi0="local-lvm:4", efidisk0="local-lvm:1", tpmstate0="local-lvm:1"),
    )
    config = node.qemu(103).config.get()
    assert config["efidisk0"] == "local-lvm:vm-103-disk-0,size=4M"
    assert config["scsi0"] == "local-lvm:vm-103-disk-1,size=4G"
    assert config["tpmstate0"] == "local-lvm:vm-103-disk-2,size=4M"
    assert uuid.UUID(config["vmgenid"]).version == 4  # generated when not given
    root = emulator.api("ticket")  # vmgenid is root@pam's alone (an API token is refused)
    run(emulator, root.nodes(emulator.node).qemu.post(vmid=104, vmgenid="1"))
    assert uuid.UUID(node.qemu(104).config.get()["vmgenid"]).version == 4
    run(emulator, root.nodes(emulator.node).qemu.post(vmid=105, vmgenid="0"))
    assert node.qemu(105).config.get()["vmgenid"] == "0"


def test_pools_from_settings_and_membership_on_create_and_clone(make_emulator):
    lab = make_emulator(pools=[{"poolid": "lab", "comment": "the lab's VMs"}])
    api = lab.api()
    node = api.nodes(lab.node)
    run(lab, node.qemu(9000).clone.post(newid=101, pool="lab"))
    run(lab, node.qemu.post(vmid=102, pool="lab"))
    with pytest.raises(ResourceException) as err:
        node.qemu(9000).clone.post(newid=103, pool="nosuch")
    assert (err.value.status_code, err.value.content) == (403, "pool 'nosuch' does not exist")
    assert api.pools.get() == [{"poolid": "lab", "comment": "the lab's VMs"}]
    members = api.pools.get(poolid="lab")[0]["members"]
    assert [(m["id"], m["vmid"], m["type"]) for m in members] == [
        ("qemu/101", 101, "qemu"),
        ("qemu/102", 102, "qemu"),
    ]
    pooled = {r["vmid"]: r.get("pool") for r in api.cluster.resources.get(type="vm")}
    assert pooled == {9000: None, 101: "lab", 102: "lab"}
    run(lab, node.qemu(102).delete())
    assert [m["vmid"] for m in api.pools.get(poolid="lab")[0]["members"]] == [101]
