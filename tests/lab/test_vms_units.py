"""Container-lab logic that needs no root: cloud-init data, agent shape, recipe keys, proxy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest

from ailab_deploy.errors import ConfigError, LabError
from ailab_deploy.lab.backend import BackendError
from ailab_deploy.lab.containers import image, proxy
from ailab_deploy.lab.containers.backend import agent_interfaces, create_backend
from ailab_deploy.lab.containers.cloudinit import Storages, render_seed, write_seed
from ailab_deploy.lab.containers.provision import install_host_ca
from ailab_deploy.lab.emulator.settings import load_settings

KEYS = "ssh-ed25519 AAAAC3Nza+/= a@b\nssh-ed25519 AAAAC3Nzb c@d"
CONFIG = {
    "name": "postgres",
    "ciuser": "ailab",
    "sshkeys": quote(KEYS, safe=""),
    "ipconfig0": "ip=10.77.0.10/24,gw=10.77.0.1",
    "nameserver": "10.77.0.1",
    "searchdomain": "lab.test",
    "net0": "virtio=BC:24:11:2A:3B:4C,bridge=ailab0,firewall=1",
    "cipassword": "**********",
}


def _cloud_config(text: str) -> dict[str, Any]:
    header, _, body = text.partition("\n")
    assert header == "#cloud-config"
    data: dict[str, Any] = json.loads(body)
    return data


def test_user_data_follows_pve(tmp_path: Path) -> None:
    user = _cloud_config(render_seed(100, CONFIG, Storages(tmp_path)).user_data)
    assert user["hostname"] == "postgres"
    assert user["fqdn"] == "postgres.lab.test"
    assert user["user"] == "ailab"
    assert user["users"] == ["default"]
    assert user["ssh_authorized_keys"] == KEYS.splitlines()  # percent-decoded, one per line
    assert "password" not in user  # GET config masks it: nothing usable to pass on
    assert "package_upgrade" not in user


def test_root_user_keeps_its_keys_like_pve(tmp_path: Path) -> None:
    user = _cloud_config(render_seed(100, {**CONFIG, "ciuser": "root"}, Storages(tmp_path)).user_data)
    assert user["disable_root"] is False
    assert "users" not in user


def test_network_config_is_static_with_dns(tmp_path: Path) -> None:
    network = json.loads(render_seed(100, CONFIG, Storages(tmp_path)).network_config)
    assert network["version"] == 1
    eth0, dns = network["config"]
    assert eth0["name"] == "eth0"
    assert eth0["subnets"] == [
        {"type": "static", "address": "10.77.0.10", "netmask": "255.255.255.0", "gateway": "10.77.0.1"}
    ]
    assert dns == {"type": "nameserver", "address": ["10.77.0.1"], "search": ["lab.test"]}


def test_dhcp_and_invalid_ipconfig(tmp_path: Path) -> None:
    network = json.loads(render_seed(1, {"ipconfig0": "ip=dhcp"}, Storages(tmp_path)).network_config)
    assert network["config"][0]["subnets"] == [{"type": "dhcp4"}]
    with pytest.raises(BackendError, match="invalid ip"):
        render_seed(1, {"ipconfig0": "ip=10.77.0.300/24"}, Storages(tmp_path))


def test_instance_id_changes_with_config_only(tmp_path: Path) -> None:
    first = render_seed(100, CONFIG, Storages(tmp_path)).meta_data
    assert first == render_seed(100, dict(CONFIG), Storages(tmp_path)).meta_data
    changed = render_seed(100, {**CONFIG, "ipconfig0": "ip=10.77.0.11/24"}, Storages(tmp_path)).meta_data
    assert first.startswith("instance-id: ") and changed != first


def test_cicustom_snippet_replaces_user_data(tmp_path: Path) -> None:
    snippets = tmp_path / "local" / "snippets"
    snippets.mkdir(parents=True)
    (snippets / "u.yaml").write_text("#cloud-config\nruncmd: [true]\n")
    config = {**CONFIG, "cicustom": "user=local:snippets/u.yaml"}
    seed = render_seed(100, config, Storages(tmp_path))
    assert seed.user_data == "#cloud-config\nruncmd: [true]\n"
    assert "10.77.0.10" in seed.network_config  # the other parts stay generated
    with pytest.raises(BackendError, match=r"volume 'local:snippets/missing\.yaml' does not exist"):
        render_seed(100, {"cicustom": "user=local:snippets/missing.yaml"}, Storages(tmp_path))
    with pytest.raises(BackendError, match="unable to parse volume"):
        render_seed(100, {"cicustom": "user=local:../../etc/passwd"}, Storages(tmp_path))


def test_write_seed_replaces_stale_parts(tmp_path: Path) -> None:
    seed = render_seed(100, CONFIG, Storages(tmp_path))
    write_seed(tmp_path, dataclasses.replace(seed, vendor_data="#cloud-config\n{}\n"))
    write_seed(tmp_path, seed)
    files = sorted(p.name for p in (tmp_path / "var/lib/cloud/seed/nocloud").iterdir())
    assert files == ["meta-data", "network-config", "user-data"]


def test_agent_shape_from_ip_json() -> None:
    ip_json = [
        {
            "ifname": "eth0",
            "address": "bc:24:11:2a:3b:4c",
            "addr_info": [{"family": "inet", "local": "10.77.0.10", "prefixlen": 24}],
            "stats64": {
                "rx": {"bytes": 1, "packets": 2, "errors": 3, "dropped": 4},
                "tx": {"bytes": 5, "packets": 6, "errors": 7, "dropped": 8},
            },
        }
    ]
    assert agent_interfaces(ip_json) == [
        {
            "name": "eth0",
            "hardware-address": "bc:24:11:2a:3b:4c",
            "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.77.0.10", "prefix": 24}],
            "statistics": {
                "rx-bytes": 1,
                "rx-packets": 2,
                "rx-errs": 3,
                "rx-dropped": 4,
                "tx-bytes": 5,
                "tx-packets": 6,
                "tx-errs": 7,
                "tx-dropped": 8,
            },
        }
    ]


def test_recipe_keys_track_their_stage() -> None:
    recipe = image.Recipe(suite="bookworm", mirror="http://m/debian", security_mirror=None)
    more = dataclasses.replace(recipe, packages=(*recipe.packages, "vim"))
    config = dataclasses.replace(recipe, files={"/etc/x": "y"})
    assert more.base_key() != recipe.base_key() and more.template_key() != recipe.template_key()
    assert config.base_key() == recipe.base_key()  # a config change reuses the download
    assert config.template_key() != recipe.template_key()


def test_each_release_has_its_own_cached_stages() -> None:
    trixie = image.Recipe(suite="trixie", mirror="http://m/debian", security_mirror=None)
    bookworm = dataclasses.replace(trixie, suite="bookworm")
    assert trixie.base_key() != bookworm.base_key()
    assert trixie.template_key() != bookworm.template_key()


def test_debian_13_guests_get_deb822_sources_and_no_sources_list() -> None:
    files = image.apt_sources(13, "http://m/debian", "http://m/debian-security")
    assert list(files) == ["/etc/apt/sources.list.d/debian.sources"]
    text = files["/etc/apt/sources.list.d/debian.sources"]
    stanzas = [dict(line.split(": ", 1) for line in stanza.splitlines()) for stanza in text.split("\n\n")]
    assert [(s["URIs"], s["Suites"]) for s in stanzas] == [
        ("http://m/debian", "trixie trixie-updates"),
        ("http://m/debian-security", "trixie-security"),
    ]
    assert image.default_recipe(13).removed_files == ("/etc/apt/sources.list",)


def test_debian_12_guests_keep_one_line_sources() -> None:
    files = image.apt_sources(12, "http://m/debian", None)
    lines = ["deb http://m/debian bookworm main", "deb http://m/debian bookworm-updates main"]
    assert files == {"/etc/apt/sources.list": "\n".join(lines) + "\n"}
    assert image.default_recipe(12).removed_files == ()


def test_a_release_the_lab_cannot_build_is_refused() -> None:
    with pytest.raises(LabError, match=r"^Debian 11 is not a release the lab builds \(releases: 13, 12\)$"):
        image.suite_of(11)


def test_host_mirrors_read_deb822(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    monkeypatch.setattr(image, "HOST_SOURCES", (sources, tmp_path / "sources.list"))
    assert image.host_mirrors() == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )


def test_proxy_listens_on_the_bridge_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    config = proxy.render_config(proxy.upstream_from_env())
    assert "Listen 10.77.0.1\n" in config and "Allow 10.77.0.0/24\n" in config
    assert "Upstream" not in config
    monkeypatch.setenv("https_proxy", "http://corp-proxy.example:3128")
    assert "Upstream http corp-proxy.example:3128\n" in proxy.render_config(proxy.upstream_from_env())


CERT_A = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
CERT_B = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"


def test_host_ca_is_added_once(tmp_path: Path) -> None:
    host_bundle = tmp_path / "host.crt"
    host_bundle.write_text(f"{CERT_A}\n{CERT_B}\n")
    rootfs = tmp_path / "rootfs"
    guest_bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
    guest_bundle.parent.mkdir(parents=True)
    guest_bundle.write_text(f"{CERT_A}\n")
    assert install_host_ca(rootfs, host_bundle) == 1
    assert install_host_ca(rootfs, host_bundle) == 0
    assert guest_bundle.read_text() == f"{CERT_A}\n{CERT_B}\n"
    local = list((rootfs / "usr/local/share/ca-certificates/ailab-host").iterdir())
    assert [p.read_text() for p in local] == [f"{CERT_B}\n"]


def test_snippets_follow_the_emulators_storage_paths(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "snippets").mkdir(parents=True)
    (elsewhere / "snippets" / "u.yaml").write_text("#cloud-config\n{}\n")
    settings = SimpleNamespace(
        storages=[
            SimpleNamespace(storage="local", path=elsewhere),
            SimpleNamespace(storage="local-lvm", path=None),
        ]
    )
    backend = create_backend(tmp_path / "lab", settings)
    assert backend.storages.dir("local") == elsewhere
    assert backend.storages.dir("local-lvm") == tmp_path / "lab" / "storage" / "local-lvm"
    seed = render_seed(1, {"cicustom": "user=local:snippets/u.yaml"}, backend.storages)
    assert seed.user_data == "#cloud-config\n{}\n"


def test_the_emulators_release_setting_reaches_the_backend_and_the_template_name(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "settings.json").write_text(json.dumps({"debian_release": 12}))
    settings = load_settings(lab)
    assert settings.template is not None and settings.template["name"] == "debian-12-cloud"
    assert create_backend(lab, settings).debian_release == 12
    (lab / "settings.json").write_text(json.dumps({}))
    default = load_settings(lab)
    assert default.debian_release == 13 and default.template is not None
    assert default.template["name"] == "debian-13-cloud"
    (lab / "settings.json").write_text(json.dumps({"debian_release": 11}))
    with pytest.raises(ConfigError, match=r"debian_release 11 is not a release the lab builds \(13, 12\)"):
        load_settings(lab)
