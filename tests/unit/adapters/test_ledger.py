from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ailab_deploy.adapters.ledger import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Ledger,
    TransitionError,
    apply_lock,
)
from ailab_deploy.adapters.secrets import SecretStore
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.errors import AilabError

PLAN_HASH = "ab" * 32


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / ".ailab") as opened:
        yield opened


def test_state_dir_is_next_to_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AILAB_STATE_DIR", raising=False)
    assert state_dir_for(tmp_path / "lab" / "vms.yaml") == tmp_path / "lab" / ".ailab"


def test_state_dir_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILAB_STATE_DIR", str(tmp_path / "elsewhere"))
    assert state_dir_for(tmp_path / "vms.yaml") == tmp_path / "elsewhere"


def test_ledger_file_is_wal_and_private(ledger: Ledger) -> None:
    assert ledger.path.name == "ledger.sqlite"
    assert oct(ledger.path.stat().st_mode & 0o777) == oct(0o600)
    mode = sqlite3.connect(ledger.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_run_records_steps_events_and_reports(ledger: Ledger, tmp_path: Path) -> None:
    with ledger.start_run("apply", PLAN_HASH) as run:
        create = run.step("postgres", "create")
        assert create.state == "pending"
        create.start()
        create.succeed("cloned from 9000")
        configure = run.step("llm", "configure")
        configure.start()
        configure.fail("ollama did not answer")
        run.step("apps", "configure").skip("depends on llm")
        run.event("starting", vm="postgres")
        run.attach_report("verify-json", tmp_path / "report.json")

    detail = ledger.run(run.id)
    assert detail.summary.status == FAILED  # a failed step fails the run
    assert (detail.summary.steps_succeeded, detail.summary.steps_failed) == (1, 1)
    assert detail.summary.steps_total == 3
    assert [(s.vm, s.phase, s.state) for s in detail.steps] == [
        ("postgres", "create", SUCCEEDED),
        ("llm", "configure", FAILED),
        ("apps", "configure", SKIPPED),
    ]
    assert detail.steps[0].detail == "cloned from 9000"
    assert detail.steps[0].duration is not None and detail.steps[0].duration >= 0
    assert detail.steps[1].error == "ollama did not answer"
    assert detail.steps[2].detail == "depends on llm"
    assert [(e.level, e.vm, e.message) for e in detail.events] == [("info", "postgres", "starting")]
    assert [(r.kind, r.path) for r in detail.reports] == [("verify-json", str(tmp_path / "report.json"))]
    assert ledger.reports(run.id, "verify-json") == [tmp_path / "report.json"]
    assert ledger.reports(run.id, "other") == []


def test_a_clean_run_succeeds(ledger: Ledger) -> None:
    with ledger.start_run("plan", PLAN_HASH) as run:
        step = run.step("postgres", "create")
        step.start()
        step.succeed()
    summary = ledger.runs()[0]
    assert summary.status == SUCCEEDED
    assert summary.command == "plan"
    assert summary.plan_hash_short == PLAN_HASH[:12]
    assert summary.duration is not None


def test_an_exception_fails_the_run_and_its_open_steps(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.start_run("apply", PLAN_HASH) as run:
        running = run.step("postgres", "create")
        running.start()
        run.step("llm", "create")
        raise RuntimeError("clone failed: no space left")
    detail = ledger.run(run.id)
    assert detail.summary.status == FAILED
    assert detail.error == "clone failed: no space left"
    assert [(s.state, s.error) for s in detail.steps] == [
        (FAILED, "clone failed: no space left"),
        (SKIPPED, None),
    ]


def test_explicit_finish_is_kept(ledger: Ledger) -> None:
    with ledger.start_run("destroy", PLAN_HASH) as run:
        run.finish("failed")
    assert ledger.run(run.id).summary.status == FAILED
    with pytest.raises(TransitionError, match="already finished"):
        run.finish("succeeded")


def test_finish_rejects_unknown_status(ledger: Ledger) -> None:
    run = ledger.start_run("apply", PLAN_HASH)
    with pytest.raises(ValueError, match="run status 'done'"):
        run.finish("done")


@pytest.mark.parametrize(
    ("moves", "illegal"),
    [
        ([], "succeed"),  # pending -> succeeded
        ([], "fail"),  # pending -> failed
        (["start"], "start"),  # running -> running
        (["start", "succeed"], "fail"),  # final
        (["skip"], "start"),  # final
    ],
)
def test_illegal_step_transitions_raise(ledger: Ledger, moves: list[str], illegal: str) -> None:
    step = ledger.start_run("apply", PLAN_HASH).step("postgres", "create")
    arguments = {"start": (), "succeed": ("ok",), "fail": ("boom",), "skip": ("why",)}
    for move in moves:
        getattr(step, move)(*arguments[move])
    before = step.state
    with pytest.raises(TransitionError, match=f"cannot go from {before}"):
        getattr(step, illegal)(*arguments[illegal])
    assert step.state == before


def test_pending_step_can_be_skipped(ledger: Ledger) -> None:
    step = ledger.start_run("apply", PLAN_HASH).step("postgres", "create")
    step.skip("already exists")
    assert step.state == SKIPPED


def test_secrets_are_masked_before_they_are_stored(ledger: Ledger) -> None:
    password = SecretStore(ledger.state_dir).get_or_generate("postgresql-ailab.password")
    ledger.add_secret("s3cr3t-token-value")
    with ledger.start_run("apply", PLAN_HASH) as run:
        step = run.step("postgres", "configure")
        step.start()
        step.fail(f"psql: password {password} rejected; token s3cr3t-token-value")
        run.event("Authorization: PVEAPIToken=root@pam!ci=0b9e1c55-5e0c-4e8a-9d1b-6a4f3e2d1c0b")
    raw = ledger.path.read_bytes() + ledger.path.with_name("ledger.sqlite-wal").read_bytes()
    assert password.encode() not in raw
    assert b"s3cr3t-token-value" not in raw
    assert b"0b9e1c55" not in raw
    detail = ledger.run(run.id)
    assert detail.steps[0].error == "psql: password *** rejected; token ***"


def test_managed_vms(ledger: Ledger) -> None:
    ledger.record_vm(100, "postgres")
    ledger.record_vm(101, "llm")
    ledger.record_vm(100, "postgres-renamed")  # recording again is not an error
    ledger.forget_vm(101)
    ledger.forget_vm(999)  # forgetting an unknown one neither
    assert ledger.managed_vmids() == {100}


def test_managed_vms_survive_reopening(tmp_path: Path) -> None:
    with Ledger(tmp_path) as first:
        first.record_vm(105, "x")
    with Ledger(tmp_path) as second:
        assert second.managed_vmids() == {105}


def test_runs_lists_newest_first_with_limit(ledger: Ledger) -> None:
    ids = []
    for command in ("plan", "apply", "verify"):
        with ledger.start_run(command, PLAN_HASH) as run:
            ids.append(run.id)
    assert [r.command for r in ledger.runs()] == ["verify", "apply", "plan"]
    assert [r.id for r in ledger.runs(limit=2)] == ids[:0:-1]


def test_unknown_run_is_a_user_error(ledger: Ledger) -> None:
    with pytest.raises(AilabError, match="no run 42"):
        ledger.run(42)


def test_a_run_whose_process_died_shows_interrupted(ledger: Ledger) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    run = ledger.start_run("apply", PLAN_HASH)
    with sqlite3.connect(ledger.path) as db:  # as if that process had started the run
        db.execute("UPDATE runs SET pid = ? WHERE id = ?", (int(dead.stdout), run.id))
    assert ledger.runs()[0].status == INTERRUPTED
    live = ledger.start_run("apply", PLAN_HASH)
    assert ledger.run(live.id).summary.status == RUNNING


def test_steps_from_many_threads(ledger: Ledger) -> None:
    run = ledger.start_run("apply", PLAN_HASH)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for phase in ("create", "start", "configure"):
                step = run.step(f"vm{index}", phase)
                step.start()
                step.succeed()
                run.event(f"{phase} done", vm=f"vm{index}")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.finish("succeeded")
    assert errors == []
    detail = ledger.run(run.id)
    assert detail.summary.steps_succeeded == 24
    assert len(detail.events) == 24


def test_apply_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    with apply_lock(tmp_path, PLAN_HASH):
        # flock locks belong to the open file description: a second open conflicts even in-process.
        with pytest.raises(AilabError) as refused, apply_lock(tmp_path, PLAN_HASH):
            pass
        message = str(refused.value)
        assert f"pid {os.getpid()} since " in message
        assert "another apply of this plan is running" in message
        assert "\n" not in message
        assert refused.value.exit_code == 1
    with apply_lock(tmp_path, PLAN_HASH):  # released on exit
        pass


def test_apply_lock_is_freed_when_the_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from ailab_deploy.adapters.ledger import apply_lock\n"
            f"with apply_lock(Path({str(tmp_path)!r}), 'h'):\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(AilabError, match=f"pid {holder.pid} "), apply_lock(tmp_path, PLAN_HASH):
            pass
    finally:
        holder.kill()
        holder.wait()
    with apply_lock(tmp_path, PLAN_HASH):  # the kernel dropped the dead process's lock
        pass
