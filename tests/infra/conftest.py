"""The testinfra suite: what each role promised, checked on the hosts themselves.

Run it against the generated inventory, standalone::

    .venv/bin/pytest tests/infra --ansible-inventory=inventory/generated/hosts.yml \
        --hosts=ansible://all --sudo

or through ``ailab-deploy verify``. Expected values (ports, sources, settings, threads) come
from the inventory, which the controller generated from the plan and its sizing; none are
written here. A test that does not apply to a host (its role is not there) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner


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
    runner = AnsibleRunner(inventory_path)
    found: dict[str, tuple[str, Any]] = {}
    for name in runner.get_hosts("all"):
        variables = runner.get_variables(name)
        address = str(variables.get("ailab_private_address") or variables["ansible_host"])
        found[name] = (address, testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory_path))
    return found
