"""Node preparation finds the snippets storage's directory in the node's storage config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.adapters.nodeprep import snippets_directory, storage_problems
from tests.lab.provision_fixtures import make_engine

pytestmark = pytest.mark.lab

LAB_STORAGE_CFG = """\
dir: local
\tpath {root}/local
\tcontent iso,vztmpl,backup,import

lvmthin: local-lvm
\tthinpool data
\tvgname pve
\tcontent rootdir,images

dir: HDDStorage
\tpath {root}/hdd
\tcontent images,rootdir,backup

dir: cloudinit-files
\tpath {root}/ci-snippets
\tcontent snippets
"""


def test_a_non_default_snippets_storage_is_found_at_its_configured_path(
    make_emulator: Any, tmp_path: Path
) -> None:
    lab = make_emulator()
    lab.stop()
    (lab.lab_dir / "storage.cfg").write_text(LAB_STORAGE_CFG.format(root=tmp_path / "disks"))
    lab.restart()
    engine = make_engine(lab, tmp_path)
    plan_text = engine.plan_path.read_text()
    engine.plan_path.write_text(
        plan_text.replace(
            "  prepare_node: false", "  prepare_node: true\n  snippets_storage: cloudinit-files"
        )
    )
    provisioner = engine.provisioner()
    storages = provisioner._node_storages()

    directory = snippets_directory("cloudinit-files", None, storages)
    assert Path(directory) == tmp_path / "disks" / "ci-snippets" / "snippets"
    assert storage_problems(provisioner.plan, storages, "cloudinit-files") == []
    # ``local`` no longer holds snippets on this node: using it is a problem with its fix
    assert storage_problems(provisioner.plan, storages, "local") == [
        "storage 'local' does not allow snippets (needed for cloud-init snippets); "
        "enable it with `pvesm set local --content backup,import,iso,snippets,vztmpl`"
    ]
    # Only the snippets storage's own config is read, once
    kinds = provisioner.client.stats.as_dict()["by_kind"]
    assert kinds["GET storage/cloudinit-files"] == 1
    assert not any(k.startswith("GET storage/local") for k in kinds)
