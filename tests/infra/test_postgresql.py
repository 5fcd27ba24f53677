"""postgresql: the server, its sizing-derived settings, pg_hba, databases and users."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from ailab_deploy.core.plan import VM, Plan
from tests.infra.expected import (
    networks,
    postgresql_clients,
    postgresql_major,
    postgresql_settings,
    postgresql_unit,
)

UNITS = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}


@pytest.fixture
def psql(host: Any, hostvars: dict[str, Any], needs: Any) -> Any:
    needs("postgresql")

    def query(sql: str) -> str:
        port = hostvars.get("postgresql_port", 5432)
        return str(host.check_output(f"runuser -u postgres -- psql -p {port} -XAtc {_quote(sql)}")).strip()

    return query


def _quote(sql: str) -> str:
    return "'" + sql.replace("'", "'\"'\"'") + "'"


def _normal(value: str) -> str:
    """'1536MB' and '1.5GB' compare equal; other values compare as text."""
    match = re.fullmatch(r"(\d+)\s*(kB|MB|GB|TB)", value.strip())
    return f"{int(match[1]) * UNITS[match[2]]}kB" if match else value.strip().lower()


def _hba_network(address: str, netmask: str) -> str:
    """pg_hba_file_rules gives a mask, not a prefix length (ipaddress reads no IPv6 masks)."""
    if not netmask:
        return address
    return f"{address}/{bin(int(ipaddress.ip_address(netmask))).count('1')}"


def test_server_is_the_releases_major_enabled_and_running(host: Any, psql: Any, plan: Plan) -> None:
    assert int(psql("SHOW server_version_num")) // 10000 == postgresql_major(plan)
    unit = host.service(postgresql_unit(plan))
    assert unit.is_enabled and unit.is_running


def test_settings_are_the_sizing_values(psql: Any, plan: Plan, vm: VM) -> None:
    """Every pgtune value for this VM, from the plan through sizing: what the server runs with."""
    settings = postgresql_settings(plan, vm)
    assert "shared_buffers" in settings and "work_mem" in settings
    # current_setting() gives what SHOW gives; one query for all of them.
    names = ",".join(f"'{name}'" for name in settings)
    rows = psql(f"SELECT n || '=' || current_setting(n) FROM unnest(ARRAY[{names}]) AS n").splitlines()
    shown = dict(row.split("=", 1) for row in rows)
    assert set(shown) == set(settings)
    wrong = {
        name: (shown[name], expected)
        for name, expected in settings.items()
        if _normal(shown[name]) != _normal(expected)
    }
    assert wrong == {}, "setting: (server, sizing)"


def test_no_setting_is_left_waiting_for_a_restart(psql: Any) -> None:
    assert psql("SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart") == ""


def test_listens_on_the_private_address(host: Any, psql: Any, plan: Plan, vm: VM) -> None:
    port = plan.database.port
    assert host.socket(f"tcp://{vm.ip}:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_pg_hba_lets_only_declared_clients_in_with_scram(psql: Any, plan: Plan) -> None:
    rows = psql(
        "SELECT type, address, netmask, auth_method FROM pg_hba_file_rules "
        "WHERE type LIKE 'host%' AND address IS NOT NULL AND address NOT IN ('127.0.0.1', '::1')"
    ).splitlines()
    assert rows, "no network rule in pg_hba"
    addresses = []
    for row in rows:
        _, address, netmask, method = row.split("|")
        assert method == "scram-sha-256", row
        addresses.append(_hba_network(address, netmask))
    assert networks(addresses) == postgresql_clients(plan)  # the apps VMs, nobody else
    assert (
        psql("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method IN ('trust', 'password', 'md5')")
        == "0"
    )
    assert psql("SHOW password_encryption") == "scram-sha-256"


def test_databases_and_owners_are_the_plans(psql: Any, hostvars: dict[str, Any]) -> None:
    for database in hostvars["postgresql_databases"]:
        owner = psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '" + database["name"] + "'"
        )
        assert owner == database["owner"], database["name"]


def test_users_have_scram_passwords(psql: Any, hostvars: dict[str, Any]) -> None:
    for user in hostvars["postgresql_users"]:
        # Only the scheme is read: the verifier itself never reaches the test output.
        scheme = psql("SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = '" + user["name"] + "'")
        assert scheme == "SCRAM-SHA-256$", user["name"]
