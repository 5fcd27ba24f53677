"""The one-command path on the lab, as a user runs it, and the rehearsal's life cycle on one lab:

the README's main command in a clean clone of this repository (``bash scripts/setup.sh &&
.venv/bin/ailab-deploy demo``: set-up, lab up, up from nothing to a verified lab, closing lines
with the apps' URLs) -> discover reads the lab node into a plan -> up again, from Python through
``pipeline.up`` without the CLI (no API writes, changed=0) -> the LLM refuses requests without its
key, and no secret is anywhere but its allowed places (every VM's whole filesystem, the
controller's lab and state directories) -> a question stored through the app, the backup job run
now, the database VM lost on the node, `restore --vm postgres` (verified, the question still
there) -> a damaged dump fails the restore gate -> lab down -> lab up (a node reboot: VMs, disks
and configs kept) -> plan (no changes) -> the README's command again (changed=0, 0 API writes) ->
lab reset -> up (verified again; host keys of the VMs it re-created replaced, not refused) ->
destroy -> lab down --purge, leaving nothing behind.

The steps share one lab (module scope, in the clone's default lab directory and port) and run
in order. The clone is of the committed HEAD. Slow: the first ``up`` builds llama.cpp's server
from source. Set ``AILAB_E2E_SUMMARY`` to a file path to keep the first and no-op runs' phase
timings and the README command's wall time (CI prints them).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from proxmoxer import ProxmoxAPI

from ailab_deploy.adapters.dumpcheck import BACKUP_DIR, check_latest_dump
from ailab_deploy.adapters.known_hosts import KnownHosts
from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.smoke import HTTP_POST, Targets
from ailab_deploy.core.loader import load_plan
from ailab_deploy.core.report import evaluate_gates
from ailab_deploy.core.units import MIB
from ailab_deploy.lab import control
from ailab_deploy.lab.containers import leftovers
from ailab_deploy.lab.containers.backend import machines_dir
from ailab_deploy.lab.emulator.settings import load_settings
from ailab_deploy.lab.secret_scan import held_secrets, scan_lab
from ailab_deploy.pipeline import up as pipeline

from .conftest import ailab_cli as cli

pytestmark = pytest.mark.e2e


README_MAIN_COMMAND = "bash scripts/setup.sh && .venv/bin/ailab-deploy demo"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Demo:
    """One run of the README's main command: its output and wall time."""

    stdout: str
    stderr: str
    seconds: float

    @property
    def last_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()][-20:]

    def line(self, prefix: str) -> str:
        (found,) = [line for line in self.last_lines if line.startswith(prefix)]
        return found

    def app_urls(self) -> dict[str, str]:
        return {
            match[1]: match[2]
            for line in self.last_lines
            if (match := re.fullmatch(r"app (\S+): (\S+)", line))
        }

    def counts(self) -> dict[str, int]:
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", self.line("changed="))}


@dataclass
class Rehearsal:
    clone: Path
    lab_dir: Path
    plan: str
    demos: list[Demo] = field(default_factory=list)
    first_report: dict[str, Any] | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.plan).parent / ".ailab"

    def vm_addresses(self) -> dict[str, str]:
        return {vm.name: str(vm.ip) for vm in load_plan(Path(self.plan)).plan.vms}

    def vmids(self) -> dict[str, int]:
        return {vm.name: vm.vmid for vm in load_plan(Path(self.plan)).plan.vms}

    def lab_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ailab-deploy lab ...`` from the clone's own venv: `lab up` writes the lab plan with
        the paths of the checkout it runs from, which must stay the clone's."""
        result = subprocess.run(
            [str(self.clone / ".venv" / "bin" / "ailab-deploy"), "lab", *args],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert "Traceback" not in result.stderr and result.returncode == 0, result.stderr[-3000:]
        return result

    def readme_demo(self) -> Demo:
        """The README's main command, as written, in the clone."""
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-c", README_MAIN_COMMAND],
            cwd=self.clone,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
            env={k: v for k, v in os.environ.items() if k not in ("AILAB_LAB_DIR", "AILAB_STATE_DIR")},
        )
        demo = Demo(result.stdout, result.stderr, time.monotonic() - started)
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        self.demos.append(demo)
        return demo


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    clone = tmp_path_factory.mktemp("e2e") / "ailab-deploy"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    lab_dir = clone / ".ailab" / "lab"
    try:
        yield Rehearsal(clone, lab_dir, str(lab_dir / "vms.lab.yaml"))
    finally:
        cli("lab", "down", "--purge", "--lab-dir", str(lab_dir), check=False)


