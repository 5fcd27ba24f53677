from __future__ import annotations

import pytest

from ailab_deploy.core.units import (
    GIB,
    UnitError,
    disk_gib,
    format_bytes,
    memory_mib,
    parse_size,
    pve_size_bytes,
)


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32G", 32 * GIB),
        ("512M", 512 * 1024**2),
        ("1073741824", 1024**3),
        ("1.5K", 1536),
        ("2T", 2 * 1024**4),
    ],
)
def test_pve_sizes_are_binary_and_bare_numbers_are_bytes(text: str, expected: int) -> None:
    assert pve_size_bytes(text) == expected


def test_a_bare_pve_size_takes_the_default_unit() -> None:
    assert pve_size_bytes("10", default_unit="G") == 10 * GIB


@pytest.mark.parametrize("text", ["32GB", "32GiB", "32 G", "32g", "", "G", "-1G"])
def test_pve_size_refuses_what_pve_does_not_write(text: str) -> None:
    with pytest.raises(UnitError, match="invalid size"):
        pve_size_bytes(text)


def test_pve_sizeformat_and_emulator_read_sizes_alike() -> None:
    from ailab_deploy.core.pveformat import size_bytes
    from ailab_deploy.lab.emulator.propstr import parse_size

    assert size_bytes(" 32G ") == parse_size("32G") == 32 * GIB
    assert size_bytes("32GB") is None
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("32GB")
