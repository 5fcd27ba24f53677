"""The testinfra suite: what each role promised, checked on the hosts themselves.

Run it against the generated inventory, standalone::

    AILAB_PLAN=vms.yaml .venv/bin/pytest tests/infra \
        --ansible-inventory=inventory/generated/hosts.yml --hosts=ansible://all --sudo

or through ``ailab-deploy verify``, which sets ``AILAB_PLAN`` itself. The values that matter
(PostgreSQL settings and clients, LLM flags, firewall sources) are worked out from that plan and
its sizing (tests/infra/expected.py), not read from the inventory the roles were given, so a
wrong value in the inventory fails here. Connection details and names still come from the
inventory. A test that does not apply to a host (its role is not there) is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

from ailab_deploy.core.loader import load_plan
from ailab_deploy.core.plan import VM, Plan
from tests.infra.expected import plan_vm


@pytest.fixture(scope="module")
def hostvars(host: Any) -> dict[str, Any]:
    return dict(host.ansible.get_variables())


@pytest.fixture(scope="module")
def needs(hostvars: dict[str, Any]) -> Callable[[str], None]:
    """``needs("postgresql")`` skips the test unless the host is in that inventory group."""

    def check(group: str) -> None:
        if group not in hostvars.get("group_names", []):
            pytest.skip(f"{hostvars['inventory_hostname']} is not in group {group}")

    return check


@pytest.fixture(scope="session")
def inventory_path(request: pytest.FixtureRequest) -> str:
    path = request.config.option.ansible_inventory
    if not path:
        pytest.fail("pass --ansible-inventory=<generated hosts.yml>")
    return str(path)


@pytest.fixture(scope="session")
def peers(inventory_path: str) -> dict[str, tuple[str, Any]]:
    """Every inventory host: name -> (private address, testinfra host), to test from other hosts."""
    runner = AnsibleRunner.get_runner(inventory_path)  # testinfra's own: no second ansible-inventory
    found: dict[str, tuple[str, Any]] = {}
    for name in runner.get_hosts("all"):
        variables = runner.get_variables(name)
        address = str(variables.get("ailab_private_address") or variables["ansible_host"])
        found[name] = (address, testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory_path))
    return found


@pytest.fixture(scope="session")
def plan() -> Plan:
    path = os.environ.get("AILAB_PLAN")
    if not path:
        pytest.fail("set AILAB_PLAN=<the plan the inventory was generated from>")
    return load_plan(Path(path)).plan


@pytest.fixture(scope="module")
def vm(plan: Plan, hostvars: dict[str, Any]) -> VM:
    """This host as the plan declares it."""
    return plan_vm(plan, hostvars["inventory_hostname"])