def up(plan: str) -> tuple[dict[str, Any], str]:
    result = cli("up", "--plan", plan, "--json", timeout=3600)
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary, result.stderr


def planned_actions(plan: str) -> dict[str, set[str]]:
    planned = json.loads(cli("plan", "--plan", plan, "--json").stdout)
    return {vm["name"]: {action["action"] for action in vm["actions"]} for vm in planned["vms"]}


def assert_verified(report: dict[str, Any]) -> None:
    llm = report["llm"]
    assert llm["engine"] == "llamacpp" and llm["tokens"] > 0
    assert llm["tokens_per_second"] > 0
    assert llm["predicted_tokens_per_second"] > 0 and llm["bound_tokens_per_second"] > 0
    assert llm["ratio_to_prediction"] == pytest.approx(
        llm["tokens_per_second"] / llm["predicted_tokens_per_second"], rel=1e-2
    )
    if llm["bandwidth_bound_applies"]:
        assert llm["ratio_to_bound"] == pytest.approx(
            llm["tokens_per_second"] / llm["bound_tokens_per_second"], rel=1e-2
        )
    else:  # compute-bound: llama-bench stays below half the bound, so no ratio is given
        assert llm["ratio_to_bound"] is None
        assert llm["engine_ceiling_tokens_per_second"] < 0.5 * llm["bound_tokens_per_second"]
    # The engine's own ceiling on the same VM: llama-bench for the same model, threads and context.
    assert llm["engine_ceiling_tokens_per_second"] > 0
    assert llm["ratio_to_engine_ceiling"] == pytest.approx(
        llm["tokens_per_second"] / llm["engine_ceiling_tokens_per_second"], rel=1e-2
    )
    pgbench = report["pgbench"]
    assert pgbench["tps"] > 0 and pgbench["transactions"] > 0 and pgbench["failed"] == 0
    apps = {app["name"]: app for app in report["apps"]}
    assert set(apps) == {"lab-status", "lab-api"}
    assert all(app["health_status"] == 200 for app in apps.values())
    assert apps["lab-api"]["latency_ms"] > 0  # one request through app -> database -> LLM
    assert {gate["name"] for gate in report["gates"]} >= {"llm tokens/s", "pgbench tps"}
    assert all(gate["passed"] for gate in report["gates"]), report["gates"]
    infra = report["infra"]
    assert infra["passed"] > 20 and infra["failed"] == 0 and infra["errors"] == 0, infra
    assert report["passed"]
    # The Streamlit page in headless Chromium: rendered, statuses ok, a question answered and stored.
    (check,) = report["browser"]
    assert check["app"] == "lab-status" and check["passed"], check
    assert (check["database_status"], check["llm_status"]) == ("ok", "ok")
    assert check["answer"] and check["stored_in_log"] and check["stored_id"] > 0


def assert_noop(run: dict[str, Any], names: list[str]) -> None:
    assert run["api_calls"]["writes"] == 0, run["api_calls"]
    assert run["changed"] == {name: 0 for name in names}, run["changed"]
    assert run["report"]["passed"]


