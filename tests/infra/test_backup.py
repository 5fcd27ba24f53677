"""backup: the nightly pg_dump timer, its scripts and the dump directory."""

from __future__ import annotations

from typing import Any


def test_timer_is_enabled_and_scheduled(host: Any, needs: Any) -> None:
    needs("backup")
    timer = host.service("ailab-pg-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert host.check_output("systemctl show -P NextElapseUSecRealtime ailab-pg-backup.timer") != ""


def test_restore_check_timer_is_enabled_weekly(host: Any, needs: Any) -> None:
    needs("backup")
    timer = host.service("ailab-pg-restore-check.timer")
    assert timer.is_enabled and timer.is_running
    calendar = host.check_output("systemctl show -P TimersCalendar ailab-pg-restore-check.timer")
    assert "OnCalendar=Sun *-*-* 04:00:00 " in calendar, calendar  # the role's default: weekly


def test_every_dump_has_a_private_manifest(host: Any, hostvars: dict[str, Any], needs: Any) -> None:
    needs("backup")
    directory = hostvars.get("backup_dir", "/var/backups/ailab-postgresql")
    names = host.check_output(f"find {directory} -maxdepth 1 -name 'manifest-*.json' -printf '%f\\n'").split()
    assert names, "no manifest: the role takes the first dump when it finds none"
    manifest = host.file(f"{directory}/{sorted(names)[-1]}")
    assert manifest.user == "postgres" and manifest.mode & 0o077 == 0


def test_scripts_are_root_owned_and_executable(host: Any, needs: Any) -> None:
    needs("backup")
    for path in (
        "/usr/local/sbin/ailab-pg-backup",
        "/usr/local/sbin/ailab-pg-restore",
        "/usr/local/sbin/ailab-pg-dump-check",
    ):
        script = host.file(path)
        assert script.user == "root" and script.mode & 0o111 and not script.mode & 0o022, path


def test_dump_directory_is_private(host: Any, hostvars: dict[str, Any], needs: Any) -> None:
    needs("backup")
    directory = host.file(hostvars.get("backup_dir", "/var/backups/ailab-postgresql"))
    assert directory.is_directory
    assert directory.mode & 0o077 == 0  # dumps hold every row
