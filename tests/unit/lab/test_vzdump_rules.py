"""vzdump's archive names and pve-storage's retention marks, as the lab emulator applies them."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator

import pytest

from ailab_deploy.lab.emulator.vzdump import (
    archive_name,
    mark_backup_group,
    notes_from_template,
    parse_archive_name,
    parse_keep,
)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Names and retention periods follow the node's local time; these cases are written in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def at(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M"))


@pytest.mark.parametrize(
    "vmid, moment, compress, name",
    [
        (100, "2026-11-30 02:00", "zstd", "vzdump-qemu-100-2026_11_30-02_00_00.vma.zst"),
        (101, "2026-01-02 03:04", "0", "vzdump-qemu-101-2026_01_02-03_04_00.vma"),
        (102, "2026-12-31 23:59", "gzip", "vzdump-qemu-102-2026_12_31-23_59_00.vma.gz"),
        (9999, "2027-02-28 00:00", "lzo", "vzdump-qemu-9999-2027_02_28-00_00_00.vma.lzo"),
        (100, "2026-06-01 12:30", "1", "vzdump-qemu-100-2026_06_01-12_30_00.vma.lzo"),  # 1 is lzo
    ],
)
def test_archive_names(vmid: int, moment: str, compress: str, name: str) -> None:
    assert archive_name(vmid, at(moment), compress) == name
    parsed = parse_archive_name(name)
    assert parsed is not None
    assert (parsed.subtype, parsed.vmid, parsed.ctime) == ("qemu", vmid, at(moment))
    assert parsed.stem == name.split(".")[0]


@pytest.mark.parametrize(
    "name",
    [
        "vzdump-qemu-100-2026_11_30-02_00_00.vma.zst.notes",
        "vzdump-qemu-100-2026_11_30-02_00_00.log",
        "vzdump-qemu-100-2026_11_30-02_00.vma.zst",
        "backup-100.vma.zst",
        "vzdump-kvm-100-2026_11_30-02_00_00.vma.zst",
    ],
)
def test_other_files_are_not_archives(name: str) -> None:
    assert parse_archive_name(name) is None


@pytest.mark.parametrize(
    "text, keep",
    [
        (None, {"keep-all": 1}),
        ("", {"keep-all": 1}),
        ("keep-last=3", {"keep-last": 3}),
        ("keep-daily=7,keep-weekly=4", {"keep-daily": 7, "keep-weekly": 4}),
    ],
)
def test_retention_options(text: str | None, keep: dict[str, int]) -> None:
    assert parse_keep(text) == keep


# Five backups over three days, newest last (names are their times).
DAYS = ["d1 10:00", "d1 20:00", "d2 10:00", "d3 09:00", "d3 21:00"]
DATES = {"d1": "2026-11-02", "d2": "2026-11-03", "d3": "2026-11-04"}


def group(names: list[str]) -> list[tuple[str, int]]:
    return [(name, at(f"{DATES[name[:2]]} {name[3:]}")) for name in names]


@pytest.mark.parametrize(
    "keep, kept",
    [
        ({"keep-last": 2}, {"d3 21:00", "d3 09:00"}),
        ({"keep-daily": 2}, {"d3 21:00", "d2 10:00"}),  # the newest of each of the last two days
        ({"keep-last": 1, "keep-daily": 2}, {"d3 21:00", "d2 10:00", "d1 20:00"}),  # d3 is covered
        ({"keep-hourly": 10}, set(DAYS)),  # each in an hour of its own
        ({"keep-weekly": 1}, {"d3 21:00"}),  # all in ISO week 45
        ({"keep-monthly": 5, "keep-yearly": 5}, {"d3 21:00"}),
        ({"keep-all": 1, "keep-last": 1}, set(DAYS)),
        ({}, set(DAYS)),  # no positive option: everything is kept
    ],
)
def test_retention_marks(keep: dict[str, int], kept: set[str]) -> None:
    marks = mark_backup_group(group(DAYS), keep)
    assert {name for name, mark in marks.items() if mark == "keep"} == kept
    assert {name for name, mark in marks.items() if mark == "remove"} == set(DAYS) - kept


def test_weekly_retention_uses_iso_weeks_across_the_year() -> None:
    # 2026-12-28 (Mon) and 2027-01-03 (Sun) are both in ISO week 53 of 2026; 2027-01-04 starts week 1
    backups = [
        ("mon-w53", at("2026-12-28 02:00")),
        ("sun-w53", at("2027-01-03 02:00")),
        ("w1", at("2027-01-04 02:00")),
    ]
    marks = mark_backup_group(backups, {"keep-weekly": 2})
    assert marks == {"w1": "keep", "sun-w53": "keep", "mon-w53": "remove"}


def test_protected_backups_stay_and_do_not_count() -> None:
    backups = [
        ("old", at("2026-11-01 02:00")),
        ("mid", at("2026-11-02 02:00")),
        ("new", at("2026-11-03 02:00")),
    ]
    marks = mark_backup_group(backups, {"keep-last": 1}, protected=["old"])
    assert marks == {"old": "protected", "mid": "remove", "new": "keep"}


@pytest.mark.parametrize(
    "template, notes",
    [
        ("{{guestname}}", "postgres"),
        ("{{guestname}} on {{node}} ({{vmid}})", "postgres on pve (100)"),
        ("line one\\nline two", "line one\nline two"),
        ("{{unknown}} stays", "{{unknown}} stays"),
    ],
)
def test_notes_template(template: str, notes: str) -> None:
    assert notes_from_template(template, "postgres", 100, "pve") == notes