def assert_demo_names_the_lab(demo: Demo, plan_path: str) -> None:
    """The closing lines: verification passed, each app's URL on the apps VM, the way out."""
    plan = load_plan(Path(plan_path)).plan
    assert demo.line("verification: ").startswith("verification: passed"), demo.last_lines
    (apps_vm,) = [vm for vm in plan.vms if "python_app" in vm.roles]
    assert plan.apps is not None
    urls = {name: urlsplit(url) for name, url in demo.app_urls().items()}
    assert set(urls) == {app.name for app in plan.apps.apps}
    for app in plan.apps.apps:
        url = urls[app.name]
        assert url.scheme == "http" and url.hostname is not None
        assert ipaddress.ip_address(url.hostname) == apps_vm.ip
        assert url.port == app.port
    shells = [line for line in demo.last_lines if line.startswith("shell on ")]
    assert len(shells) == len(plan.vms)
    assert "demo --down" in demo.line("tear down: ")


def test_readme_command_in_a_clean_clone_gives_a_verified_lab(lab: Rehearsal) -> None:
    demo = lab.readme_demo()
    print(f"README main command: {demo.seconds:.0f} s from a fresh clone to the last line")
    print("\n".join(demo.last_lines))
    assert_demo_names_the_lab(demo, lab.plan)
    counts = demo.counts()
    assert counts["changed"] > 0 and counts["api_writes"] > 0, counts
    # the demo's report: every measurement, its files, the screenshot
    html_report = Path(demo.line("verification: ").rsplit("report ", 1)[1].rstrip(")"))
    json_report = html_report.parent / "report.json"
    report = json.loads(json_report.read_text())
    assert_verified(report)
    lab.first_report = report
    screenshot = json_report.parent / report["browser"][0]["screenshot"]
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert html_report.name == "report.html" and "data:image/png;base64," in html_report.read_text()
    # Every VM booted with the vendor data node preparation uploaded to the node.
    vendor = (lab.lab_dir / "storage" / "local" / "snippets" / "ailab-vendor.yaml").read_text()
    assert "http://10.77.0.1:8888" in vendor  # the node's storage, which PVE resolves cicustom in
    # Where nobody watches a terminal, the long configure phase still says what happens.
    assert re.search(r"^configure: \S+ \d+ tasks", demo.stderr, re.MULTILINE), demo.stderr[-2000:]
    if os.environ.get("AILAB_E2E_SUMMARY"):
        phases = dict(re.findall(r"(\w+)=([\d.]+)s", _phases(demo)))
        Path(os.environ["AILAB_E2E_SUMMARY"]).write_text(
            json.dumps(
                {"readme_command_seconds": round(demo.seconds), "readme_last_lines": demo.last_lines}
                | {"first": phases},
                indent=2,
            )
            + "\n"
        )


def _phases(demo: Demo) -> str:
    """`up`'s one-line phase timings (``phases: validate=0.1s apply=...``)."""
    (line,) = [line for line in demo.stdout.splitlines() if line.startswith("phases: ")]
    return line


def test_discover_reads_the_lab_node(lab: Rehearsal, tmp_path: Path) -> None:
    """API and SSH (dmidecode, numactl: the lab node's stand-ins for its settings), bandwidth."""
    status = json.loads(lab.lab_cli("status", "--lab-dir", str(lab.lab_dir), "--json").stdout)
    plan_path = tmp_path / "vms.yaml"
    env = {k: v for k, v in os.environ.items() if k != "AILAB_PVE_TOKEN_SECRET"}
    env["AILAB_STATE_DIR"] = str(lab.state_dir)  # where lab up pinned the node's host key
    args = [
        "discover", "--node", status["host"], "--port", str(status["port"]),
        "--token-id", status["deploy_token_id"], "--token-secret-file", status["deploy_token_secret_path"],
        "--fingerprint", status["fingerprint"], "--ssh-host", "10.77.0.2",
        "--ssh-key", str(lab.lab_dir / "ssh" / "lab_ed25519"), "--plan", str(plan_path),
    ]  # fmt: skip
    measured = cli(
        *args, "--measure-bandwidth", "--bandwidth-workers", "1", "--bandwidth-buffer-mb", "32", env=env
    )
    plan = load_plan(plan_path).plan  # validates
    settings = load_settings(lab.lab_dir)
    hardware = settings.hardware
    assert plan.proxmox.node == settings.node
    assert plan.host.cpu_model == hardware["cpu_model"]
    assert (plan.host.sockets, plan.host.cores_per_socket, plan.host.threads_per_core) == (
        int(hardware["sockets"]),
        int(hardware["cores_per_socket"]),
        int(hardware["threads_per_core"]),
    )
    assert plan.host.memory == settings.host_memory // MIB
    assert plan.host.memory_channels_per_socket == int(hardware["memory_channels_per_socket"])
    assert plan.host.memory_mts == int(hardware["memory_mts"])
    assert plan.host.measured_bandwidth_gbs is not None and plan.host.measured_bandwidth_gbs > 0
    disks = {s.storage: s.total for s in settings.storages if "images" in s.content.split(",")}
    assert {s.name: s.capacity for s in plan.host.storage} == disks
    assert "bandwidth probe on NUMA node 1" in measured.stderr  # one per socket
    secret = Path(status["deploy_token_secret_path"]).read_text().strip()
    assert secret not in measured.stdout + measured.stderr + plan_path.read_text()
    # the same node again, without a new measurement: nothing differs
    again = cli(*args, "--quiet", env=env)
    assert again.stdout.strip() == f"{plan_path}: the node's facts match the plan"
    assert "discover: reading" not in again.stderr  # --quiet: no progress lines


