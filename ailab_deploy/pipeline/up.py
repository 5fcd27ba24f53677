"""`up`: validate -> apply -> configure -> verify, with the wall time of each phase.

Callable from Python: :func:`up` returns an :class:`UpResult`; a failing phase raises
:class:`UpFailed`, which carries what was done until then. Progress goes to an
:class:`UpObserver` (the CLI renders it; the default is silent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.adapters.runner import HostTally
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.core.loader import LoadedPlan, load_plan
from ailab_deploy.errors import AilabError
from ailab_deploy.pipeline.configure import ConfigureOutcome, configure
from ailab_deploy.pipeline.provision import ApplyOptions, ApplyReport, Provisioner
from ailab_deploy.pipeline.verify import VerifyOutcome, verify


@dataclass(frozen=True)
class PhaseTiming:
    name: str
    seconds: float
    result: str  # one short line: what the phase did, or "failed"


@dataclass(frozen=True)
class UpOptions:
    parallel: int = 4  # VMs provisioned at once
    verify: bool = True  # False stops after configure


@dataclass
class UpResult:
    plan_path: Path | None = None
    phases: list[PhaseTiming] = field(default_factory=list)
    applied: ApplyReport | None = None
    configured: ConfigureOutcome | None = None
    verified: VerifyOutcome | None = None

    @property
    def api_calls(self) -> dict[str, Any]:
        return self.applied.api_calls if self.applied else {}

    @property
    def changed(self) -> dict[str, int]:
        """Tasks changed per host in the configure phase."""
        if self.configured is None:
            return {}
        return {name: tally.changed for name, tally in self.configured.playbook.hosts.items()}

    @property
    def passed(self) -> bool:
        """Configured, and verified if verification ran, without failures or missing measurements."""
        if self.configured is None or not self.configured.playbook.succeeded:
            return False
        return self.verified is None or (self.verified.report.passed and not self.verified.problems)

    @property
    def seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "plan": str(self.plan_path) if self.plan_path else None,
            "phases": [
                {"phase": p.name, "seconds": round(p.seconds, 1), "result": p.result} for p in self.phases
            ],
        }
        if self.applied is not None:
            data["api_calls"] = self.api_calls
        if self.configured is not None:
            data["changed"] = self.changed
        if self.verified is not None:
            data["report"] = self.verified.report.to_dict() | {"problems": list(self.verified.problems)}
            verified = self.verified
            data["report_files"] = [
                str(verified.json_path),
                str(verified.markdown_path),
                str(verified.html_path),
            ]
        return data


class UpFailed(AilabError):
    """A phase failed; ``result`` holds the phases (and outcomes) up to and including it."""

    def __init__(self, message: str, result: UpResult, exit_code: int = 1) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


class UpObserver:
    """What `up` reports while it runs; every method does nothing unless overridden."""

    def loaded(self, loaded: LoadedPlan) -> None: ...

    def progress(self, message: str) -> None: ...

    def phase_started(self, name: str) -> None: ...

    def phase_finished(self, phase: PhaseTiming) -> None: ...

    def hosts(self, tallies: dict[str, HostTally]) -> None: ...

    def configured(self, outcome: ConfigureOutcome) -> None: ...

    def verified(self, outcome: VerifyOutcome) -> None: ...


class _Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.result = ""


def up(
    plan_path: Path,
    options: UpOptions | None = None,
    *,
    observer: UpObserver | None = None,
    client_factory: Callable[[LoadedPlan], ProxmoxClient] = ProxmoxClient.from_plan,
    clock: Callable[[], float] = time.monotonic,
) -> UpResult:
    """Take the plan from nothing (or from where it is) to configured and verified VMs."""
    options = options or UpOptions()
    watch = observer or UpObserver()
    result = UpResult()

    @contextmanager
    def timed(name: str) -> Iterator[_Phase]:
        phase = _Phase(name)
        watch.phase_started(name)
        started = clock()
        try:
            yield phase
        except BaseException:
            phase.result = phase.result or "failed"
            raise
        finally:
            timing = PhaseTiming(name, clock() - started, phase.result)
            result.phases.append(timing)
            watch.phase_finished(timing)

    try:
        with timed("validate") as phase:
            loaded = load_plan(plan_path)
            result.plan_path = loaded.path
            watch.loaded(loaded)
            phase.result = f"{len(loaded.plan.vms)} VMs"
        client = client_factory(loaded)
        state = state_dir_for(loaded.path)
        with Ledger(state, secrets=client.secrets) as ledger:
            with timed("apply") as phase:
                provisioner = Provisioner(loaded, client, ledger, state, progress=watch.progress)
                result.applied = provisioner.apply(ApplyOptions(parallel=options.parallel))
                phase.result = f"{result.api_calls.get('writes', 0)} API writes"

            with timed("configure") as phase:
                result.configured = configure(loaded, ledger=ledger, on_progress=watch.hosts)
                watch.configured(result.configured)
                phase.result = f"changed={result.configured.playbook.changed}"
            if not result.configured.playbook.succeeded:
                raise UpFailed(f"configure failed (run {result.configured.run_id})", result)

            if options.verify:
                with timed("verify") as phase:
                    result.verified = verify(loaded, ledger=ledger)
                    watch.verified(result.verified)
                    phase.result = "passed" if result.verified.report.passed else "FAILED"
    except UpFailed:
        raise
    except AilabError as error:
        raise UpFailed(str(error), result, error.exit_code) from error
    if not result.passed and result.verified is not None:
        failed = "; ".join(result.verified.failures())
        raise UpFailed(f"verification failed (run {result.verified.run_id}): {failed}", result)
    return result
