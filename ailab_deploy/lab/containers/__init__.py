"""Container VMs for the lab: template image, bridge, proxy, node and the VM backend."""

from ailab_deploy.lab.containers.backend import ContainerBackend
from ailab_deploy.lab.containers.cleanup import lab_down, leftovers
from ailab_deploy.lab.containers.infra import LabInfra, lab_up

__all__ = ["ContainerBackend", "LabInfra", "lab_down", "lab_up", "leftovers"]