def test_second_up_from_python_changes_nothing(lab: Rehearsal) -> None:
    # The same path from Python: pipeline.up returns what it did; nothing is left to change.
    second = pipeline.up(Path(lab.plan))
    assert second.api_calls["writes"] == 0, second.api_calls
    assert second.changed == {name: 0 for name in lab.vmids()}
    assert second.verified is not None and second.verified.report.passed and second.passed
    assert [phase.name for phase in second.phases] == ["validate", "apply", "configure", "verify"]
    assert all(isinstance(phase.seconds, float) and phase.seconds >= 0 for phase in second.phases)
    results = {phase.name: phase.result for phase in second.phases}
    assert results["apply"] == "0 API writes" and results["configure"] == "changed=0", results
    # Every check still runs on a no-op: the same testinfra outcome as the first run.
    second_infra = second.verified.report.infra
    assert lab.first_report is not None, "the README command's run comes first"
    first_infra = lab.first_report["infra"]
    assert {key: second_infra.get(key) for key in first_infra} == first_infra
    if os.environ.get("AILAB_E2E_SUMMARY"):
        summary_file = Path(os.environ["AILAB_E2E_SUMMARY"])
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        noop = {
            "seconds": round(second.seconds, 1),
            "phases": {phase.name: round(phase.seconds, 1) for phase in second.phases},
            "changed": second.changed,
            "api_writes": second.api_calls["writes"],
            "ansible_strategy": second.configured.playbook.strategy if second.configured else None,
            "testinfra": {"first": first_infra, "noop": second_infra},
        }
        summary |= {"second": second.to_dict()["phases"], "noop": noop}
        summary_file.write_text(json.dumps(summary, indent=2) + "\n")


def test_llm_needs_its_key(lab: Rehearsal) -> None:
    """From the apps VM (the LLM's only client): 401 without the key or with a wrong one, 200 with it."""
    targets = Targets(load_plan(Path(lab.plan)), lab.state_dir)
    llm_vm, apps_vm = targets.vm_with_role("llm"), targets.vm_with_role("python_app")
    url = f"http://{llm_vm.ip}:{targets.loaded.plan.llm.port}/completion"
    body = json.dumps({"prompt": "Hello", "n_predict": 1})
    post = ["python3", "-c", HTTP_POST, url, "120"]  # the key goes on stdin, never into argv
    with targets.ssh(apps_vm) as session:
        missing = session.run(post, stdin="\n" + body, timeout=180)
        wrong = session.run(post, stdin="not-the-key\n" + body, timeout=180)
        right = session.run(post, stdin=f"{targets.llm_api_key()}\n{body}", timeout=180)
    assert (missing.rc, missing.stderr.strip()) == (1, "HTTP 401")
    assert (wrong.rc, wrong.stderr.strip()) == (1, "HTTP 401")
    assert right.rc == 0 and "content" in json.loads(right.stdout), right.stderr


