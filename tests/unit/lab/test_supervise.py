"""The lab's nspawn supervisor: reboot handling, and the cgroup of its own each machine gets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ailab_deploy.lab.containers.cgroup import PREFIX, cgroup_dirs, machine_cgroups, remove_tree
from ailab_deploy.lab.containers.supervise import EXIT_REBOOT, machine_name, supervise

# /proc/self/mountinfo of a hybrid host (v1 controllers, named systemd v1, cgroup2 beside them)
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "9:name=systemd:/lab\n4:memory:/process_api/3ef4\n1:cpu:/\n0::/lab\n"

# a unified host, and a second mount of a subtree of the same hierarchy (the first counts)
UNIFIED_MOUNTINFO = (
    "25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    "26 1 0:22 /user.slice /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
)
UNIFIED_CGROUP = "0::/user.slice/user-0.slice/session-3.scope\n"


def test_on_a_hybrid_host_the_machine_cgroups_are_in_the_named_systemd_and_the_cgroup2_hierarchy() -> None:
    assert cgroup_dirs(HYBRID_MOUNTINFO, HYBRID_CGROUP) == [
        Path("/sys/fs/cgroup/systemd/lab"),
        Path("/sys/fs/cgroup/unified/lab"),
    ]


def test_on_a_unified_host_only_the_first_cgroup2_mount_counts() -> None:
    assert cgroup_dirs(UNIFIED_MOUNTINFO, UNIFIED_CGROUP) == [
        Path("/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope")
    ]


def test_a_mount_that_shows_a_subtree_maps_the_path_below_its_root() -> None:
    mountinfo = "26 1 0:22 /user.slice /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
    assert cgroup_dirs(mountinfo, UNIFIED_CGROUP) == [Path("/mnt/with space/user-0.slice/session-3.scope")]
    assert cgroup_dirs(mountinfo, "0::/system.slice\n") == []  # not below what the mount shows


def test_the_machine_name_is_nspawns_machine_option() -> None:
    argv = ["systemd-nspawn", "--boot", "--machine=ailab-102", "--", "--machine=guest-arg"]
    assert machine_name(argv) == "ailab-102"
    assert machine_name(["systemd-nspawn", "--", "--machine=guest-arg"]) is None


def test_nspawn_is_run_again_while_it_reports_a_reboot(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = (
        "from pathlib import Path; import sys; p = Path(sys.argv[1]);"
        "n = len(p.read_text()) if p.exists() else 0; p.write_text('x' * (n + 1));"
        f"sys.exit({EXIT_REBOOT} if n < 2 else 5)"
    )
    assert supervise([sys.executable, "-c", script, str(runs)]) == 5
    assert runs.read_text() == "xxx"  # two reboots, then the exit that ends the loop


@pytest.mark.parametrize("status", [0, 1, 137])
def test_any_other_exit_ends_the_loop_with_that_status(tmp_path: Path, status: int) -> None:
    runs = tmp_path / "runs"
    script = f"import sys; open(sys.argv[1], 'a').write('x'); sys.exit({status})"
    assert supervise([sys.executable, "-c", script, str(runs)]) == status
    assert runs.read_text() == "x"


def test_remove_tree_removes_sub_cgroups_deepest_first_and_reports_one_in_use(tmp_path: Path) -> None:
    machine = tmp_path / f"{PREFIX}ailab-102"
    (machine / "payload" / "system.slice" / "ssh.service").mkdir(parents=True)
    (machine / "supervisor").mkdir()
    assert remove_tree(machine) is True
    assert not machine.exists()
    busy = tmp_path / f"{PREFIX}ailab-103"
    (busy / "payload").mkdir(parents=True)
    (busy / "payload" / "in-use").write_text("")  # rmdir fails as on a populated cgroup
    assert remove_tree(busy) is False
    assert (busy / "payload").is_dir()


def test_machine_cgroups_finds_the_lab_machines_but_not_what_guests_name_alike(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    kept = unified / "lab" / f"{PREFIX}ailab-101"
    (kept / "payload" / "system.slice" / f"{PREFIX}ailab-nested").mkdir(parents=True)
    (unified / "payload" / "system.slice" / "ailab-lab-api.service").mkdir(parents=True)
    assert machine_cgroups("ailab-", [unified]) == [kept]
