from __future__ import annotations

import dataclasses
from pathlib import Path

from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.core.sizing import size_plan
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


def test_lab_plan_asks_for_the_labs_debian_release(tmp_path: Path) -> None:
    for release, postgresql in ((13, 17), (12, 15)):
        inputs = dataclasses.replace(_inputs(tmp_path), debian_release=release)
        plan = load_plan_text(render_lab_plan(inputs), "vms.lab.yaml").plan
        assert (plan.template.release, plan.template.name) == (release, f"debian-{release}-cloud")
        assert plan.postgresql_major == postgresql
