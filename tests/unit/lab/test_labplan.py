from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from ailab_deploy.core.cluster import placements
from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.core.plan import Plan
from ailab_deploy.core.privileges import plan_features
from ailab_deploy.core.sizing import size_plan
from ailab_deploy.core.validate import check_plan
from ailab_deploy.lab.labplan import LabPlanInputs, local_ca_files, render_lab_plan

REPO = Path(__file__).resolve().parents[3]


def _inputs(tmp_path: Path) -> LabPlanInputs:
    return LabPlanInputs(
        api_port=18006,
        node="pve",
        token_id="root@pam!ailab",
        token_secret_file=tmp_path / "token",
        fingerprint=":".join(["AB"] * 32),
        ssh_public_key_file=tmp_path / "id_ed25519.pub",
        ssh_private_key_file=tmp_path / "id_ed25519",
        repo_root=REPO,
        host_cores=2,
        host_memory_gib=23,
        measured_bandwidth_gbs=9.5,
    )


def test_lab_plan_is_a_valid_plan_with_the_same_three_vms(tmp_path: Path) -> None:
    loaded = load_plan_text(render_lab_plan(_inputs(tmp_path)), "vms.lab.yaml")
    plan = loaded.plan
    assert [vm.name for vm in plan.vms] == ["postgres", "ollama", "devapps"]
    assert plan.llm.engine == "llamacpp"
    assert str(plan.network.subnet) == "10.77.0.0/24"
    assert sum(vm.memory for vm in plan.vms) * 2**20 <= 23 * 2**30


def test_lab_plan_sizing_uses_the_measured_bandwidth(tmp_path: Path) -> None:
    llm = size_plan(load_plan_text(render_lab_plan(_inputs(tmp_path))).plan).llm
    assert llm is not None
    assert llm.bandwidth_source == "measured"
    # gemma-3-270m: 2 x 18 layers x 1 KV head x 256 x 2 B = 18 KiB per token
    assert llm.kv_bytes_per_token == 18 * 1024
    assert llm.expected_tokens_per_second == 9.5e9 / (253e6 + 18 * 1024 * 1024)


def test_lab_plan_trusts_only_the_locally_added_cas(tmp_path: Path) -> None:
    (tmp_path / "cas" / "sub").mkdir(parents=True)
    for name in ("b.crt", "sub/a.crt", "notes.txt"):
        (tmp_path / "cas" / name).write_text("x")
    files = local_ca_files(tmp_path / "cas")
    assert [f.name for f in files] == ["b.crt", "a.crt"]
    inputs = dataclasses.replace(_inputs(tmp_path), ca_files=files)
    plan = load_plan_text(render_lab_plan(inputs)).plan
    assert plan.network.extra_ca_certificates == [str(f) for f in files]
    assert local_ca_files(tmp_path / "missing") == ()


CLUSTER = (("pve1", "10.77.0.2"), ("pve2", "10.77.0.3"), ("pve3", "10.77.0.4"))


def _cluster_plan(tmp_path: Path, ssh: str | None = "10.77.0.2") -> Plan:
    inputs = dataclasses.replace(_inputs(tmp_path), node="pve1", node_ssh_address=ssh, cluster=CLUSTER)
    return load_plan_text(render_lab_plan(inputs), "vms.lab.yaml").plan


def test_a_one_node_lab_plan_has_no_cluster(tmp_path: Path) -> None:
    plan = load_plan_text(render_lab_plan(_inputs(tmp_path)), "vms.lab.yaml").plan
    assert (plan.proxmox.node, plan.proxmox.nodes) == ("pve", [])
    assert plan.host is not None and plan.host.memory == 23 * 1024
    assert all(vm.node is None and vm.ha is None and vm.spread is None for vm in plan.vms)
    assert "cluster" not in plan_features(plan) and "ha" not in plan_features(plan)


def test_a_cluster_lab_plan_names_each_node_with_a_share_of_this_machine(tmp_path: Path) -> None:
    plan = _cluster_plan(tmp_path)
    assert plan.host is None and plan.proxmox.node is None
    assert [(n.name, ipaddress.ip_address(n.host)) for n in plan.nodes] == [
        (name, ipaddress.ip_address(address)) for name, address in CLUSTER
    ]
    for node in plan.nodes:
        hardware = node.hardware
        assert hardware.sockets * hardware.cores_per_socket * hardware.threads_per_core == 2
        assert hardware.memory == 7 * 1024  # 23 GiB split three ways, whole GiB
        assert {pool.name: pool.shared for pool in hardware.storage} == {
            "local-lvm": False,
            "HDDStorage": False,
            "shared": True,
        }
    assert sum(node.hardware.memory for node in plan.nodes) <= 23 * 1024
    assert plan.proxmox.prepare_node is True
    assert plan.template.storage == "shared"  # the cluster lab's template, cloned with target=


def test_a_cluster_lab_plan_keeps_the_database_highly_available_and_apart_from_the_llm(
    tmp_path: Path,
) -> None:
    plan = _cluster_plan(tmp_path)
    postgres, llm = plan.vms_with_role("postgresql")[0], plan.vms_with_role("llm")[0]
    assert postgres.ha is not None and postgres.ha.state == "started"
    assert plan.storage(postgres.storage) is not None and plan.storage(postgres.storage).shared  # type: ignore[union-attr]
    chosen, problems = placements(plan)
    where = {placement.vm: placement.node for placement in chosen}
    assert problems == []
    assert set(where) == {"postgres", "ollama", "devapps"}
    assert where[postgres.name] != where[llm.name]
    assert [p for p in check_plan(plan) if p.severity == "error"] == []
    assert {"cluster", "ha"} <= set(plan_features(plan))


def test_an_api_only_cluster_lab_plan_prepares_no_node(tmp_path: Path) -> None:
    plan = _cluster_plan(tmp_path, ssh=None)
    assert plan.proxmox.prepare_node is False
    assert len(plan.nodes) == 3


def test_lab_plan_asks_for_the_labs_debian_release(tmp_path: Path) -> None:
    for release, postgresql in ((13, 17), (12, 15)):
        inputs = dataclasses.replace(_inputs(tmp_path), debian_release=release)
        plan = load_plan_text(render_lab_plan(inputs), "vms.lab.yaml").plan
        assert (plan.template.release, plan.template.name) == (release, f"debian-{release}-cloud")
        assert plan.postgresql_major == postgresql
