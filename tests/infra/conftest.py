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

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

from ailab_deploy.core.loader import load_plan
from ailab_deploy.core.plan import VM, Plan
from tests.infra.expected import open_ports, plan_vm
from tests.infra.probes import ProbeResults, probe_reachability
from tests.infra.root_shell import register as register_root_shell

register_root_shell()


def pytest_configure(config: pytest.Config) -> None:
    """With ``AILAB_INVENTORY_LISTING`` (set by ``ailab-deploy verify``), testinfra reads the
    inventory from that ``ansible-inventory --list`` output instead of listing it again."""
    listing = os.environ.get("AILAB_INVENTORY_LISTING")
    inventory = config.option.ansible_inventory
    if listing and inventory:
        runner = AnsibleRunner.get_runner(str(inventory))
        runner.__dict__["inventory"] = json.loads(Path(listing).read_text(encoding="utf-8"))["inventory"]


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


@pytest.fixture(scope="session", autouse=True)
def early_probes(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[ProbeResults]]]:
    """Host name -> the firewall's reachability probes of that host, started with the session so
    they wait out dropped connections while the other tests run (those that read them run last,
    see pytest_collection_modifyitems). Empty when the plan or inventory is not given."""
    option = request.config.option
    if not os.environ.get("AILAB_PLAN") or not option.ansible_inventory or not option.hosts:
        yield {}
        return
    plan: Plan = request.getfixturevalue("plan")
    peers: dict[str, tuple[str, Any]] = request.getfixturevalue("peers")
    runner = AnsibleRunner.get_runner(str(option.ansible_inventory))
    names = {
        name
        for spec in option.hosts.split(",")
        for name in runner.get_hosts(spec.strip().split("://", 1)[-1] or "all")
    }
    targets = [vm for vm in plan.vms if vm.name in names]
    with ThreadPoolExecutor(max_workers=max(len(targets), 1)) as pool:
        yield {
            vm.name: pool.submit(probe_reachability, str(vm.ip), open_ports(plan, vm), peers, vm.name)
            for vm in targets
        }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that read the reachability probes run last: the probes run meanwhile."""
    items.sort(key=lambda item: "reached" in getattr(item, "fixturenames", ()))
