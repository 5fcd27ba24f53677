"""The database VM's dump manifest and restore check (roles/backup/files/ailab-pg-dump-check):
rows read from a dump's data, row counts compared with the manifest, a damaged dump named."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "backup" / "files" / "ailab-pg-dump-check"


@pytest.fixture(scope="module")
def dump_check() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("ailab_pg_dump_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


DATA_ONLY_SQL = """\
SET statement_timeout = 0;
COPY public.questions (id, question, answer, created) FROM stdin;
1\tWhat is PostgreSQL?\tA database.\\nIt stores rows.\t2026-11-30 10:00:00+00
2\tWhy an index?\tSpeed.\t2026-11-30 10:01:00+00
\\.
COPY public."Empty Table" (id) FROM stdin;
\\.
COPY audit.log FROM stdin;
x
\\.
SELECT pg_catalog.setval('public.questions_id_seq', 2, true);
"""


def test_rows_are_counted_per_table_from_the_dump_data(dump_check: ModuleType) -> None:
    counts = dump_check.rows_in_copy_text(DATA_ONLY_SQL.splitlines(keepends=True))
    # an escaped newline (\\n) is inside one row; an empty table has zero rows
    assert counts == {"public.questions": 2, 'public."Empty Table"': 0, "audit.log": 1}


@pytest.mark.parametrize(
    "expected, restored, problems",
    [
        ({"ailab": {"public.q": 2}}, {"ailab": {"public.q": 2}}, []),
        (
            {"ailab": {"public.q": 2}},
            {"ailab": {"public.q": 1}},
            ["ailab: table public.q has 1 rows, the manifest says 2"],
        ),
        (
            {"ailab": {"public.q": 2, "public.r": 0}},
            {"ailab": {"public.q": 2}},
            ["ailab: table public.r is missing after the restore"],
        ),
        ({"ailab": {}}, {"ailab": {"public.new": 5}}, ["ailab: table public.new is not in the manifest"]),
        ({"ailab": {"public.q": 2}, "lab": {}}, {"ailab": {"public.q": 2}}, ["lab: not restored"]),
        ({}, {"ailab": {}}, ["ailab: restored, but not in the manifest"]),
    ],
)
def test_manifest_comparison(
    dump_check: ModuleType, expected: dict[str, Any], restored: dict[str, Any], problems: list[str]
) -> None:
    assert dump_check.compare(expected, restored) == problems


def test_a_damaged_dump_fails_the_check_by_its_checksum(dump_check: ModuleType, tmp_path: Path) -> None:
    dump = tmp_path / "ailab-20261130T023000Z.dump"
    dump.write_bytes(b"PGDMP" + bytes(range(256)) * 4)
    manifest = {
        "version": 1,
        "stamp": "20261130T023000Z",
        "created": 1_700_000_000,
        "databases": {
            "ailab": {"file": dump.name, "sha256": hashlib.sha256(dump.read_bytes()).hexdigest(), "rows": {}}
        },
    }
    (tmp_path / "manifest-20261130T023000Z.json").write_text(json.dumps(manifest))
    dump.write_bytes(dump.read_bytes()[:-1] + b"\x00")  # one byte changed after the manifest
    result = dump_check.check(tmp_path, "5432")  # fails before any database is touched
    assert result["passed"] is False
    (problem,) = result["problems"]
    assert problem.startswith(f"ailab: dump {dump.name} is damaged: its SHA-256 is ")
    assert result["manifest"] == "manifest-20261130T023000Z.json"
    assert result["age_hours"] > 24  # from the manifest's time


def test_no_manifest_is_a_clear_failure(dump_check: ModuleType, tmp_path: Path) -> None:
    result = dump_check.check(tmp_path, "5432")
    assert result["passed"] is False
    assert result["problems"] == [f"no dump manifest in {tmp_path}: has ailab-pg-backup run?"]


def test_the_latest_manifest_is_the_newest_stamp(dump_check: ModuleType, tmp_path: Path) -> None:
    for stamp in ("20261129T023000Z", "20261130T023000Z", "20261128T023000Z"):
        (tmp_path / f"manifest-{stamp}.json").write_text("{}")
    assert dump_check.latest_manifest(tmp_path).name == "manifest-20261130T023000Z.json"
