from __future__ import annotations

import dataclasses
import ipaddress
import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ailab_deploy.adapters.inventory import app_package, generate_inventory, inventory_listing
from ailab_deploy.adapters.secrets import SecretStore
from ailab_deploy.core.inventory import InventoryInputs, build_inventory, password_refs
from ailab_deploy.core.loader import LoadedPlan, load_plan, load_plan_text
from ailab_deploy.core.plan import AppSource
from ailab_deploy.core.sizing import size_plan
from ailab_deploy.errors import AilabError

REPO = Path(__file__).resolve().parents[3]
PLAN = REPO / "tests" / "plans" / "valid-minimal.yaml"
ADDRESSES = {"postgres": "10.10.0.10", "llm": "10.10.0.11", "apps": "10.10.0.12"}


@pytest.fixture
def project(tmp_path: Path) -> LoadedPlan:
    """The minimal plan in a scratch project that also holds the apps it names."""
    shutil.copytree(
        REPO / "apps" / "lab_status", tmp_path / "apps" / "lab_status", ignore=shutil.ignore_patterns("build")
    )
    plan = tmp_path / "vms.yaml"
    plan.write_text(PLAN.read_text())
    return load_plan(plan)


def _inputs(**changes: object) -> InventoryInputs:
    return dataclasses.replace(InventoryInputs(addresses=ADDRESSES, known_hosts="/s/known_hosts"), **changes)


def test_groups_follow_roles() -> None:
    inventory = build_inventory(load_plan(PLAN).plan, _inputs())
    children = inventory.hosts["all"]["children"]
    assert {group: sorted(children[group]["hosts"]) for group in children} == {
        "postgresql": ["postgres"],
        "llm": ["llm"],
        "apps": ["apps"],
        "backup": ["postgres"],
    }
    assert inventory.hosts["all"]["hosts"]["llm"] == {
        "ansible_host": "10.10.0.11",
        "ailab_private_address": "10.10.0.11",
    }


def test_connection_variables() -> None:
    inventory = build_inventory(load_plan(PLAN).plan, _inputs(private_key_file="/k/id"))
    everyone = inventory.group_vars["all"]
    assert everyone["ansible_user"] == "ailab"
    assert everyone["ansible_ssh_common_args"] == (
        "-o UserKnownHostsFile=/s/known_hosts -o StrictHostKeyChecking=yes"
    )
    assert everyone["ansible_ssh_private_key_file"] == "/k/id"
    assert everyone["common_ssh_admin_sources"] == ["10.10.0.0/24"]
    assert (
        "ansible_ssh_private_key_file"
        not in build_inventory(load_plan(PLAN).plan, _inputs()).group_vars["all"]
    )


def test_the_apps_answer_cap_comes_from_the_plan() -> None:
    plan = load_plan_text(
        PLAN.read_text().replace("apps:\n  apps:", "apps:\n  llm_max_tokens: 48\n  apps:", 1)
    ).plan
    assert build_inventory(plan, _inputs()).host_vars["apps"]["python_app_llm_max_tokens"] == 48


def test_sizing_reaches_the_hosts() -> None:
    plan = load_plan(PLAN).plan
    sizing = size_plan(plan)
    host_vars = build_inventory(plan, _inputs()).host_vars
    assert sizing.postgres is not None and sizing.llm is not None
    assert host_vars["postgres"]["postgresql_settings"] == sizing.postgres.settings
    assert host_vars["llm"]["llm_threads"] == sizing.llm.threads
    assert host_vars["llm"]["llm_context_length"] == 4096
    assert host_vars["llm"]["llm_parallel"] == 1
    assert host_vars["llm"]["llm_numa"] == ""


def test_firewall_openings_go_to_their_clients_only() -> None:
    host_vars = build_inventory(load_plan(PLAN).plan, _inputs()).host_vars
    assert host_vars["postgres"]["common_firewall_services"] == [
        {"name": "postgresql", "port": 5432, "proto": "tcp", "sources": ["10.10.0.12"]}
    ]
    assert host_vars["llm"]["common_firewall_services"] == [
        {"name": "llm", "port": 11434, "proto": "tcp", "sources": ["10.10.0.12"]}
    ]
    assert host_vars["apps"]["common_firewall_services"] == [
        {"name": "lab-api", "port": 8000, "proto": "tcp", "sources": ["10.10.0.0/24"]}
    ]
    assert host_vars["postgres"]["postgresql_client_addresses"] == ["10.10.0.12"]


