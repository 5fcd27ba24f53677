"""Node preparation against the lab's node container ``pve`` (10.77.0.2): root, systemd-nspawn."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ailab_deploy.adapters.nodeprep import NodeTarget, Snippet, prepare_node, render_vendor_data
from ailab_deploy.lab.network_constants import LAB_PROXY_URL

pytestmark = pytest.mark.vm


def test_snippet_upload_is_idempotent_and_lands_in_shared_storage(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the node container needs root")
    for tool in ("debootstrap", "systemd-nspawn", "nft", "ip"):
        assert shutil.which(tool), f"{tool} is not installed"
    from ailab_deploy.lab.containers import lab_down, lab_up

    lab_dir = tmp_path / "lab"
    infra = lab_up(lab_dir)
    try:
        node = infra.node
        assert node is not None
        target = NodeTarget(
            host=node.address, known_hosts=node.known_hosts, user=node.user, private_key=node.private_key
        )
        snippet = Snippet("ailab-vendor.yaml", render_vendor_data(LAB_PROXY_URL, []))

        first = prepare_node(target, [snippet])
        assert first.changed == ["/var/lib/vz/snippets/ailab-vendor.yaml"]
        # /var/lib/vz on the node is the emulator's storage dir: PVE's cicustom volume resolves there.
        assert (node.storage_dir / "snippets" / "ailab-vendor.yaml").read_text() == snippet.content

        second = prepare_node(target, [snippet])
        assert (second.changed, second.unchanged) == ([], ["/var/lib/vz/snippets/ailab-vendor.yaml"])

        changed = Snippet("ailab-vendor.yaml", render_vendor_data(None, []))
        assert prepare_node(target, [changed], dry_run=True).changed == [
            "/var/lib/vz/snippets/ailab-vendor.yaml"
        ]
        assert (node.storage_dir / "snippets" / "ailab-vendor.yaml").read_text() == snippet.content

        stranger = NodeTarget(
            host=node.address, known_hosts=tmp_path / "empty_known_hosts", private_key=node.private_key
        )
        stranger.known_hosts.write_text("")
        with pytest.raises(Exception, match="is not in"):  # strict host key checking: no trust on first use
            prepare_node(stranger, [snippet])
        assert stranger.known_hosts.read_text() == ""  # and nothing learnt

        # A node presenting another key than the recorded one (a man in the middle) is refused.
        other = ed25519.Ed25519PrivateKey.generate().public_key()
        openssh = other.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        stranger.known_hosts.write_text(f"{node.address} {openssh.decode()}\n")
        with pytest.raises(Exception, match="is not in"):
            prepare_node(stranger, [snippet])
    finally:
        lab_down(lab_dir, purge=True)
