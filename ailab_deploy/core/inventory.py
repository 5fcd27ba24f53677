"""The Ansible inventory as data: plan + sizing + discovered addresses -> groups and variables.

Pure: everything read from disk (public keys, CA files, app package metadata) arrives in
:class:`InventoryInputs`. Passwords and the LLM API key never appear here, only references to
variables (``{{ vault_postgresql_<user>_password }}``, ``{{ vault_llm_api_key }}``): generated
ones are defined in a 0600 extra-vars file on the controller, ``vault:<var>`` ones by the user's
Ansible Vault as ``vault_<var>``.

Groups follow the roles: ``postgresql``, ``llm``, ``apps`` (role python_app) and ``backup``.
Variables carry the role prefix of ``roles/<role>/defaults/main.yml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ailab_deploy.core.plan import VM, App, Plan
from ailab_deploy.core.sizing import size_llm, size_postgres

ROLE_GROUPS = {"postgresql": "postgresql", "llm": "llm", "python_app": "apps", "backup": "backup"}
SERVED_MODEL_NAME = "ailab-llm"  # the name the LLM role serves the model under; the apps ask for it
# The LLM API key's variable; the controller defines it (generated, in the 0600 extra-vars file).
LLM_API_KEY_VARIABLE = "vault_llm_api_key"
LLM_API_KEY_REFERENCE = "{{ " + LLM_API_KEY_VARIABLE + " }}"
PYTHON_INTERPRETER = "/usr/bin/python3"

Vars = dict[str, Any]


@dataclass(frozen=True)
class PasswordRef:
    """Where a database password comes from: a variable, defined by the controller or the vault."""

    user: str
    variable: str
    generated: bool

    @property
    def reference(self) -> str:
        return "{{ " + self.variable + " }}"


@dataclass(frozen=True)
class AppPackage:
    """What the python_app role needs to know of a package the plan names by its source."""

    name: str  # distribution name, e.g. "lab-status"
    source: Vars  # python_app_packages entry fields besides name (source, project, url, ...)
    scripts: tuple[str, ...] = ()  # console scripts it installs


@dataclass(frozen=True)
class InventoryInputs:
    """What the adapter read or discovered, so building the inventory needs no I/O."""

    addresses: Mapping[str, str]  # VM name -> address Ansible connects to
    known_hosts: str  # absolute path of the state directory's known_hosts
    private_key_file: str | None = None
    admin_ssh_keys: tuple[str, ...] = ()  # plan keys plus the contents of the key files
    ca_certificates: tuple[tuple[str, str], ...] = ()  # (name, PEM text)
    framework: AppPackage | None = None
    apps: Mapping[str, AppPackage] = field(default_factory=dict)  # app name -> its package
    wheel_dir: str | None = None  # the plan's cache of wheels built on the controller


@dataclass(frozen=True)
class Inventory:
    hosts: Vars  # hosts.yml: groups, connection and address per host
    group_vars: dict[str, Vars]  # group name -> variables
    host_vars: dict[str, Vars]  # host name -> variables
    passwords: tuple[PasswordRef, ...]  # every password the inventory refers to
    llm_api_key: bool = False  # whether it refers to LLM_API_KEY_VARIABLE


def password_refs(plan: Plan) -> dict[str, PasswordRef]:
    """Database user -> the variable holding its password; refuses two users on one variable."""
    refs: dict[str, PasswordRef] = {}
    owners: dict[str, str] = {}
    for user in plan.database.users:
        kind, _, vault_name = user.password.partition(":")
        if kind == "vault":
            ref = PasswordRef(user.name, f"vault_{vault_name}", generated=False)
        else:
            ref = PasswordRef(user.name, f"vault_postgresql_{user.name}_password", generated=True)
        if ref.variable in owners:
            raise ValueError(
                f"database users {owners[ref.variable]!r} and {user.name!r} would share the password "
                f"variable {ref.variable}; give one of them another vault variable"
            )
        owners[ref.variable] = user.name
        refs[user.name] = ref
    return refs


def ssh_common_args(known_hosts: str) -> str:
    return f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"


def _private_ips(vms: list[VM]) -> list[str]:
    return [str(vm.ip) for vm in vms]


def _firewall_services(plan: Plan, vm: VM) -> list[Vars]:
    """Each service port is open only to its clients: the database and the LLM to the apps
    VMs, the apps to the admin networks. A service with no client stays closed."""
    app_clients = _private_ips(plan.vms_with_role("python_app"))
    admins = [str(network) for network in plan.network.admin_sources]
    services: list[Vars] = []
    if "postgresql" in vm.roles and app_clients:
        services.append(
            {"name": "postgresql", "port": plan.database.port, "proto": "tcp", "sources": app_clients}
        )
    if "llm" in vm.roles and app_clients:
        services.append({"name": "llm", "port": plan.llm.port, "proto": "tcp", "sources": app_clients})
    if "python_app" in vm.roles:
        for app in plan.apps.apps:
            services.append({"name": app.name, "port": app.port, "proto": "tcp", "sources": admins})
    return services


def _postgresql_vars(plan: Plan, vm: VM, passwords: Mapping[str, PasswordRef]) -> Vars:
    database = plan.database
    sizing = size_postgres(plan, vm)
    # A user reaches the databases it owns and those its apps connect to.
    reachable: dict[str, set[str]] = {user.name: set() for user in database.users}
    for spec in database.databases:
        reachable.setdefault(spec.owner, set()).add(spec.name)
    for app in plan.apps.apps:
        if app.database and app.database_user:
            reachable.setdefault(app.database_user, set()).add(app.database)
    values: Vars = {
        "postgresql_source": database.source,
        "postgresql_port": database.port,
        "postgresql_settings": dict(sizing.settings),
        "postgresql_client_addresses": _private_ips(plan.vms_with_role("python_app")),
        "postgresql_databases": [{"name": d.name, "owner": d.owner} for d in database.databases],
        "postgresql_users": [
            {
                "name": user.name,
                "password": passwords[user.name].reference,
                "databases": sorted(reachable[user.name]),
            }
            for user in database.users
        ],
    }
    if database.source == "pgdg":
        values["postgresql_pgdg_version"] = sizing.version
    return values


def _llm_vars(plan: Plan, vm: VM) -> Vars:
    llm = plan.llm
    sizing = size_llm(plan, vm)
    values: Vars = {
        "llm_engine": llm.engine,
        "llm_threads": sizing.threads,
        "llm_context_length": llm.context_length,
        "llm_parallel": llm.parallel,
        # The VM is presented as one socket bound to one host node, so the guest sees one NUMA node.
        "llm_numa": "" if sizing.numa.sockets == 1 else "distribute",
        "llm_keep_alive": llm.keep_alive,
        "llm_kv_cache_type": llm.kv_cache_type,
        "llm_flash_attention": "on" if llm.flash_attention else "off",
        "llm_served_model_name": SERVED_MODEL_NAME,
        "llm_api_key": LLM_API_KEY_REFERENCE,
        "llm_model_name": llm.model,
    }
    if llm.engine == "ollama":
        ollama = llm.ollama
        values.update(llm_ollama_version=ollama.version, llm_ollama_port=llm.port)
        if ollama.archive_url:
            values["llm_ollama_archive_url"] = ollama.archive_url
        if ollama.archive_sha256:
            values["llm_ollama_archive_sha256"] = ollama.archive_sha256
        if ollama.archive_path:
            values["llm_ollama_archive_src"] = ollama.archive_path
        values["llm_model_source"] = "path" if ollama.gguf_path else "registry"
        if ollama.gguf_path:
            values["llm_model_path"] = ollama.gguf_path
    else:
        values.update(llm_llamacpp_version=llm.llamacpp.version, llm_llamacpp_port=llm.port)
        if llm.llamacpp.build_cache_dir:
            values["llm_llamacpp_build_cache_dir"] = llm.llamacpp.build_cache_dir
        model = llm.llamacpp.model
        if model is not None:
            values["llm_model_sha256"] = model.sha256
            if model.path:
                values.update(llm_model_source="path", llm_model_path=model.path)
            elif model.url:
                values.update(llm_model_source="url", llm_model_url=model.url)
            elif model.pypi_package:
                values.update(llm_model_source="pypi", llm_model_pypi_spec=model.pypi_package)
    return values


def _app_entry(plan_app: App, package: AppPackage, migrate_command: str | None) -> Vars:
    entry: Vars = {
        "name": plan_app.name,
        "kind": plan_app.kind,
        "port": plan_app.port,
        "health_path": plan_app.health_path,
    }
    if plan_app.kind == "asgi":
        entry["asgi_app"] = plan_app.entrypoint
    else:
        # The role starts Streamlit through a console script of the app's package.
        ui_scripts = [script for script in package.scripts if "migrate" not in script]
        if ui_scripts:
            entry["command"] = ui_scripts[0]
    if plan_app.database and migrate_command:
        entry["migrate_command"] = migrate_command
    return entry


def _python_app_vars(plan: Plan, inputs: InventoryInputs, passwords: Mapping[str, PasswordRef]) -> Vars:
    packages: list[Vars] = []
    seen: set[str] = set()
    for package in [inputs.framework, *(inputs.apps.get(app.name) for app in plan.apps.apps)]:
        if package is not None and package.name not in seen:
            seen.add(package.name)
            packages.append({"name": package.name, **package.source})
    # Migrations come with the framework (or the app's own package): one console script, run once.
    scripts = [
        script
        for package in (inputs.framework, *inputs.apps.values())
        if package
        for script in package.scripts
    ]
    migrate = next((script for script in scripts if "migrate" in script), None)
    apps = [
        _app_entry(app, inputs.apps[app.name], migrate) for app in plan.apps.apps if app.name in inputs.apps
    ]
    # The verification's pgbench runs from the apps VM, over the network, like the apps do.
    values: Vars = {"python_app_packages": packages, "python_app_apps": apps, "python_app_pgbench": True}
    if inputs.wheel_dir is not None:  # beside the plan's other state, whichever checkout runs Ansible
        values["python_app_controller_wheel_dir"] = inputs.wheel_dir
    with_database = [app for app in plan.apps.apps if app.database and app.database_user]
    database_vms = plan.vms_with_role("postgresql")
    if with_database and database_vms:
        first = with_database[0]
        assert first.database_user is not None  # filtered above
        values.update(
            python_app_db_host=str(database_vms[0].ip),
            python_app_db_port=plan.database.port,
            python_app_db_name=first.database,
            python_app_db_user=first.database_user,
            python_app_db_password=passwords[first.database_user].reference,
        )
    llm_vms = plan.vms_with_role("llm")
    if llm_vms:
        values.update(
            python_app_llm_url=f"http://{llm_vms[0].ip}:{plan.llm.port}",
            python_app_llm_model=SERVED_MODEL_NAME,
            python_app_llm_provider=plan.llm.engine,
            python_app_llm_api_key=LLM_API_KEY_REFERENCE,
            python_app_llm_max_tokens=plan.apps.llm_max_tokens,
        )
    return values


def build_inventory(plan: Plan, inputs: InventoryInputs) -> Inventory:
    """The whole inventory; raises ValueError naming a VM without a discovered address."""
    missing = [vm.name for vm in plan.vms if vm.name not in inputs.addresses]
    if missing:
        raise ValueError(f"no address discovered for VM(s): {', '.join(missing)}")
    passwords = password_refs(plan)

    children: dict[str, Vars] = {}
    for role, group in ROLE_GROUPS.items():
        members: Vars = {vm.name: {} for vm in plan.vms_with_role(role)}
        if members:
            children[group] = {"hosts": members}
    hosts: Vars = {
        "all": {
            "hosts": {
                vm.name: {"ansible_host": inputs.addresses[vm.name], "ailab_private_address": str(vm.ip)}
                for vm in plan.vms
            },
            "children": children,
        }
    }

    connection: Vars = {
        "ansible_user": plan.template.admin_user,
        "ansible_ssh_common_args": ssh_common_args(inputs.known_hosts),
        "ansible_python_interpreter": PYTHON_INTERPRETER,
    }
    if inputs.private_key_file:
        connection["ansible_ssh_private_key_file"] = inputs.private_key_file
    common: Vars = {
        "common_admin_ssh_keys": list(inputs.admin_ssh_keys),
        "common_ssh_admin_sources": [str(network) for network in plan.network.admin_sources],
        "common_http_proxy": plan.network.http_proxy or "",
        "common_ca_certificates": [{"name": name, "content": pem} for name, pem in inputs.ca_certificates],
    }

    host_vars: dict[str, Vars] = {}
    for vm in plan.vms:
        values: Vars = {"common_firewall_services": _firewall_services(plan, vm)}
        if "postgresql" in vm.roles:
            values.update(_postgresql_vars(plan, vm, passwords))
        if "llm" in vm.roles:
            values.update(_llm_vars(plan, vm))
        if "python_app" in vm.roles:
            values.update(_python_app_vars(plan, inputs, passwords))
        host_vars[vm.name] = values

    return Inventory(
        hosts=hosts,
        group_vars={"all": {**connection, **common}},
        host_vars=host_vars,
        passwords=tuple(passwords[user.name] for user in plan.database.users),
        llm_api_key=bool(plan.vms_with_role("llm")),
    )
