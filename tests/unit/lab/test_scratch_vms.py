"""The pure parts of `ailab-deploy lab vm`: allocation, the registry, the derived one-VM plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from ailab_deploy.core.inventory import InventoryInputs, build_inventory
from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.errors import InputError, LabError
from ailab_deploy.lab import scratch_vms
from ailab_deploy.lab.labplan import LAB_LLAMACPP_CACHE_DIR, LabPlanInputs, render_lab_plan
from ailab_deploy.lab.scratch_vms import (
    Allocation,
    ScratchPaths,
    allocate,
    check_name,
    format_registry,
    ip_of,
    parse_registry,
    read_registry,
    registry_lock,
    render_scratch_plan,
)

REPO = Path(__file__).resolve().parents[3]


def _lab_plan_text(tmp_path: Path, *, relative: bool = False) -> str:
    key = Path("ssh/lab_ed25519") if relative else tmp_path / "ssh" / "lab_ed25519"
    return render_lab_plan(
        LabPlanInputs(
            api_port=8006,
            node="pve",
            token_id="root@pam!ailab",
            token_secret_file=Path("secrets/api-token") if relative else tmp_path / "secrets" / "api-token",
            fingerprint=":".join(["AB"] * 32),
            ssh_public_key_file=key.with_name("lab_ed25519.pub"),
            ssh_private_key_file=key,
            repo_root=REPO,
            host_cores=2,
            host_memory_gib=23,
            measured_bandwidth_gbs=9.5,
            node_ssh_address="10.77.0.2",
        )
    )


# ---------------------------------------------------------------------------------- allocation


def test_allocation_takes_the_lowest_free_vmid_and_address() -> None:
    assert allocate("a", {}, used_vmids={100, 101, 102, 9000}, used_ips={"10.77.0.10"}) == Allocation(
        200, "10.77.0.20"
    )
    taken = {"a": Allocation(200, "10.77.0.20"), "b": Allocation(202, "10.77.0.22")}
    assert allocate("c", taken, used_vmids={201}, used_ips={"10.77.0.21"}) == Allocation(203, "10.77.0.23")


def test_allocation_is_idempotent_per_name() -> None:
    taken = {"a": Allocation(205, "10.77.0.33")}
    # Even when the node now reports those as used (by the VM itself), the name keeps its entry.
    assert allocate("a", taken, used_vmids={205}, used_ips={"10.77.0.33"}) == Allocation(205, "10.77.0.33")


def test_allocation_stays_inside_its_ranges() -> None:
    every_address = {f"10.77.0.{n}" for n in range(20, 100)}
    with pytest.raises(LabError, match=r"no free address in 10\.77\.0\.20-10\.77\.0\.99"):
        allocate("a", {}, used_vmids=set(), used_ips=every_address)
    with pytest.raises(LabError, match="no free vmid in 200-999"):
        allocate("a", {}, used_vmids=set(range(200, 1000)), used_ips=set())
    last = allocate("a", {}, used_vmids=set(), used_ips=every_address - {"10.77.0.99"})
    assert last.ip == "10.77.0.99"


@pytest.mark.parametrize("name", ["molecule-common", "a", "vm-1", "x" * 63])
def test_good_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize("name", ["", "Molecule", "a_b", "-a", "a-", "x" * 64, "../etc", "a.b"])
def test_bad_names_are_input_errors(name: str) -> None:
    with pytest.raises(InputError, match="not a valid hostname label"):
        check_name(name)


def test_ip_of_reads_ipconfig0() -> None:
    assert ip_of({"ipconfig0": "ip=10.77.0.10/24,gw=10.77.0.1"}) == "10.77.0.10"
    assert ip_of({"ipconfig0": "gw=10.77.0.1,ip=10.77.0.31/24"}) == "10.77.0.31"
    assert ip_of({"ipconfig0": "ip=dhcp"}) is None
    assert ip_of({}) is None


# ------------------------------------------------------------------------------------ registry


def test_registry_round_trip() -> None:
    registry = {"b": Allocation(201, "10.77.0.21"), "a": Allocation(200, "10.77.0.20")}
    text = format_registry(registry)
    assert text.index('"a"') < text.index('"b"')  # sorted: stable, diffable
    assert parse_registry(text) == registry
    assert parse_registry("") == {}


def test_registry_lock_writes_changes_atomically_and_privately(tmp_path: Path) -> None:
    paths = ScratchPaths(tmp_path)
    assert read_registry(tmp_path) == {}
    with registry_lock(paths) as registry:
        registry["a"] = Allocation(200, "10.77.0.20")
    assert read_registry(tmp_path) == {"a": Allocation(200, "10.77.0.20")}
    assert paths.registry.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in paths.root.iterdir() if p.name.startswith(".")] == []  # no temporary left
    with registry_lock(paths) as registry:
        registry.pop("a")
    assert read_registry(tmp_path) == {}


def test_destroy_of_an_unknown_name_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch_vms, "running_lab_plan", lambda lab_dir: lab_dir / "vms.lab.yaml")
    with registry_lock(ScratchPaths(tmp_path)) as registry:
        registry["other"] = Allocation(200, "10.77.0.20")
    with pytest.raises(InputError, match=r"no lab VM is named 'nope' \(lab VMs: other\)"):
        scratch_vms.destroy(tmp_path, "nope")


def test_a_stopped_lab_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not running"):
        scratch_vms.running_lab_plan(tmp_path)
    with pytest.raises(InputError, match="is not running"):
        scratch_vms.create(tmp_path, "molecule-common")


# ------------------------------------------------------------------------------ derived plan


def test_scratch_plan_has_one_vm_no_node_preparation_and_no_backup_job(tmp_path: Path) -> None:
    lab_text = _lab_plan_text(tmp_path)
    lab = load_plan_text(lab_text, "vms.lab.yaml").plan
    text = render_scratch_plan(lab_text, tmp_path, lab, "molecule-llm", Allocation(203, "10.77.0.23"))
    plan = load_plan_text(text, "vms.yaml").plan  # the same loader and checks as any plan
    [vm] = plan.vms
    assert (vm.vmid, vm.name, str(vm.ip), vm.roles, vm.onboot) == (
        203,
        "molecule-llm",
        "10.77.0.23",
        ["common"],
        False,
    )
    roomiest = max(lab.vms, key=lambda v: v.memory)
    assert (vm.cores, vm.memory, vm.disk, vm.storage) == (
        roomiest.cores,
        roomiest.memory,
        roomiest.disk,
        roomiest.storage,
    )
    assert plan.proxmox.prepare_node is False
    assert plan.proxmox.vzdump.enabled is False
    assert plan.proxmox.model_dump(exclude={"prepare_node", "vzdump"}) == lab.proxmox.model_dump(
        exclude={"prepare_node", "vzdump"}
    )
    assert (plan.network, plan.template, plan.host) == (lab.network, lab.template, lab.host)
    assert plan.database.databases == [] and plan.apps.apps == []
    assert "# allocated by `lab vm create`" in text
    assert all(line == line.rstrip() for line in text.splitlines())


def test_scratch_plan_makes_the_lab_plans_relative_paths_absolute(tmp_path: Path) -> None:
    lab_text = _lab_plan_text(tmp_path, relative=True)
    lab = load_plan_text(lab_text, "vms.lab.yaml").plan
    plan = load_plan_text(
        render_scratch_plan(lab_text, tmp_path, lab, "a", Allocation(200, "10.77.0.20")), "vms.yaml"
    ).plan
    assert plan.proxmox.token_secret_file == str(tmp_path / "secrets" / "api-token")
    assert plan.template.ssh_private_key_file == str(tmp_path / "ssh" / "lab_ed25519")
    assert plan.template.ssh_public_key_files == [str(tmp_path / "ssh" / "lab_ed25519.pub")]


# ---------------------------------------------------------------------- the llama.cpp build cache


def test_lab_plan_points_the_llm_vm_at_the_build_cache(tmp_path: Path) -> None:
    plan = load_plan_text(_lab_plan_text(tmp_path), "vms.lab.yaml").plan
    assert plan.llm.llamacpp.build_cache_dir == LAB_LLAMACPP_CACHE_DIR
    addresses = {vm.name: str(vm.ip) for vm in plan.vms}
    host_vars = build_inventory(plan, InventoryInputs(addresses=addresses, known_hosts="/s/kh")).host_vars
    assert host_vars["ollama"]["llm_llamacpp_build_cache_dir"] == LAB_LLAMACPP_CACHE_DIR
    assert "llm_llamacpp_build_cache_dir" not in host_vars["postgres"]


def test_build_cache_dir_must_be_absolute(tmp_path: Path) -> None:
    text = _lab_plan_text(tmp_path).replace(
        f"build_cache_dir: {LAB_LLAMACPP_CACHE_DIR}", "build_cache_dir: cache/llamacpp"
    )
    with pytest.raises(InputError, match="build_cache_dir"):
        load_plan_text(text, "vms.lab.yaml")
