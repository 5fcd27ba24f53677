"""Parameter validation: PVE's 400 shape as proxmoxer surfaces it."""

from __future__ import annotations

import pytest
from proxmoxer import ResourceException

pytestmark = pytest.mark.lab

CASES = [
    ({"onboot": True}, "onboot", "type check ('boolean') failed - got 'True'"),
    ({"onboot": "yes"}, "onboot", "type check ('boolean') failed - got 'yes'"),
    ({"cores": "two"}, "cores", "type check ('integer') failed - got 'two'"),
    ({"cores": 0}, "cores", "value must have a minimum value of 1"),
    ({"name": "my_vm"}, "name", "invalid format - value does not look like a valid DNS name\n"),
    (
        {"bogus": 1},
        "bogus",
        "property is not defined in schema and the schema does not allow additional properties",
    ),
    (
        {"net0": "virtio,bridge=vmbr0,tag=5000"},
        "net0",
        "invalid format - format error\nnet0.tag: value must have a maximum value of 4094\n",
    ),
    (
        {"net0": "virtio,colour=blue"},
        "net0",
        "invalid format - invalid key in comma-separated list property: colour\n",
    ),
    (
        {"net0": "virtio=01:00:00:00:00:01"},
        "net0",
        "invalid format - format error\nnet0.macaddr: invalid format - value does not look like a "
        "valid unicast MAC address\n\n",
    ),
    (
        {"scsi1": "local-lvm:8,iothread=maybe"},
        "scsi1",
        "invalid format - format error\nscsi1.iothread: type check ('boolean') failed - got 'maybe'\n",
    ),
    (
        {"scsi1": "local-lvm:8,speed=fast"},
        "scsi1",
        "invalid format - invalid key in comma-separated list property: speed\n",
    ),
    (
        {"ipconfig0": "ip=10.0.0.5"},
        "ipconfig0",
        "invalid format - format error\nipconfig0.ip: invalid format - value does not look like a "
        "valid ipv4 network configuration\n\n",
    ),
    (
        {"ipconfig0": "ip=dhcp,gw=10.0.0.1"},
        "ipconfig0",
        "invalid format - gateway specified together with DHCP\n",
    ),
    (
        {"ipconfig0": "gw=10.0.0.1"},
        "ipconfig0",
        "invalid format - gateway specified without specifying an IP address\n",
    ),
    ({"tags": "ok,not!ok"}, "tags", "invalid format - invalid characters in tag\n"),
    (
        {"lock": "party"},
        "lock",
        "value 'party' does not have a value in the enumeration 'backup, clone, create, migrate, "
        "rollback, snapshot, snapshot-delete, suspending, suspended'",
    ),
]


@pytest.mark.parametrize(("params", "key", "message"), CASES)
def test_config_put_rejects_bad_values_with_pve_400(emulator, params, key, message):
    vm = emulator.api().nodes(emulator.node).qemu(9000)
    with pytest.raises(ResourceException) as err:
        vm.config.put(**params)
    assert err.value.status_code == 400
    assert err.value.status_message == "Bad Request"
    assert err.value.content == "Parameter verification failed."
    assert err.value.errors == {key: message}


def test_vmid_range(emulator):
    api = emulator.api()
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).qemu.post(vmid=99)
    # PVE checks the pve-vmid format before the minimum
    assert err.value.errors == {"vmid": "invalid format - value does not look like a valid VM ID\n"}
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).qemu("abc").config.get()
    assert err.value.errors == {"vmid": "type check ('integer') failed - got 'abc'"}
    with pytest.raises(ResourceException) as err:
        api.nodes(emulator.node).qemu.post()
    assert err.value.errors == {"vmid": "property is missing and it is not optional"}


def test_error_body_carries_message_and_errors(emulator):
    answer = emulator.http("PUT", f"/nodes/{emulator.node}/qemu/9000/config", data={"numa": "on"})
    assert (answer.status_code, answer.reason) == (400, "Parameter verification failed.")
    assert answer.json() == {
        "data": None,
        "errors": {"numa": "type check ('boolean') failed - got 'on'"},
        "message": "Parameter verification failed.\n",
    }


def test_str_of_proxmoxer_exception(emulator):
    with pytest.raises(ResourceException) as err:
        emulator.api().nodes(emulator.node).qemu(9000).config.put(full=True)
    assert str(err.value).startswith("400 Bad Request: Parameter verification failed. - {")


def test_tags_are_normalised(emulator):
    vm = emulator.api().nodes(emulator.node).qemu(9000)
    vm.config.put(tags="Web; db,web  llm")
    assert vm.config.get()["tags"] == "db;llm;web"


def test_property_string_booleans_accept_words_and_store_numbers(emulator):
    vm = emulator.api().nodes(emulator.node).qemu(9000)
    vm.config.put(net1="virtio,bridge=vmbr0,firewall=yes", agent="enabled=true")
    config = vm.config.get()
    assert config["net1"].endswith(",bridge=vmbr0,firewall=1")
    assert config["agent"] == "enabled=true"  # stored as given, like PVE


def test_bad_boot_order_and_balloon(emulator):
    vm = emulator.api().nodes(emulator.node).qemu(9000)
    with pytest.raises(ResourceException) as err:
        vm.config.put(boot="order=scsi0;virtio7")
    # PVE dies in the update itself (a 500), with its typo
    assert (err.value.status_code, err.value.content) == (
        500,
        "invalid bootorder: device 'virtio7' does not exist'",
    )
    with pytest.raises(ResourceException) as err:
        vm.config.put(balloon=4096)
    assert err.value.content == "balloon value too large (must be smaller than assigned memory)"


def test_skiplock_is_root_only(emulator):
    vm = emulator.api().nodes(emulator.node).qemu(9000)
    with pytest.raises(ResourceException) as err:
        vm.config.put(description="x", skiplock=1)
    assert err.value.errors == {"skiplock": "Only root may use this option."}
    assert (
        emulator.api("ticket").nodes(emulator.node).qemu(9000).config.put(description="x", skiplock=1) is None
    )


def test_a_parameter_the_url_already_sets_is_refused(emulator):
    answer = emulator.http(
        "PUT", f"/nodes/{emulator.node}/qemu/9000/config", data={"vmid": "9000", "cores": "2"}
    )
    assert answer.status_code == 400
    assert answer.json()["errors"] == {"vmid": "duplicate parameter (already defined in URI)"}
