"""What ``ailab-deploy lab up`` / ``lab down`` call for the container side of the lab."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ailab_deploy.lab.containers import network, proxy
from ailab_deploy.lab.containers.cleanup import clear_abandoned_lab, lab_down
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
    cluster: tuple[NodeInfo, ...] = ()  # every node of a cluster lab, the first one is ``node``


def lab_up(
    lab_dir: Path,
    *,
    image_cache: Path | None = None,
    with_node: bool = True,
    trust_host_ca: bool = True,
    node_storage_dir: Path | None = None,
    cluster: list[tuple[str, str]] | None = None,
    debian_release: int = DEFAULT_RELEASE,
) -> LabInfra:
    """Bridge + firewall, tinyproxy, template image (cached), node container. Idempotent.

    ``node_storage_dir`` is the emulator's ``local`` storage dir if its settings moved it
    (default <lab-dir>/storage/local); the node sees it at /var/lib/vz.
    """
    lab_dir = Path(lab_dir)
    clear_abandoned_lab(lab_dir)
    network.claim(lab_dir)
    network.bridge_up()
    proxy_url = proxy.proxy_up(lab_dir)
    template = build_template(image_cache, release=debian_release)
    node = None
    ca = HOST_CA_BUNDLE if trust_host_ca else None
    if with_node and cluster:
        nodes = tuple(
            cluster_node_up(lab_dir, template.rootfs, name, address, ca) for name, address in cluster
        )
        return LabInfra(network.BRIDGE, network.GATEWAY, proxy_url, template, nodes[0], nodes)
    if with_node:
        node = node_up(lab_dir, template.rootfs, host_ca_bundle=ca)
    return LabInfra(network.BRIDGE, network.GATEWAY, proxy_url, template, node)


def cluster_node_up(
    lab_dir: Path,
    template_rootfs: Path,
    name: str,
    address: str,
    host_ca_bundle: Path | None = HOST_CA_BUNDLE,
) -> NodeInfo:
    """One node of a cluster lab: its own ``local`` storage (<lab>/nodes/<name>/storage/local, as
    the emulator places a cluster node's local files) and the shared storage at /mnt/pve/shared."""
    return node_up(
        lab_dir,
        template_rootfs,
        host_ca_bundle=host_ca_bundle,
        storage_dir=lab_dir / "nodes" / name / "storage" / "local",
        name=name,
        address=address,
        shared_dir=lab_dir / "storage" / "shared",
    )


__all__ = ["LabInfra", "lab_down", "lab_up"]
