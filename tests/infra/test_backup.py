"""backup: the nightly pg_dump timer, its scripts and the dump directory."""

from __future__ import annotations

from typing import Any


def test_timer_is_enabled_and_scheduled(host: Any, needs: Any) -> None:
    needs("backup")
    timer = host.service("ailab-pg-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert host.check_output("systemctl show -P NextElapseUSecRealtime ailab-pg-backup.timer") != ""


def test_scripts_are_root_owned_and_executable(host: Any, needs: Any) -> None:
    needs("backup")
    for path in ("/usr/local/sbin/ailab-pg-backup", "/usr/local/sbin/ailab-pg-restore"):
        script = host.file(path)
        assert script.user == "root" and script.mode & 0o111 and not script.mode & 0o022, path


def test_dump_directory_is_private(host: Any, hostvars: dict[str, Any], needs: Any) -> None:
    needs("backup")
    directory = host.file(hostvars.get("backup_dir", "/var/backups/ailab-postgresql"))
    assert directory.is_directory
    assert directory.mode & 0o077 == 0  # dumps hold every row
