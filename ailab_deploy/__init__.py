"""ailab-deploy: a bare Proxmox VE server to a verified AI lab, declaratively."""

__version__ = "0.1.0"
