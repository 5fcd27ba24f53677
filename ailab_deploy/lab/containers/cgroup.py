"""Each lab machine in a cgroup of its own.

Without a host systemd to ask for a scope (``--keep-unit``), systemd-nspawn puts the guest in
``<nspawn's own cgroup>/payload``. Every machine started from one process would share that
cgroup, so each guest's systemd would find the other guests' processes in its own units'
cgroups (``user@1000.service`` of every guest is the same directory): a unit stopping in one
guest never becomes empty, and a guest's shutdown (a reboot from inside) waits out the unit's
stop timeout. So the supervisor moves itself, before starting nspawn, into a cgroup of the
machine's own below its current one (``lab-machine-<nspawn's --machine>``) in each hierarchy
systemd tracks processes in: cgroup2, and the named v1 ``systemd`` hierarchy of a hybrid host.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "lab-machine-"  # unlike any unit name a guest gives its own cgroups
NAMED_SYSTEMD = "name=systemd"
UNIFIED = ""  # the hierarchy of cgroup2 in /proc/<pid>/cgroup ("0::/path")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def hierarchy_mounts(mountinfo: str) -> dict[str, tuple[Path, str]]:
    """The cgroup hierarchies systemd tracks processes in, from /proc/self/mountinfo text:
    ``{hierarchy: (mount point, root of the mount)}``, ``UNIFIED`` for cgroup2 and
    ``NAMED_SYSTEMD`` for the named v1 hierarchy. The first mount of each counts."""
    found: dict[str, tuple[Path, str]] = {}
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        mount_fields, tail_fields = fields.split(), tail.split()
        if len(mount_fields) < 5 or len(tail_fields) < 3:
            continue
        fstype, options = tail_fields[0], tail_fields[2].split(",")
        if fstype == "cgroup2":
            hierarchy = UNIFIED
        elif fstype == "cgroup" and NAMED_SYSTEMD in options:
            hierarchy = NAMED_SYSTEMD
        else:
            continue
        found.setdefault(hierarchy, (Path(_unescape(mount_fields[4])), _unescape(mount_fields[3])))
    return found


def process_cgroups(proc_cgroup: str) -> dict[str, str]:
    """``{hierarchy: cgroup path}`` from /proc/<pid>/cgroup text (``ID:controllers:path``)."""
    found = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    return found


def cgroup_dirs(mountinfo: str, proc_cgroup: str) -> list[Path]:
    """The directories of a process's cgroups in the hierarchies systemd tracks processes in."""
    paths = process_cgroups(proc_cgroup)
    dirs = []
    for hierarchy, (mount_point, mount_root) in hierarchy_mounts(mountinfo).items():
        path = paths.get(hierarchy)
        if path is None:
            continue
        relative = os.path.relpath(path, mount_root)
        if relative.startswith(".."):  # the process is outside what this mount shows
            continue
        dirs.append(mount_point if relative == "." else mount_point / relative)
    return dirs


def own_cgroup_dirs() -> list[Path]:
    return cgroup_dirs(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())


def enter_own(machine: str) -> list[Path]:
    """Move this process into a new cgroup for ``machine`` below its current one, in each
    hierarchy (processes it starts afterwards are born there); returns the cgroups made."""
    made = []
    for parent in own_cgroup_dirs():
        cgroup = parent / f"{PREFIX}{machine}"
        cgroup.mkdir(exist_ok=True)
        (cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")
        made.append(cgroup)
    return made


def leave_and_remove(cgroups: list[Path]) -> None:
    """Move this process back to the parents of ``cgroups`` and remove them with what the
    guest left below them (all empty by now; one still in use is logged and kept)."""
    for cgroup in cgroups:
        try:
            (cgroup.parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            log.warning("cannot leave cgroup %s: %s", cgroup, exc)
        remove_tree(cgroup)


def remove_tree(cgroup: Path) -> bool:
    """rmdir ``cgroup`` and its sub-cgroups, deepest first; False when one is still in use."""
    removed = True
    for directory, _, _ in sorted(os.walk(cgroup), key=lambda entry: -entry[0].count(os.sep)):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove cgroup %s: %s", directory, exc)
            removed = False
    return removed


def machine_cgroups(machine_prefix: str, hierarchies: list[Path] | None = None) -> list[Path]:
    """The cgroups of machines named ``machine_prefix...`` anywhere in the hierarchies (by
    default the mounted ones), not looking inside them."""
    prefix = f"{PREFIX}{machine_prefix}"
    if hierarchies is None:
        mounts = hierarchy_mounts(Path("/proc/self/mountinfo").read_text())
        hierarchies = [mount_point for mount_point, _ in mounts.values()]
    found = []
    for mount_point in hierarchies:
        for directory, subdirs, _ in os.walk(mount_point):
            matching = [name for name in subdirs if name.startswith(prefix)]
            found += [Path(directory) / name for name in matching]
            subdirs[:] = [name for name in subdirs if name not in matching]
    return sorted(found)