def test_passwords_are_references_never_values() -> None:
    host_vars = build_inventory(load_plan(PLAN).plan, _inputs()).host_vars
    assert host_vars["postgres"]["postgresql_users"] == [
        {"name": "ailab", "password": "{{ vault_postgresql_ailab_password }}", "databases": ["ailab"]}
    ]
    apps = host_vars["apps"]
    assert apps["python_app_db_password"] == "{{ vault_postgresql_ailab_password }}"
    assert (apps["python_app_db_host"], apps["python_app_db_port"], apps["python_app_db_name"]) == (
        "10.10.0.10",
        5432,
        "ailab",
    )
    assert apps["python_app_llm_url"] == "http://10.10.0.11:11434"
    assert apps["python_app_llm_provider"] == "ollama"


def test_vault_passwords_and_collisions() -> None:
    text = PLAN.read_text().replace(
        "    - name: ailab\napps:", "    - name: ailab\n      password: vault:db_ailab\napps:"
    )
    plan = load_plan_text(text).plan
    assert password_refs(plan)["ailab"].variable == "vault_db_ailab"
    assert not password_refs(plan)["ailab"].generated
    clash = text.replace(
        "      password: vault:db_ailab\n",
        "      password: vault:postgresql_other_password\n    - name: other\n",
    )
    with pytest.raises(ValueError, match="share the password variable vault_postgresql_other_password"):
        password_refs(load_plan_text(clash).plan)


def test_missing_address_is_named() -> None:
    with pytest.raises(ValueError, match="no address discovered for VM\\(s\\): llm"):
        build_inventory(load_plan(PLAN).plan, _inputs(addresses={"postgres": "1", "apps": "2"}))


def test_app_package_metadata(tmp_path: Path) -> None:
    local = app_package(AppSource(kind="path", path="apps/lab_status"), REPO)
    assert (local.name, local.source["source"]) == ("lab-status", "project")
    assert "lab-status-ui" in local.scripts
    pypi = app_package(AppSource(kind="pypi", spec="lab-status[ui]==0.1.0"), tmp_path)
    assert (pypi.name, pypi.source) == ("lab-status", {"source": "spec", "spec": "lab-status[ui]==0.1.0"})
    git = app_package(AppSource(kind="git", url="https://git.example/x/kit.git", ref="v1"), tmp_path)
    assert (git.name, git.source["ref"]) == ("kit", "v1")


def test_generate_writes_files_secrets_and_is_idempotent(project: LoadedPlan, tmp_path: Path) -> None:
    first = generate_inventory(project, ADDRESSES)
    assert first.changed
    out = tmp_path / "inventory" / "generated"
    assert first.inventory_path == out / "hosts.yml"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.yml")) == [
        "group_vars/all.yml",
        "host_vars/apps.yml",
        "host_vars/llm.yml",
        "host_vars/postgres.yml",
        "hosts.yml",
    ]
    password = SecretStore(tmp_path / ".ailab").get("postgresql-ailab.password")
    llm_key = SecretStore(tmp_path / ".ailab").get("llm-api.key")
    assert password and llm_key and len(llm_key) >= 32
    for path in out.rglob("*.yml"):
        assert password not in path.read_text() and llm_key not in path.read_text()
    (secrets_file,) = first.extra_vars_files
    assert yaml.safe_load(secrets_file.read_text()) == {
        "vault_postgresql_ailab_password": password,
        "vault_llm_api_key": llm_key,
    }
    # The LLM VM and the apps refer to the key by its variable only.
    llm_vars = yaml.safe_load((out / "host_vars" / "llm.yml").read_text())
    assert llm_vars["llm_api_key"] == "{{ vault_llm_api_key }}"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    apps = yaml.safe_load((out / "host_vars" / "apps.yml").read_text())
    assert apps["python_app_llm_api_key"] == "{{ vault_llm_api_key }}"
    assert apps["python_app_llm_max_tokens"] == 128  # the plan's default
    assert apps["python_app_apps"][0]["asgi_app"] == "lab_status.api:app"
    assert apps["python_app_packages"] == [
        {"name": "lab-status", "source": "project", "project": str(tmp_path / "apps" / "lab_status")}
    ]

    again = generate_inventory(project, ADDRESSES)
    assert not again.changed
    assert len(again.files.unchanged) == 6  # five inventory files and the secrets file
    assert SecretStore(tmp_path / ".ailab").get("postgresql-ailab.password") == password
    assert SecretStore(tmp_path / ".ailab").get("llm-api.key") == llm_key


