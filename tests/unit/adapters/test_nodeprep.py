from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.common import AUTH_FAILED, AUTH_SUCCESSFUL

from ailab_deploy.adapters.nodeprep import (
    NodeSession,
    NodeTarget,
    Snippet,
    cicustom_vendor,
    parse_storage_cfg,
    prepare_node,
    read_ca_certificates,
    render_vendor_data,
    snippets_directory,
    storage_problems,
    storages_from_api,
    vendor_snippet,
)
from ailab_deploy.core.loader import load_plan
from ailab_deploy.errors import AilabError, ConfigError

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
    apt = dict(config["apt"])  # type: ignore[call-overload]
    conf = apt.pop("conf")
    assert apt == {"http_proxy": "http://10.77.0.1:8888", "https_proxy": "http://10.77.0.1:8888"}
    assert 'Acquire::http::Pipeline-Depth "0";' in conf.splitlines()
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


def test_target_from_plan_uses_the_ssh_host_and_only_the_named_key(tmp_path: Path) -> None:
    plan_file = tmp_path / "vms.yaml"
    plan_file.write_text(
        PLAN.read_text().replace(
            "  node: pve\n", "  node: pve\n  ssh_host: 192.0.2.7\n  ssh_private_key_file: id\n"
        )
    )
    target = NodeTarget.from_plan(load_plan(plan_file), tmp_path)
    assert (target.host, target.user, target.port) == ("192.0.2.7", "root", 22)  # ssh_host, not the API host
    assert (target.known_hosts, target.private_key) == (tmp_path / "known_hosts", tmp_path / "id")


class _LoopbackSshd(paramiko.ServerInterface):
    """An SSH server on 127.0.0.1 that lets ``allowed`` in and records the keys clients offer."""

    def __init__(self, host_key: paramiko.PKey, allowed: paramiko.PKey) -> None:
        self.host_key, self.allowed = host_key, allowed
        self.offered: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(connection)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=self)
            except (paramiko.SSHException, EOFError):
                continue

    def close(self) -> None:
        self.listener.close()
        for transport in self.transports:
            transport.close()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.offered.append(key.get_base64())
        if username == "root" and key.get_base64() == self.allowed.get_base64():
            return AUTH_SUCCESSFUL
        return AUTH_FAILED


def _ed25519(path: Path) -> paramiko.PKey:
    private = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return paramiko.Ed25519Key(filename=str(path))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[_LoopbackSshd]:
    server = _LoopbackSshd(_ed25519(tmp_path / "host_key"), _ed25519(tmp_path / "client_key"))
    yield server
    server.close()


def _target(sshd: _LoopbackSshd, tmp_path: Path, *known: paramiko.PKey) -> NodeTarget:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        "".join(f"[127.0.0.1]:{sshd.port} {k.get_name()} {k.get_base64()}\n" for k in known)
    )
    return NodeTarget(
        host="127.0.0.1", port=sshd.port, known_hosts=known_hosts, private_key=tmp_path / "client_key"
    )


def test_ssh_connects_when_the_host_key_is_known_offering_only_the_named_key(
    sshd: _LoopbackSshd, tmp_path: Path
) -> None:
    NodeSession(_target(sshd, tmp_path, sshd.host_key)).close()
    assert sshd.offered == [sshd.allowed.get_base64()]  # no agent or ~/.ssh key offered


def test_ssh_refuses_an_unknown_host_key_without_learning_it(sshd: _LoopbackSshd, tmp_path: Path) -> None:
    target = _target(sshd, tmp_path)  # known_hosts exists but lists no key for the node
    with pytest.raises(AilabError, match=r"host key of 127\.0\.0\.1 is not in"):
        prepare_node(target, [])
    assert len(sshd.transports) == 1  # it did reach the server
    assert target.known_hosts.read_text() == ""  # no trust on first use
    assert sshd.offered == []  # refused before authenticating


def test_ssh_refuses_a_changed_host_key(sshd: _LoopbackSshd, tmp_path: Path) -> None:
    other = _ed25519(tmp_path / "other_host_key")
    with pytest.raises(AilabError, match=r"host key of 127\.0\.0\.1 is not in"):
        prepare_node(_target(sshd, tmp_path, other), [])
    assert len(sshd.transports) == 1
    assert sshd.offered == []


def test_no_known_hosts_refuses_before_connecting(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is never contacted: the missing known_hosts stops it first.
    target = NodeTarget(host="192.0.2.1", known_hosts=tmp_path / "known_hosts")
    with pytest.raises(
        ConfigError, match=r"host key of 192\.0\.2\.1 is not in .*known_hosts; compare `ssh-keyscan"
    ):
        prepare_node(target, [])


def test_snippets_directory_comes_from_the_storage_config_never_a_guess() -> None:
    node = parse_storage_cfg(STORAGE_CFG + "\ndir: snip\n\tpath /srv/pve-snip\n\tcontent snippets\n")
    api = storages_from_api(
        [{"storage": "snip", "type": "dir", "content": "snippets"}], {"snip": {"path": "/elsewhere"}}
    )
    assert snippets_directory("snip", node, api) == "/srv/pve-snip/snippets"  # the node's own file first
    assert snippets_directory("snip", None, api) == "/elsewhere/snippets"
    # ``local`` without a path in any config is not assumed to be /var/lib/vz
    rows = [{"storage": "local", "type": "dir", "content": "snippets"}]
    with pytest.raises(AilabError, match=r"storage 'local' has no directory path for snippets \(type dir"):
        snippets_directory("local", None, storages_from_api(rows))
    with pytest.raises(AilabError, match=r"'local-lvm' has no directory path .*type lvmthin"):
        snippets_directory("local-lvm", node, None)
    with pytest.raises(AilabError, match=r"'nowhere' has no directory path .* in the node's storage config"):
        snippets_directory("nowhere", node, api)
