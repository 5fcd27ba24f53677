"""The lab's vzdump archives: a zstd-compressed tar holding the VM's config and, when the
backend has one, its disk.

A real node writes VMA (QEMU's backup format: config files plus raw disk images); the lab's
VMs are overlay layers, so their archive carries the layer instead. The layout:

    qemu-server.conf    the VM's config as PVE writes it (``key: value`` lines)
    disk/...            the backend's disk files (containers: the overlay's upper layer)
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

CONFIG_MEMBER = "qemu-server.conf"
DISK_PREFIX = "disk"
# owners as numbers, ACLs and every xattr: the overlay's opaque directories are trusted.* xattrs
KEEP_METADATA = ("--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner")


class ArchiveError(Exception):
    """The archive cannot be written or read; the message says which and why."""


def _tar(argv: Sequence[str], what: str) -> str:
    result = subprocess.run(["tar", *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ArchiveError(f"{what}: {lines[0] if lines else f'tar exited {result.returncode}'}")
    return result.stdout


def config_text(conf: Mapping[str, str]) -> str:
    """The config as qemu-server writes it: ``key: value`` lines, sorted (description first)."""
    lines = [f"#{line}" for line in str(conf.get("description", "")).splitlines()]
    lines += [f"{key}: {value}" for key, value in sorted(conf.items()) if key != "description"]
    return "\n".join(lines) + "\n"


def parse_config(text: str) -> dict[str, str]:
    conf: dict[str, str] = {}
    description = []
    for line in text.splitlines():
        if line.startswith("#"):
            description.append(line[1:])
        elif line.startswith("["):
            break  # a snapshot section: the archive restores the current state only
        elif ": " in line:
            key, value = line.split(": ", 1)
            conf[key] = value
    if description:
        conf["description"] = "\n".join(description)
    return conf


def write(
    target: Path, conf: Mapping[str, str], disk_dir: Path | None = None, members: Sequence[str] = ()
) -> None:
    """Write ``target`` (config and ``members`` of ``disk_dir``) through a temporary name."""
    partial = target.with_name(f".{target.name}.tmp")
    with tempfile.TemporaryDirectory(prefix="vzdump-", dir=target.parent) as staging:
        (Path(staging) / CONFIG_MEMBER).write_text(config_text(conf))
        argv = ["--zstd", "-cf", str(partial), "-C", staging, CONFIG_MEMBER]
        if disk_dir is not None and members:
            # --transform puts the disk files under disk/ without copying them first; it applies to
            # every member, so it names the disk's members (the config stays at the top)
            names = "\\|".join(members)
            argv += [
                *KEEP_METADATA,
                "--sparse",
                "-C",
                str(disk_dir),
                f"--transform=s,^\\({names}\\)\\(/\\|$\\),{DISK_PREFIX}/\\1\\2,",
                *members,
            ]
        try:
            _tar(argv, f"writing {target.name}")
        except ArchiveError:
            partial.unlink(missing_ok=True)
            raise
    partial.chmod(0o600)  # it holds the whole VM, secrets included
    partial.replace(target)


def read_config(archive: Path) -> dict[str, str]:
    """The VM config stored in ``archive``."""
    # the config is the first member: no need to read the disk behind it
    text = _tar(["--zstd", "-xOf", str(archive), "--occurrence=1", CONFIG_MEMBER], f"reading {archive.name}")
    conf = parse_config(text)
    if not conf:
        raise ArchiveError(f"{archive.name}: no VM configuration in the archive")
    return conf


def extract_disk(archive: Path, destination: Path) -> None:
    """The archive's disk files into ``destination`` (without the ``disk/`` prefix)."""
    destination.mkdir(parents=True, exist_ok=True)
    _tar(
        ["--zstd", "-xf", str(archive), "-C", str(destination), *KEEP_METADATA,
         "--strip-components=1", "--wildcards", f"{DISK_PREFIX}/*"],
        f"extracting the disk of {archive.name}",
    )  # fmt: skip


def verify_readable(archive: Path) -> None:
    """Read the whole archive (zstd frame checksums, tar headers): a damaged one fails here."""
    _tar(["--zstd", "-tf", str(archive)], f"checking {archive.name}")
