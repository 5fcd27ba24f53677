"""The lab's vzdump archive: the config at the top, the disk's files under disk/, both read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from ailab_deploy.lab import archive

CONFIG = {
    "name": "postgres",
    "net0": "virtio=BC:24:11:00:00:10,bridge=vmbr0",
    "description": "line 1\nline 2",
}


def _disk(root: Path) -> Path:
    (root / "upper" / "etc").mkdir(parents=True)
    (root / "upper" / "etc" / "marker").write_text("kept")
    (root / "upper" / "qemu-server.conf").write_text("a file of the guest, not the archive's config")
    (root / "lower").write_text('["/var/cache/ailab-deploy/images/x/rootfs"]')
    (root / "work").mkdir()  # not a member: not archived
    return root


def test_round_trip_keeps_config_and_disk_apart(tmp_path: Path) -> None:
    target = tmp_path / "vzdump-qemu-100-2026_11_30-02_00_00.vma.zst"
    archive.write(target, CONFIG, _disk(tmp_path / "machine"), ["upper", "lower"])
    assert target.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert archive.read_config(target) == CONFIG
    restored = tmp_path / "restored"
    archive.extract_disk(target, restored)
    files = sorted(str(path.relative_to(restored)) for path in restored.rglob("*"))
    assert files == ["lower", "upper", "upper/etc", "upper/etc/marker", "upper/qemu-server.conf"]
    assert (restored / "upper" / "etc" / "marker").read_text() == "kept"
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary name
    assert target.stat().st_mode & 0o077 == 0  # the VM's secrets are in it


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "vzdump-qemu-100-2026_11_30-02_00_00.vma.zst"
    archive.write(target, CONFIG, _disk(tmp_path / "machine"), ["upper", "lower"])
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(archive.ArchiveError, match=f"checking {target.name}: "):
        archive.verify_readable(target)


@pytest.mark.parametrize(
    "text, conf",
    [
        ("name: a\nmemory: 2048\n", {"name": "a", "memory": "2048"}),
        ("#notes\nname: a\n\n[snap1]\nname: old\n", {"description": "notes", "name": "a"}),
    ],
)
def test_config_text(text: str, conf: dict[str, str]) -> None:
    assert archive.parse_config(text) == conf
    assert archive.parse_config(archive.config_text(conf)) == conf
