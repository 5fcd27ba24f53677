"""Node preparation finds the snippets storage's directory in the node's storage config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.adapters.nodeprep import snippets_directory, storage_problems, storages_from_api
from ailab_deploy.errors import AilabError
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
    client = provisioner.client
    # what node preparation falls back on when the node's storage.cfg does not say: the API
    storages = storages_from_api(
        client.storages(), {"cloudinit-files": client.storage_config("cloudinit-files")}
    )

    directory = snippets_directory("cloudinit-files", None, storages)
    assert Path(directory) == tmp_path / "disks" / "ci-snippets" / "snippets"
    assert storage_problems(provisioner.plan, storages, "cloudinit-files") == []
    # ``local`` no longer holds snippets on this node: using it is a problem with its fix
    assert storage_problems(provisioner.plan, storages, "local") == [
        "storage 'local' does not allow snippets (needed for cloud-init snippets); "
        "enable it with `pvesm set local --content backup,import,iso,snippets,vztmpl`"
    ]
    # the node rows carry no path: without the storage's config there is no directory to use
    with pytest.raises(AilabError, match="'cloudinit-files' has no directory path for snippets"):
        snippets_directory("cloudinit-files", None, storages_from_api(client.storages()))