def test_no_secret_outside_its_allowed_places(lab: Rehearsal) -> None:
    """Every secret the controller holds, searched in every VM's whole filesystem and on the
    controller side after two converges and verifications; hits are reported by label only."""
    secrets = held_secrets(lab.lab_dir, Path(lab.plan))
    assert {secret.kind for secret in secrets} == {"api-token", "database-password", "llm-api-key"}
    result = scan_lab(lab.lab_dir, secrets, Path(lab.plan))
    coverage = {where: {"files": seen.files, "bytes": seen.bytes} for where, seen in result.coverage.items()}
    print(f"secret scan coverage: {coverage}")
    for hit in result.hits:
        print(f"secret scan: {hit}")
    vms = {where for where in coverage if where.startswith("vm ")}
    assert len(vms) >= 4, coverage  # three VMs and the node
    assert all(coverage[where]["files"] > 1000 for where in vms), coverage
    assert [str(hit) for hit in result.violations] == []
    outputs = [text for demo in lab.demos for text in (demo.stdout, demo.stderr)]
    assert [s.label for s in secrets if any(s.value in output for output in outputs)] == []
    if os.environ.get("AILAB_E2E_SUMMARY"):
        summary_file = Path(os.environ["AILAB_E2E_SUMMARY"])
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        summary_file.write_text(json.dumps(summary | {"secret_scan": coverage}, indent=2) + "\n")


ARCHIVE_NAME = re.compile(r"\w[\w.-]*:backup/vzdump-qemu-(\d+)-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.vma\.zst")


def _node_as_root(lab: Rehearsal) -> ProxmoxAPI:
    """The lab node with its housekeeping token: what happens on the node behind the tool's back."""
    paths = control.LabPaths(lab.lab_dir)
    port = load_plan(Path(lab.plan)).plan.proxmox.port
    user, _, token = control.TOKEN_ID.partition("!")
    return ProxmoxAPI(
        "127.0.0.1",
        port=port,
        user=user,
        token_name=token,
        token_value=paths.token_secret.read_text().strip(),
        verify_ssl=str(paths.cert),
    )


def _stored_question(targets: Targets, stored_id: int) -> str:
    database_vm = targets.vm_with_role("postgresql")
    database = next(app.database for app in targets.loaded.plan.apps.apps if app.database)
    sql = f"SELECT question FROM exchanges WHERE id = {int(stored_id)}"
    argv = ["sudo", "-n", "-u", "postgres", "psql", "-X", "-At", "-d", str(database), "-c", sql]
    with targets.ssh(database_vm) as session:
        return session.check(argv, timeout=60).strip()


