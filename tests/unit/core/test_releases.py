"""The plan's Debian release: its default, what it decides (PostgreSQL, template) and what it refuses."""

from __future__ import annotations

from pathlib import Path

import yaml

from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.core.releases import RELEASES, named_release
from ailab_deploy.core.sizing import size_plan

REPO = Path(__file__).resolve().parents[3]
MINIMAL = (REPO / "tests" / "plans" / "valid-minimal.yaml").read_text()


def _plan(release: int | None = None, database: str = "", name: str = "debian-13") -> str:
    text = MINIMAL.replace("  name: debian-12\n", f"  name: {name}\n")
    if release is not None:
        text = text.replace("  vmid: 9000\n", f"  vmid: 9000\n  release: {release}\n")
    if database:
        text = text.replace("database:\n", f"database:\n{database}")
    return text


def test_a_plan_without_a_release_gets_debian_13_and_its_postgresql_17() -> None:
    plan = load_plan_text(_plan()).plan
    assert plan.template.release == 13
    assert plan.postgresql_major == 17
    pg = size_plan(plan).postgres
    assert pg is not None and pg.version == 17


def test_a_debian_12_plan_tunes_for_postgresql_15() -> None:
    plan = load_plan_text(_plan(12, name="debian-12")).plan
    pg = size_plan(plan).postgres
    assert (plan.postgresql_major, pg is not None and pg.version) == (15, 15)


def test_pgdg_pins_its_own_major_on_either_release() -> None:
    for release in (13, 12):
        plan = load_plan_text(_plan(release, "  source: pgdg\n  version: 16\n", f"debian-{release}")).plan
        pg = size_plan(plan).postgres
        assert (plan.postgresql_major, pg is not None and pg.version) == (16, 16)


def test_naming_the_shipped_major_with_debian_packages_is_accepted() -> None:
    loaded = load_plan_text(_plan(12, "  version: 15\n", "debian-12"))
    assert loaded.plan.postgresql_major == 15


def test_a_template_named_for_another_release_is_a_warning() -> None:
    loaded = load_plan_text(_plan(13, name="debian-12-cloud"))
    warnings = [line for line in loaded.warnings if "template.name" in line]
    assert len(warnings) == 1
    assert "names Debian 12 but template.release is 13" in warnings[0]


def test_the_reference_plan_is_debian_13_with_matching_image_and_name() -> None:
    tree = yaml.safe_load((REPO / "vms.yaml").read_text())
    template = tree["template"]
    trixie = RELEASES[13]
    assert template["release"] == 13
    assert (template["name"], template["image_url"]) == (trixie.template_name, trixie.image_url)
    assert trixie.image_url.endswith("/trixie/latest/debian-13-genericcloud-amd64.qcow2")
    assert RELEASES[12].image_url.endswith("/bookworm/latest/debian-12-genericcloud-amd64.qcow2")


def test_named_release_reads_codenames_and_numbered_names() -> None:
    assert named_release("https://x/images/cloud/bookworm/latest/a.qcow2") == RELEASES[12]
    assert named_release("debian-13-cloud") == RELEASES[13]
    assert named_release("my-template") is None