def test_generate_removes_vars_of_vms_no_longer_planned(project: LoadedPlan, tmp_path: Path) -> None:
    generate_inventory(project, ADDRESSES)
    stale = tmp_path / "inventory" / "generated" / "host_vars" / "old-vm.yml"
    stale.write_text("x: 1\n")
    result = generate_inventory(project, ADDRESSES)
    assert result.files.removed == [stale]
    assert not stale.exists()


def test_output_dir_is_configurable(project: LoadedPlan, tmp_path: Path) -> None:
    result = generate_inventory(
        project, ADDRESSES, output_dir=tmp_path / "elsewhere", state_dir=tmp_path / "st"
    )
    assert result.inventory_path == tmp_path / "elsewhere" / "hosts.yml"
    assert result.extra_vars_files == (tmp_path / "st" / "secrets" / "inventory-vars.yml",)
    hosts = yaml.safe_load(result.inventory_path.read_text())
    assert set(hosts["all"]["hosts"]) == {"postgres", "llm", "apps"}
    everyone = yaml.safe_load((tmp_path / "elsewhere" / "group_vars" / "all.yml").read_text())
    assert str(tmp_path / "st" / "known_hosts") in everyone["ansible_ssh_common_args"]
    # Wheels built on the controller are cached with the plan's state, not in the code's checkout.
    apps = yaml.safe_load((tmp_path / "elsewhere" / "host_vars" / "apps.yml").read_text())
    assert Path(apps["python_app_controller_wheel_dir"]) == tmp_path / "st" / "wheels"


def test_inventory_listing_is_ansible_inventorys_and_listed_again_only_on_change(
    project: LoadedPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = generate_inventory(project, ADDRESSES)
    config = REPO / "ansible.cfg"
    listing_path = inventory_listing(generated, tmp_path / ".ailab", config)
    listing = json.loads(listing_path.read_text())["inventory"]
    assert sorted(listing["_meta"]["hostvars"]) == ["apps", "llm", "postgres"]
    assert ipaddress.ip_address(listing["_meta"]["hostvars"]["llm"]["ansible_host"]) == ipaddress.ip_address(
        ADDRESSES["llm"]
    )

    listed = []
    real_run = subprocess.run

    def counting_run(*args: Any, **kwargs: Any) -> Any:
        listed.append(args[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting_run)
    assert inventory_listing(generated, tmp_path / ".ailab", config) == listing_path
    assert listed == []  # nothing changed: the kept listing

    host_vars = generated.output_dir / "host_vars" / "llm.yml"
    host_vars.write_text(host_vars.read_text() + "extra_setting: 42\n")
    listing = json.loads(inventory_listing(generated, tmp_path / ".ailab", config).read_text())["inventory"]
    assert len(listed) == 1
    assert listing["_meta"]["hostvars"]["llm"]["extra_setting"] == 42


def test_a_broken_inventory_is_named(project: LoadedPlan, tmp_path: Path) -> None:
    generated = generate_inventory(project, ADDRESSES)
    generated.inventory_path.write_text("all: [unclosed\n")
    with pytest.raises(AilabError, match=r"ansible-inventory could not list .*hosts\.yml: "):
        inventory_listing(generated, tmp_path / ".ailab", REPO / "ansible.cfg")
