"""What ``ailab-deploy lab up`` / ``lab down`` call for the container side of the lab."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ailab_deploy.lab.containers import network, proxy
from ailab_deploy.lab.containers.cleanup import lab_down
from ailab_deploy.lab.containers.image import DEFAULT_RELEASE, TemplateImage, build_template
from ailab_deploy.lab.containers.node import NodeInfo, node_up
from ailab_deploy.lab.containers.provision import HOST_CA_BUNDLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabInfra:
    bridge: str
    gateway: str
    proxy_url: str
    template: TemplateImage
    node: NodeInfo | None


def lab_up(
    lab_dir: Path,
    *,
    image_cache: Path | None = None,
    with_node: bool = True,
    trust_host_ca: bool = True,
    node_storage_dir: Path | None = None,
    debian_release: int = DEFAULT_RELEASE,
) -> LabInfra:
    """Bridge + firewall, tinyproxy, template image (cached), node container. Idempotent.

    ``node_storage_dir`` is the emulator's ``local`` storage dir if its settings moved it
    (default <lab-dir>/storage/local); the node sees it at /var/lib/vz.
    """
    lab_dir = Path(lab_dir)
    network.claim(lab_dir)
    network.bridge_up()
    proxy_url = proxy.proxy_up(lab_dir)
    template = build_template(image_cache, release=debian_release)
    node = None
    if with_node:
        node = node_up(lab_dir, template.rootfs, host_ca_bundle=HOST_CA_BUNDLE if trust_host_ca else None)
    return LabInfra(network.BRIDGE, network.GATEWAY, proxy_url, template, node)


__all__ = ["LabInfra", "lab_down", "lab_up"]