def test_a_lost_database_vm_comes_back_from_its_archive(lab: Rehearsal) -> None:
    """The home-lab owner's worst day, rehearsed: a question stored through the app, the backup job
    run now, the database VM lost on the node (deleted there; the tool's records are untouched, as
    a dead disk leaves them), `restore --vm postgres`: verify passes and the question is there."""
    loaded = load_plan(Path(lab.plan))
    targets = Targets(loaded, lab.state_dir)
    apps_vm, database_vm = targets.vm_with_role("python_app"), targets.vm_with_role("postgresql")
    api_app = next(app for app in loaded.plan.apps.apps if app.kind == "asgi")
    question = "In one sentence: why keep backups?"
    web = requests.Session()
    web.trust_env = False  # the apps are on the lab network, never behind a proxy
    asked = web.post(f"http://{apps_vm.ip}:{api_app.port}/ask", json={"question": question}, timeout=600)
    assert asked.status_code == 200, asked.text
    stored_id = int(asked.json()["stored_id"])
    assert stored_id > 0 and _stored_question(targets, stored_id) == question

    listing = json.loads(cli("backups", "--plan", lab.plan, "--run", "--json", timeout=1800).stdout)
    archives = [item for item in listing["backups"] if item["kind"] == "archive"]
    assert {item["vm"] for item in archives} == set(lab.vmids())  # the job backs up every VM
    newest = min((item for item in archives if item["vm"] == database_vm.name), key=lambda i: i["age_hours"])
    match = ARCHIVE_NAME.fullmatch(newest["name"])
    assert match is not None and int(match.group(1)) == database_vm.vmid
    assert newest["size"] > 1024**2 and newest["age_hours"] < 0.5  # a disk, not a config alone; just now
    assert newest["notes"] == database_vm.name  # the job's notes template
    dumps = [item for item in listing["backups"] if item["kind"] == "dump"]
    assert dumps and all(item["vm"] == database_vm.name and item["size"] > 0 for item in dumps)

    known_hosts = KnownHosts(lab.state_dir)
    keys_before = known_hosts.keys_for(str(database_vm.ip))
    node = _node_as_root(lab).nodes(loaded.plan.proxmox.node)
    for step in (node.qemu(database_vm.vmid).status.stop.post, node.qemu(database_vm.vmid).delete):
        upid = step()
        for _ in range(600):
            status = node.tasks(upid).status.get()
            if status["status"] == "stopped":
                break
            time.sleep(0.5)
        assert status.get("exitstatus") == "OK", status
    assert planned_actions(lab.plan)[database_vm.name] == {"create"}

    result = cli("restore", "--plan", lab.plan, "--vm", database_vm.name, "--yes", "--json", timeout=3600)
    restored = json.loads(result.stdout)
    print(
        f"restore of the database VM: qmrestore {restored['restore_seconds']:.1f} s, running with "
        f"its host keys after {restored['seconds']:.1f} s (archive {newest['size'] / 1024**2:.0f} MiB)"
    )
    assert (restored["vm"], restored["vmid"], restored["archive"]) == (
        database_vm.name,
        database_vm.vmid,
        newest["name"],
    )
    assert 0 < restored["restore_seconds"] <= restored["seconds"]
    assert restored["passed"], restored["verify"]
    assert_verified(restored["verify"])
    gates = {gate["name"]: gate for gate in restored["verify"]["gates"]}
    assert gates["database dump restores"]["passed"] and gates["database dump age hours"]["passed"]
    assert "ssh: host keys match" in result.stderr  # the restored VM kept its keys
    assert known_hosts.keys_for(str(database_vm.ip)) == keys_before
    assert _stored_question(targets, stored_id) == question
    assert planned_actions(lab.plan)[database_vm.name] == {"no-op"}
    if os.environ.get("AILAB_E2E_SUMMARY"):
        summary_file = Path(os.environ["AILAB_E2E_SUMMARY"])
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        timing = {key: restored[key] for key in ("restore_seconds", "seconds")}
        summary_file.write_text(json.dumps(summary | {"restore": timing}, indent=2) + "\n")


def test_a_damaged_dump_fails_the_restore_gate(lab: Rehearsal) -> None:
    """One byte of the newest dump changed: the restore check names the dump and its checksums,
    and the restore gate fails; with the dump whole again, it passes."""
    loaded = load_plan(Path(lab.plan))
    targets = Targets(loaded, lab.state_dir)
    database_vm = targets.vm_with_role("backup")
    find_newest = f"ls -1 {BACKUP_DIR}/manifest-*.json | tail -n 1"
    with targets.ssh(database_vm) as session:
        # a dump now, as the nightly timer takes it: it holds the app's tables and the stored question
        session.check(["sudo", "-n", "systemctl", "start", "ailab-pg-backup.service"], timeout=600)
        manifest = json.loads(session.check(["sudo", "-n", "sh", "-c", f"cat $({find_newest})"]))
        dump = f"{BACKUP_DIR}/{next(iter(manifest['databases'].values()))['file']}"
        session.check(["sudo", "-n", "cp", "-p", dump, "/root/dump.whole"])
        # the byte in the middle of the file, inverted
        flip = (
            "import os, sys; f = open(sys.argv[1], 'r+b'); f.seek(os.path.getsize(sys.argv[1]) // 2); "
            "b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0xFF]))"
        )
        session.check(["sudo", "-n", "python3", "-c", flip, dump])
    try:
        damaged = check_latest_dump(targets)
        assert not damaged.passed
        assert any(
            p.endswith("the manifest says " + next(iter(manifest["databases"].values()))["sha256"][:12] + "…")
            and f"dump {Path(dump).name} is damaged" in p
            for p in damaged.problems
        ), damaged.problems
        gates = evaluate_gates(loaded.plan.verify, None, None, (), dump=damaged, dump_expected=True)
        restores = next(gate for gate in gates if gate.name == "database dump restores")
        age = next(gate for gate in gates if gate.name == "database dump age hours")
        assert not restores.passed and age.passed  # the dump is recent, but it does not restore
    finally:
        with targets.ssh(database_vm) as session:
            session.check(["sudo", "-n", "cp", "-p", "/root/dump.whole", dump])
            session.check(["sudo", "-n", "rm", "/root/dump.whole"])
    whole = check_latest_dump(targets)
    assert whole.passed and whole.problems == () and whole.rows > 0, whole


