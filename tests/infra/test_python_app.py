"""python_app: the venv, the packages, one healthy systemd service per app, private env files."""

from __future__ import annotations

from typing import Any

import pytest

from ailab_deploy.core.plan import Plan
from tests.infra.expected import python_version


@pytest.fixture
def apps(hostvars: dict[str, Any], needs: Any) -> list[dict[str, Any]]:
    needs("apps")
    return list(hostvars["python_app_apps"])


def test_venv_holds_the_framework_and_apps(host: Any, hostvars: dict[str, Any], apps: Any) -> None:
    venv = hostvars.get("python_app_venv", "/opt/ailab/venv")
    installed = host.check_output(f"{venv}/bin/python -m pip list --format=freeze").lower().replace("_", "-")
    for package in hostvars["python_app_packages"]:
        assert f"{package['name'].lower()}==" in installed, package["name"]


def test_venv_runs_the_releases_python(host: Any, hostvars: dict[str, Any], apps: Any, plan: Plan) -> None:
    venv = hostvars.get("python_app_venv", "/opt/ailab/venv")
    version = host.check_output(f"{venv}/bin/python -c 'import sys; print(*sys.version_info[:2], sep=\".\")'")
    assert version == python_version(plan)


def test_each_app_service_is_enabled_and_running(host: Any, apps: list[dict[str, Any]]) -> None:
    for app in apps:
        service = host.service(f"ailab-{app['name']}")
        assert service.is_enabled and service.is_running, app["name"]
        assert host.check_output(f"systemctl show -P User ailab-{app['name']}") not in ("", "root")


def test_each_app_answers_its_health_check(host: Any, hostvars: dict[str, Any], apps: Any) -> None:
    address = hostvars["ailab_private_address"]
    for app in apps:
        url = f"http://{address}:{app['port']}{app['health_path']}"
        status = host.check_output(
            f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 --noproxy '*' {url}"
        )
        assert status == "200", f"{app['name']}: {url} -> {status}"


def test_env_files_hold_secrets_so_only_root_reads_them(host: Any, apps: list[dict[str, Any]]) -> None:
    for app in apps:
        path = f"/etc/ailab/{app['name']}.env"
        env = host.file(path)
        assert (env.user, env.mode) == ("root", 0o600), app["name"]
        # grep -q: the file's content (a password) never reaches the test output
        assert host.run(f"grep -q '^DATABASE_URL=postgresql' {path}").rc == 0, app["name"]
        assert host.run(f"grep -q '^AILAB_LLM_API_KEY=.' {path}").rc == 0, app["name"]


def test_env_points_at_the_inventorys_llm(host: Any, hostvars: dict[str, Any], apps: Any, plan: Plan) -> None:
    for app in apps:
        path = f"/etc/ailab/{app['name']}.env"
        expected = (
            f"AILAB_LLM_URL={hostvars['python_app_llm_url']}",
            f"AILAB_LLM_MODEL={hostvars['python_app_llm_model']}",
            f"AILAB_LLM_MAX_TOKENS={plan.apps.llm_max_tokens}",  # from the plan, not the inventory
        )
        for line in expected:
            assert host.run(f"grep -qxF {line!r} {path}").rc == 0, f"{app['name']}: {line}"
