from __future__ import annotations

import pytest

from ailab_deploy.core.units import GIB, UnitError, disk_gib, format_bytes, memory_mib, parse_size


@pytest.mark.parametrize(
    ("text", "mib"),
    [("8G", 8192), ("8192M", 8192), (8192, 8192), ("8GiB", 8192), ("0.5G", 512), ("1T", 1048576)],
)
def test_memory_units(text: object, mib: int) -> None:
    assert memory_mib(text) == mib


@pytest.mark.parametrize("text", ["8X", "G8", "", "-1G", True, 0, "0.1M", 3.5])
def test_memory_rejects(text: object) -> None:
    with pytest.raises(UnitError):
        memory_mib(text)


def test_disk_units() -> None:
    assert disk_gib("100G") == 100
    assert disk_gib(32) == 32
    assert disk_gib("1T") == 1024
    with pytest.raises(UnitError, match="whole number of GiB"):
        disk_gib("100GB")  # decimal gigabytes are not whole GiB


def test_decimal_capacity_as_labelled() -> None:
    assert parse_size("2.18TB", default_unit="G", what="capacity") == 2_180_000_000_000
    assert parse_size("237GB", default_unit="G", what="capacity") == 237_000_000_000
    assert parse_size("2T", default_unit="G", what="capacity") == 2 * 1024 * GIB


def test_format_bytes() -> None:
    assert format_bytes(4_920_000_000) == "4.58 GiB"
    assert format_bytes(131072) == "128.00 KiB"