def test_lab_down_and_up_is_a_node_reboot(lab: Rehearsal) -> None:
    lab.lab_cli("down", "--lab-dir", str(lab.lab_dir))
    assert leftovers() == []  # no process, mount, netns, veth, bridge or firewall of the lab
    disks = {path.name for path in machines_dir(lab.lab_dir).iterdir()}
    assert {str(vmid) for vmid in lab.vmids().values()} <= disks

    status = json.loads(lab.lab_cli("up", "--lab-dir", str(lab.lab_dir), "--json").stdout)
    assert status["running"] and status["startall"] == "OK"
    assert planned_actions(lab.plan) == {name: {"no-op"} for name in lab.vmids()}
    # the README's command again: set-up and lab up have nothing to do, up changes nothing
    again = lab.readme_demo()
    assert_demo_names_the_lab(again, lab.plan)
    assert again.counts() == {"changed": 0, "api_writes": 0}, again.last_lines


def test_lab_reset_leaves_a_consistent_world(lab: Rehearsal) -> None:
    known_hosts = KnownHosts(lab.state_dir)
    before = known_hosts.path.read_text()
    addresses = lab.vm_addresses()
    old_keys = {address: known_hosts.keys_for(address) for address in addresses.values()}
    assert all(old_keys.values())

    reset = lab.lab_cli("reset", "--lab-dir", str(lab.lab_dir))
    assert int(reset.stdout.split()[1]) == len(addresses)  # "removed N VM(s); ..."
    assert all(known_hosts.keys_for(address) == set() for address in addresses.values())
    with Ledger(lab.state_dir) as ledger:
        assert ledger.managed_vmids() == set()
    node = ipaddress.ip_address("10.77.0.2")
    assert known_hosts.keys_for(str(node)), "the node's pinned key survives a reset"

    # A controller whose records lag behind (the VMs rebuilt behind its back, by hand or by an
    # older version): apply re-creates the VMs itself, so their new keys replace the old ones.
    known_hosts.path.write_text(before)
    rebuilt, progress = up(lab.plan)
    assert_verified(rebuilt["report"])
    for name, address in addresses.items():
        assert f"{name}: ssh: replaced" in progress, progress[-3000:]
        new_keys = known_hosts.keys_for(address)
        assert new_keys and not new_keys & old_keys[address], f"{name}: old keys still trusted"
        lookup = ["ssh-keygen", "-F", address, "-f", str(known_hosts.path)]
        found = subprocess.run(lookup, capture_output=True, check=False)
        assert found.returncode == 0  # OpenSSH's own lookup finds the new entry


def test_destroy_then_purge_leaves_nothing(lab: Rehearsal) -> None:
    cli("destroy", "--plan", lab.plan, "--yes")
    assert planned_actions(lab.plan) == {name: {"create"} for name in lab.vmids()}
    lab.lab_cli("down", "--purge", "--lab-dir", str(lab.lab_dir))
    assert leftovers(lab.lab_dir) == []
