"""Which config changes PVE applies to a running VM at once and which wait in [PENDING].

The decisions of qemu-server's vmconfig_hotplug_pending (and vmconfig_update_disk/_net/_agent):
fast-plug keys and cloud-init keys always; devices as the VM's ``hotplug`` features allow.
"""

from __future__ import annotations

import re

from . import propstr

FAST_PLUG = {
    "description",
    "hookscript",
    "lock",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "onboot",
    "protection",
    "shares",
    "startup",
    "tags",
    "vmstatestorage",
}
CLOUDINIT = {
    "cicustom",
    "cipassword",
    "citype",
    "ciupgrade",
    "ciuser",
    "nameserver",
    "searchdomain",
    "sshkeys",
}
DEFAULT_FEATURES = "network,disk,usb"
# a drive change among these needs a restart even with disk hotplug
_DRIVE_RESTART_KEYS = ("aio", "discard", "iothread", "queues", "product", "cache", "ssd", "vendor", "ro")
_NET_REPLUG_KEYS = ("model", "macaddr", "queues", "mtu")


def features(conf: dict[str, str]) -> set[str]:
    """The VM's hotplug features: '1' means the default set, '0' none."""
    value = conf.get("hotplug", "1")
    if value == "1":
        value = DEFAULT_FEATURES
    if value == "0":
        return set()
    return {item for item in value.split(",") if item}


def _fast(key: str) -> bool:
    return key in FAST_PLUG or key in CLOUDINIT or re.fullmatch(r"ipconfig\d+", key) is not None


def _usb_hotplug(conf: dict[str, str]) -> bool:
    # machine version >= 7.1 is a given for the lab's QEMU; the guest must be Linux or Windows > 7
    return "usb" in features(conf) and conf.get("ostype") in ("l26", "win8", "win10", "win11")


def _parsed(key: str, value: str | None, fmt: dict[str, propstr.Sub]) -> dict[str, str]:
    if not value:
        return {}
    try:
        return propstr.parse(value, fmt, key)
    except propstr.FormatError:
        return {}


def _drive_live(key: str, value: str, conf: dict[str, str]) -> bool:
    if key in ("efidisk0", "tpmstate0"):
        return False
    hotplug = "disk" in features(conf)
    old = _parsed(key, conf.get(key), propstr.DRIVE_FORMAT)
    new = _parsed(key, value, propstr.DRIVE_FORMAT)
    if old:
        if new.get("media", "disk") != old.get("media", "disk"):
            return False  # PVE: "unable to change media type" (stays pending)
        if propstr.is_cdrom(old):
            return True  # a medium change
        if new.get("file") != old.get("file"):
            return hotplug
        return not any(new.get(k) != old.get(k) for k in _DRIVE_RESTART_KEYS)
    return hotplug and not re.match(r"(ide|sata)\d+$", key)


def _net_live(key: str, value: str, conf: dict[str, str]) -> bool:
    hotplug = "network" in features(conf)
    old = _parsed(key, conf.get(key), propstr.NET_FORMAT)
    if not old:
        return hotplug
    new = _parsed(key, value, propstr.NET_FORMAT)
    if any(new.get(k) != old.get(k) for k in _NET_REPLUG_KEYS):
        return hotplug
    return True


def _agent_live(value: str, conf: dict[str, str]) -> bool:
    if not conf.get("agent"):
        return False
    old = _parsed("agent", conf["agent"], propstr.AGENT_FORMAT)
    new = _parsed("agent", value, propstr.AGENT_FORMAT)
    keys = (set(old) | set(new)) - {"fstrim_cloned_disks"}
    return all(old.get(k) == new.get(k) for k in keys)


def _common(key: str, conf: dict[str, str]) -> bool | None:
    """The rules setting and deleting share; None for keys decided by the operation."""
    feats = features(conf)
    if _fast(key) or key in ("cpuunits", "cpulimit"):
        return True
    if key == "tablet":
        return "usb" in feats
    if re.fullmatch(r"usb\d+", key):
        return _usb_hotplug(conf)
    if key == "vcpus":
        return "cpu" in feats
    if key == "memory":
        return "memory" in feats
    return None


def set_live(key: str, value: str, conf: dict[str, str]) -> bool:
    """Setting ``key`` on a running VM takes effect now (else it waits in [PENDING])."""
    common = _common(key, conf)
    if common is not None:
        return common
    if key == "hotplug":
        return not re.search(r"memory|cpu", value) and not re.search(r"memory|cpu", conf.get("hotplug", ""))
    if key == "balloon":
        old_on = conf.get("balloon", "1") != "0"
        return old_on == (value != "0")
    if re.fullmatch(r"net\d+", key):
        return _net_live(key, value, conf)
    if propstr.is_drive_key(key):
        return _drive_live(key, value, conf)
    if key == "agent":
        return _agent_live(value, conf)
    return False


def delete_live(key: str, conf: dict[str, str]) -> bool:
    """Deleting ``key`` from a running VM takes effect now (else a pending delete)."""
    common = _common(key, conf)
    if common is not None:
        return common
    feats = features(conf)
    if re.fullmatch(r"unused\d+", key):
        return True
    if key == "hotplug":
        return not re.search(r"memory|cpu", conf.get("hotplug", ""))
    if key == "balloon":
        return conf.get("balloon") != "0"
    if re.fullmatch(r"net\d+", key):
        return "network" in feats
    if propstr.is_drive_key(key):
        return "disk" in feats and not re.match(r"(efidisk|ide|sata|tpmstate)\d+$", key)
    return False
