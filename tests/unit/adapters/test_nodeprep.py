from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ailab_deploy.adapters.nodeprep import (
    NodeTarget,
    Snippet,
    cicustom_vendor,
    parse_storage_cfg,
    prepare_node,
    read_ca_certificates,
    render_vendor_data,
    storage_problems,
    storages_from_api,
    vendor_snippet,
)
from ailab_deploy.core.loader import load_plan
from ailab_deploy.errors import ConfigError

PLAN = Path(__file__).resolve().parents[3] / "tests" / "plans" / "valid-minimal.yaml"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydA==\n-----END CERTIFICATE-----"

STORAGE_CFG = """\
dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup

lvmthin: local-lvm
\tthinpool data
\tvgname pve
\tcontent rootdir,images

dir: spare
\tpath /mnt/spare
\tdisable
"""


def _cloud_config(text: str) -> dict[str, object]:
    assert text.startswith("#cloud-config\n")
    return dict(yaml.safe_load(text))


def test_vendor_data_with_proxy_and_ca() -> None:
    config = _cloud_config(render_vendor_data("http://10.77.0.1:8888", [PEM]))
    assert config["apt"] == {"http_proxy": "http://10.77.0.1:8888", "https_proxy": "http://10.77.0.1:8888"}
    assert config["ca_certs"] == {"trusted": [PEM + "\n"]}
    (pip_conf,) = config["write_files"]  # type: ignore[misc]
    assert pip_conf["path"] == "/etc/pip.conf"
    assert "proxy = http://10.77.0.1:8888" in pip_conf["content"]
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in pip_conf["content"]


def test_vendor_data_without_settings_is_an_empty_mapping() -> None:
    assert _cloud_config(render_vendor_data(None, [])) == {}


def test_vendor_data_is_deterministic() -> None:
    assert render_vendor_data("http://p:1", [PEM]) == render_vendor_data("http://p:1", [PEM])


def test_ca_files_are_read_relative_to_the_plan(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text(f"comment\n{PEM}\n")
    assert read_ca_certificates(["ca.pem"], tmp_path) == [PEM]
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        read_ca_certificates(["bad.pem"], tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        read_ca_certificates(["missing.pem"], tmp_path)


def test_vendor_snippet_of_a_plan() -> None:
    snippet = vendor_snippet(load_plan(PLAN).plan, PLAN.parent)
    assert snippet.volume == "local:snippets/ailab-vendor.yaml"
    assert cicustom_vendor(snippet) == "vendor=local:snippets/ailab-vendor.yaml"
    assert not snippet.holds_credentials
    assert Snippet("x.yaml", "proxy http://u:pw@proxy:3128").holds_credentials


def test_parse_storage_cfg() -> None:
    storages = parse_storage_cfg(STORAGE_CFG)
    assert storages["local"].content == {"iso", "vztmpl", "backup"}
    assert storages["local"].snippets_dir() == "/var/lib/vz/snippets"
    assert storages["local-lvm"].type == "lvmthin"
    assert storages["local-lvm"].snippets_dir() is None
    assert not storages["spare"].enabled
    assert storages["spare"].content == {"images", "rootdir"}  # PVE's default for dir storages


def test_storage_problems_say_what_to_enable() -> None:
    plan = load_plan(PLAN).plan  # VM and template disks on local-lvm
    problems = storage_problems(plan, parse_storage_cfg(STORAGE_CFG))
    assert problems == [
        "storage 'local' does not allow snippets (needed for cloud-init snippets); "
        "enable it with `pvesm set local --content backup,iso,snippets,vztmpl`"
    ]


def test_storage_problems_from_api_rows() -> None:
    plan = load_plan(PLAN).plan
    rows = [
        {"storage": "local", "type": "dir", "content": "iso,snippets", "enabled": 1},
        {"storage": "local-lvm", "type": "lvmthin", "content": "rootdir", "enabled": 0},
    ]
    assert storage_problems(plan, storages_from_api(rows)) == [
        "storage 'local-lvm' is disabled; enable it with `pvesm set local-lvm --disable 0`",
        "storage 'local-lvm' does not allow images (needed for VM disks); "
        "enable it with `pvesm set local-lvm --content images,rootdir`",
    ]
    assert storage_problems(plan, storages_from_api(rows[:1]))[0].startswith(
        "storage 'local-lvm' does not exist on node pve (it has: local)"
    )


def test_ssh_checks_host_keys_strictly(tmp_path: Path) -> None:
    plan_file = tmp_path / "vms.yaml"
    plan_file.write_text(
        PLAN.read_text().replace(
            "  node: pve\n", "  node: pve\n  ssh_host: 192.0.2.7\n  ssh_private_key_file: id\n"
        )
    )
    target = NodeTarget.from_plan(load_plan(plan_file), tmp_path)
    assert target.host == "192.0.2.7"  # ssh_host, not the API host
    data = target.pyinfra_data()
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert data["ssh_known_hosts_file"] == str(tmp_path / "known_hosts")
    assert (data["ssh_key"], data["ssh_allow_agent"], data["ssh_look_for_keys"]) == (
        str(tmp_path / "id"),
        False,
        False,
    )
    assert (data["ssh_user"], data["ssh_port"]) == ("root", 22)


def test_no_known_hosts_refuses_before_connecting(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is never contacted: the missing known_hosts stops it first.
    target = NodeTarget(host="192.0.2.1", known_hosts=tmp_path / "known_hosts")
    with pytest.raises(
        ConfigError, match=r"host key of 192\.0\.2\.1 is not in .*known_hosts; compare `ssh-keyscan"
    ):
        prepare_node(target, [])
