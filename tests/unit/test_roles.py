"""Static checks of the Ansible roles: the public interface is documented and validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ailab_deploy.core.releases import RELEASES

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").is_file())
EXPECTED_ROLES = {"common", "postgresql", "llm", "python_app", "backup"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def test_the_five_product_roles_exist() -> None:
    assert set(ROLES) >= EXPECTED_ROLES


@pytest.mark.parametrize("role", ROLES)
def test_role_layout(role: str) -> None:
    base = ROLES_DIR / role
    assert re.fullmatch(r"[a-z][a-z0-9_]*", role), "role names are snake_case"
    for name in ("README.md", "defaults/main.yml", "meta/main.yml", "meta/argument_specs.yml"):
        assert (base / name).is_file(), f"{role} lacks {name}"


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_mirror_defaults(role: str) -> None:
    defaults = _load(ROLES_DIR / role / "defaults" / "main.yml")
    options = _load(ROLES_DIR / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert list(options) == list(defaults), "same variables, same order"
    for name, value in defaults.items():
        spec = options[name]
        assert spec.get("default") == value, f"{name}: spec default differs from defaults/main.yml"
        assert spec.get("description"), f"{name}: no description"
        if spec["type"] == "list":
            assert "elements" in spec, f"{name}: list without elements"
        if "choices" in spec:
            assert value in spec["choices"], f"{name}: default not among choices"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_prefixed_and_commented(role: str) -> None:
    lines = (ROLES_DIR / role / "defaults" / "main.yml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            continue
        assert match.group(1).startswith(role + "_"), f"{match.group(1)} lacks the prefix {role}_"
        assert lines[number - 1].startswith("# "), f"{match.group(1)} has no one-line comment above it"


@pytest.mark.parametrize("role", ROLES)
def test_internal_vars_use_the_double_underscore_prefix(role: str) -> None:
    path = ROLES_DIR / role / "vars" / "main.yml"
    if path.is_file():
        for name in _load(path):
            assert name.startswith(f"__{role}_"), f"{name} in vars/ must start with __{role}_"


@pytest.mark.parametrize("role", ROLES)
def test_templates_start_with_ansible_managed(role: str) -> None:
    for template in (ROLES_DIR / role / "templates").glob("*.j2"):
        head = [line for line in template.read_text().splitlines()[:2] if not line.startswith("#!")]
        assert head and "ansible_managed" in head[0], f"{template.name} does not start with ansible_managed"


@pytest.mark.parametrize("role", ROLES)
def test_handlers_only_restart_reload_or_wait(role: str) -> None:
    path = ROLES_DIR / role / "handlers" / "main.yml"
    if not path.is_file():
        return
    for handler in yaml.safe_load(path.read_text()) or []:
        name = handler["name"]
        assert re.match(r"^(Restart|Reload|Wait for) ", name), (
            f"handler '{name}' neither restarts, reloads nor waits"
        )
        if name.startswith("Wait for"):
            assert handler.get("listen"), f"'{name}' must listen on a restart topic"


@pytest.mark.parametrize("role", ROLES)
def test_main_tasks_are_a_table_of_contents(role: str) -> None:
    tasks = _load_list(ROLES_DIR / role / "tasks" / "main.yml")
    for task in tasks:
        # A file that applies only under a condition is included, so a host where it does not
        # apply skips it in one step instead of walking each of its tasks.
        conditional_include = "ansible.builtin.include_tasks" in task and "when" in task
        assert "ansible.builtin.import_tasks" in task or conditional_include, (
            f"{role}/tasks/main.yml: '{task.get('name')}' is neither an import nor a conditional include"
        )
        assert task.get("name"), "every import is named"


def _load_list(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text()) or []


def test_the_roles_per_release_tables_agree_with_the_release_table() -> None:
    """The roles pick per-release values from the host's facts; the controller sizes and verifies
    from core.releases: both must say the same for every supported release."""
    postgresql = _load(ROLES_DIR / "postgresql" / "vars" / "main.yml")["__postgresql_debian_versions"]
    pgbench = _load(ROLES_DIR / "python_app" / "vars" / "main.yml")["__python_app_release_pgbench_packages"]
    assert set(postgresql) == set(pgbench) == {str(major) for major in RELEASES}
    for major, release in RELEASES.items():
        assert int(postgresql[str(major)]) == release.postgresql
        assert pgbench[str(major)] == [
            f"postgresql-client-{release.postgresql}",
            f"postgresql-{release.postgresql}",
        ]


@pytest.mark.parametrize("role", ROLES)
def test_meta_lists_every_supported_release(role: str) -> None:
    platforms = _load(ROLES_DIR / role / "meta" / "main.yml")["galaxy_info"]["platforms"]
    debian = next(platform for platform in platforms if platform["name"] == "Debian")
    assert set(debian["versions"]) == {release.codename for release in RELEASES.values()}
