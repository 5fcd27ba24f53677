"""The container backend in a cluster lab, without booting anything: where each VM's disk lives
(its node's local storage or the shared one) and what a migration does with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ailab_deploy.lab.backend import BackendError
from ailab_deploy.lab.containers.backend import ContainerBackend, create_backend
from ailab_deploy.lab.emulator.settings import load_settings

pytestmark = pytest.mark.lab

Placed = tuple[Path, dict[int, str], ContainerBackend]


@pytest.fixture
def placed(tmp_path: Path) -> Placed:
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    (lab_dir / "settings.json").write_text(json.dumps({"nodes": ["pve1", "pve2", "pve3"]}))
    rootfs = tmp_path / "template-rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/os-release").write_text("ID=debian\n")
    backend = create_backend(lab_dir, load_settings(lab_dir))
    backend._template_rootfs = rootfs
    nodes = {9000: "pve1", 101: "pve1", 102: "pve1"}
    backend.attach_cluster(nodes.__getitem__)
    backend.register_template(9000, {"scsi0": "shared:base-9000-disk-0,size=3G"})
    backend.clone(
        9000, 101, {"scsi0": "local-lvm:vm-101-disk-0,size=3G", "ide2": "shared:vm-101-cloudinit,media=cdrom"}
    )
    backend.clone(9000, 102, {"scsi0": "shared:base-9000-disk-0/vm-102-disk-0,size=3G"})
    return lab_dir, nodes, backend


def test_disks_live_on_their_node_or_on_shared_storage(placed: Placed) -> None:
    lab_dir, _, backend = placed
    assert backend.machine(9000).dir == lab_dir / "storage/shared/machines/9000"
    assert backend.machine(101).dir == lab_dir / "nodes/pve1/machines/101"
    assert backend.machine(102).dir == lab_dir / "storage/shared/machines/102"
    storages = backend._storages_on(101, "pve2")
    assert storages.dir("local") == lab_dir / "nodes/pve2/storage/local"
    assert storages.dir("shared") == lab_dir / "storage/shared"


def test_migration_moves_a_local_disk_with_its_data_and_leaves_a_shared_one(
    placed: Placed,
) -> None:
    lab_dir, nodes, backend = placed
    marker = lab_dir / "nodes/pve1/machines/101/upper/marker"
    marker.write_text("data")
    config = {"scsi0": "local-lvm:vm-101-disk-0,size=3G"}
    backend.migrate(101, "pve1", "pve2", config, False)
    nodes[101] = "pve2"
    assert (lab_dir / "nodes/pve2/machines/101/upper/marker").read_text() == "data"
    assert not (lab_dir / "nodes/pve1/machines/101").exists()
    backend.migrate(102, "pve1", "pve3", {"scsi0": "shared:base-9000-disk-0/vm-102-disk-0"}, False)
    nodes[102] = "pve3"
    assert backend.machine(102).dir == lab_dir / "storage/shared/machines/102"


def test_a_local_disk_is_not_reachable_from_another_node(placed: Placed) -> None:
    _, nodes, backend = placed
    nodes[101] = "pve3"  # as HA moves the config of a fenced node's VM
    with pytest.raises(BackendError, match=r"^VM 101 has no disk in the container lab$"):
        backend.start(101, {"name": "x"})
