"""init, discover's bad input, demo's options, and the plain progress lines of a long `up`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from ailab_deploy.adapters.runner import HostTally
from ailab_deploy.cli import up as up_cli
from ailab_deploy.cli.up import PLAIN_PROGRESS_SECONDS, plain_progress_line

from .test_broken_plans import run_cli

SEED = Path(__file__).resolve().parents[3] / "vms.yaml"


def test_init_writes_the_starter_plan_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "vms.yaml"
    code, out, _ = run_cli(["init", "--plan", str(plan)], capsys)
    assert code == 0 and plan.read_text() == SEED.read_text() and f"wrote {plan}" in out
    assert run_cli(["validate", "--plan", str(plan)], capsys)[0] == 0
    plan.write_text("# mine\n")
    code, _, err = run_cli(["init", "--plan", str(plan)], capsys)
    assert code == 2 and plan.read_text() == "# mine\n"
    assert err.strip().count("\n") == 0 and "already exists" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-secret-env", "AILAB_TEST_UNSET_SECRET"], "AILAB_TEST_UNSET_SECRET is not set"),
        (["--token-secret-file", "/nonexistent/secret"], "does not exist"),
        (["--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
        (["--ssh-key", "/nonexistent/key"], "--ssh-key"),
        (["--port", "0"], "--port"),
    ],
)
def test_discover_bad_input_is_one_line_and_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AILAB_TEST_UNSET_SECRET", raising=False)
    monkeypatch.delenv("AILAB_PVE_TOKEN_SECRET", raising=False)
    code, _, err = run_cli(
        ["discover", "--node", "192.0.2.1", "--plan", str(tmp_path / "p.yaml"), *args], capsys
    )
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "p.yaml").exists()


def test_discover_secret_file_must_be_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AILAB_PVE_TOKEN_SECRET", raising=False)
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value-never-printed\n")
    secret.chmod(0o644)
    code, out, err = run_cli(
        [
            "discover",
            "--node",
            "192.0.2.1",
            "--token-secret-file",
            str(secret),
            "--plan",
            str(tmp_path / "p.yaml"),
        ],
        capsys,
    )
    assert code == 2 and "must be 0600" in err
    assert "s3cr3t-value-never-printed" not in out + err


def test_demo_purge_needs_down(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["demo", "--purge"], capsys)
    assert code == 2 and "--purge goes with --down" in err


def test_plain_progress_line_counts_tasks_per_host() -> None:
    line = plain_progress_line(
        "configure",
        {
            "postgres": HostTally(ok=10, changed=4, skipped=2, task="postgresql : install"),
            "devapps": HostTally(ok=3, changed=0, failed=1),
        },
    )
    assert line == (
        "configure: devapps 4 tasks (0 changed, 1 failed); "
        "postgres 16 tasks (4 changed) [postgresql : install]"
    )


def test_progress_lines_reach_a_log_at_most_every_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(up_cli, "err", Console(file=log, force_terminal=False, width=200))
    now = [0.0]
    printer = up_cli._Printer(Console(file=io.StringIO(), force_terminal=False), False, clock=lambda: now[0])
    printer.phase_started("configure")
    for step in range(10):  # ten task events, one second apart
        now[0] = float(step)
        printer.hosts({"postgres": HostTally(ok=step)})
    lines = log.getvalue().splitlines()
    assert lines[0] == "configure: started"
    progress = [line for line in lines if line.startswith("configure: postgres")]
    assert len(progress) == 1 + int(9 // PLAIN_PROGRESS_SECONDS)
    assert progress[0] == "configure: postgres 0 tasks (0 changed)"

    quiet_log = io.StringIO()
    monkeypatch.setattr(up_cli, "err", Console(file=quiet_log, force_terminal=False))
    quiet = up_cli._Printer(Console(file=io.StringIO()), False, quiet=True, clock=lambda: now[0])
    quiet.phase_started("configure")
    quiet.hosts({"postgres": HostTally(ok=1)})
    quiet.progress("apply: postgres: cloned")
    assert quiet_log.getvalue() == ""


def test_demo_closing_lines_name_each_app_and_a_shell_per_vm() -> None:
    import ipaddress
    from urllib.parse import urlsplit

    from ailab_deploy.cli.demo import closing_lines
    from ailab_deploy.core.loader import load_plan
    from ailab_deploy.pipeline.up import UpResult

    plan = load_plan(SEED).plan
    lines = closing_lines(plan, SEED, UpResult(), "ailab-deploy")
    apps = {
        line.split(":", 1)[0].removeprefix("app "): line.split(": ", 1)[1]
        for line in lines
        if line.startswith("app ")
    }
    (apps_vm,) = [vm for vm in plan.vms if "python_app" in vm.roles]
    assert plan.apps is not None and set(apps) == {app.name for app in plan.apps.apps}
    for app in plan.apps.apps:
        url = urlsplit(apps[app.name])
        assert url.hostname is not None and ipaddress.ip_address(url.hostname) == apps_vm.ip
        assert url.port == app.port
    shells = [line for line in lines if line.startswith("shell on ")]
    assert [line.split(":")[0].removeprefix("shell on ") for line in shells] == [vm.name for vm in plan.vms]
    assert all(
        line.endswith(f"{plan.template.admin_user}@{vm.ip}")
        for line, vm in zip(shells, plan.vms, strict=True)
    )
    assert lines[-1].startswith("tear down: ailab-deploy demo --down")
    assert "changed=0 api_writes=0" in lines
