"""Verification: testinfra against the inventory, smoke tests that measure, gates, reports.

Reports are written per run as JSON and Markdown under ``<state>/reports/run-<id>/`` and
linked from the run ledger.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ailab_deploy.adapters.browser import Browser, check_streamlit_app, find_browser
from ailab_deploy.adapters.dumpcheck import check_latest_dump
from ailab_deploy.adapters.inventory import generate_inventory, inventory_listing
from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.runner import project_root
from ailab_deploy.adapters.smoke import Targets, measure_apps, measure_llm, measure_pgbench
from ailab_deploy.adapters.statedir import browser_cache_dir, state_dir_for
from ailab_deploy.core.loader import LoadedPlan, private_key_of
from ailab_deploy.core.report import BrowserResult, Report, electricity_of, evaluate_gates, render_markdown
from ailab_deploy.core.sizing import size_plan
from ailab_deploy.errors import AilabError
from ailab_deploy.pipeline.configure import plan_addresses
from ailab_deploy.pipeline.html_report import write_html_report

T = TypeVar("T")
CONTROLLER_TESTS = "test_controller.py"  # tests of the controller's own files, not of a host
HOST_SCHEME = "ailab-root-shell"  # tests/infra/root_shell.py: each host's root commands in one process


@dataclass(frozen=True)
class VerifyOutcome:
    run_id: int
    report: Report
    json_path: Path
    markdown_path: Path
    html_path: Path
    problems: tuple[str, ...]  # measurements that could not be taken

    def failures(self) -> list[str]:
        """What made the run fail, a short phrase each: the report's failures, then the problems."""
        return self.report.failures() + list(self.problems)


def run_testinfra(
    inventory: Path,
    listing: Path | None,
    state_dir: Path,
    junit: Path,
    plan: Path,
    hosts: Sequence[str],
    *,
    scheme: str = HOST_SCHEME,
) -> dict[str, Any]:
    """Run tests/infra with pytest against the generated inventory; outcome counts from JUnit XML.

    One pytest per host, all at once: the hosts answer in parallel. Each process runs its host's
    commands in one root process on the host, over the SSH master connection configure's runs
    leave open (the project's ansible.cfg: ControlMaster/ControlPersist), and reads the inventory
    from ``listing`` (:func:`inventory_listing`) instead of listing it again. ``scheme="ansible"``
    and no ``listing`` is testinfra's own way, for comparison. The suite also gets the plan: it
    works out the values that matter from the plan itself.
    """
    root = project_root()
    suite = root / "tests" / "infra"
    if not suite.is_dir():
        return {"errors": 1, "detail": f"{suite} is missing"}
    env = {
        "AILAB_STATE_DIR": str(state_dir),
        "AILAB_PLAN": str(plan.absolute()),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(Path.home()),
        # testinfra reads ssh_args and control_path from here (else: one SSH connection a command).
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        # Only testinfra's plugin (below): the others installed beside it cost a quarter second
        # of CPU in each process and the suite uses none of them.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    } | ({"AILAB_INVENTORY_LISTING": str(listing)} if listing else {})
    (Path.home() / ".ansible" / "cp").mkdir(parents=True, exist_ok=True)
    runs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for index, host in enumerate(hosts):
        host_junit = junit.with_name(f"{junit.stem}-{host}{junit.suffix}")
        host_junit.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(suite),
            "-q",
            "-p",
            "testinfra.plugin",
            "-p",
            "no:cacheprovider",
            f"--ansible-inventory={inventory}",
            f"--hosts={scheme}://{host}",
            "--sudo",  # secret files, sshd -T and nft need root; the admin user has passwordless sudo
            f"--junitxml={host_junit}",
        ]
        if index > 0:  # the controller's side is checked once, with the first host
            command.append(f"--ignore={suite / CONTROLLER_TESTS}")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        runs[host] = (process, host_junit)
    totals = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    details: list[str] = []
    for host, (process, host_junit) in runs.items():
        try:
            output, _ = process.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if not host_junit.is_file():
            totals["errors"] += 1
            details.append(f"{host}: {output[-500:]}")
            continue
        for key, value in _junit_counts(host_junit).items():
            totals[key] += value
    return totals | ({"detail": "; ".join(details)} if details else {})


def _junit_counts(junit: Path) -> dict[str, int]:
    suite_node = ElementTree.parse(junit).getroot()
    if suite_node.tag == "testsuites":
        suite_node = suite_node[0]
    counts = {key: int(suite_node.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    return {
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
    }


def check_apps_in_browser(
    targets: Targets, browser: Browser, reports_dir: Path, cache_dir: Path | None = None
) -> tuple[BrowserResult, ...]:
    """Each Streamlit app of the plan, opened from this machine as an admin would open it, with
    Chromium's HTTP cache in ``cache_dir`` (default: kept in the state dir)."""
    apps_vm = targets.vm_with_role("python_app")
    return tuple(
        check_streamlit_app(
            browser,
            app.name,
            f"http://{apps_vm.ip}:{app.port}/",
            reports_dir / f"browser-{app.name}.png",
            cache_dir=cache_dir or browser_cache_dir(targets.state_dir),
        )
        for app in targets.loaded.plan.apps.apps
        if app.kind == "streamlit"
    )


def verify(
    loaded: LoadedPlan, *, infra: bool = True, ledger: Ledger | None = None, browser: bool | None = None
) -> VerifyOutcome:
    """``browser``: check the Streamlit apps in headless Chromium (None: when Chromium is installed)."""
    state = state_dir_for(loaded.path)
    own_ledger = ledger is None
    ledger = ledger or Ledger(state)
    sizing = size_plan(loaded.plan)
    targets = Targets(loaded, state)
    problems: list[str] = []
    timings: list[dict[str, Any]] = []

    def attempt(what: str, measure: Callable[[], T]) -> T | None:
        started = time.monotonic()
        try:
            return measure()
        except (AilabError, ValueError) as error:
            problems.append(f"{what}: {error}")
            return None
        finally:
            timings.append({"phase": what, "seconds": round(time.monotonic() - started, 1)})

    try:
        with ledger.start_run("verify", loaded.text_sha256) as run:
            reports_dir = state / "reports" / f"run-{run.id}"
            reports_dir.mkdir(parents=True, exist_ok=True)
            found = find_browser() if browser is not False else None
            if found is None and browser:
                problems.append(
                    "browser: chromium and chromedriver are not installed (apt: chromium chromium-driver)"
                )

            def testinfra() -> dict[str, Any]:
                inventory = generate_inventory(
                    loaded, plan_addresses(loaded), state_dir=state, private_key_file=private_key_of(loaded)
                )
                started = time.monotonic()
                listing = inventory_listing(inventory, state, project_root() / "ansible.cfg")
                counts = run_testinfra(
                    inventory.inventory_path,
                    listing,
                    state,
                    reports_dir / "testinfra.xml",
                    loaded.path,
                    [vm.name for vm in loaded.plan.vms],
                )
                timings.append({"phase": "testinfra", "seconds": round(time.monotonic() - started, 1)})
                return counts

            # The testinfra suite and the restore check of the newest dump go side by side; the
            # browser comes after them: Chromium and the LLM answer it waits for need the CPU the
            # suite uses, and side by side both took longer than one after the other.
            browser_checks: tuple[BrowserResult, ...] = ()
            dump_expected = bool(loaded.plan.vms_with_role("backup"))
            with ThreadPoolExecutor(max_workers=2) as pool:
                infra_run = pool.submit(testinfra) if infra else None
                dump_run = (
                    pool.submit(attempt, "database dump", lambda: check_latest_dump(targets))
                    if dump_expected
                    else None
                )
                infra_counts: dict[str, Any] = infra_run.result() if infra_run else {}
                dump = dump_run.result() if dump_run else None
            if found is not None:
                browser_checks = (
                    attempt("browser", lambda: check_apps_in_browser(targets, found, reports_dir)) or ()
                )
            # Then the measurements, one after the other and alone: they would disturb each other.
            llm_sizing = sizing.llm
            llm = attempt("llm", lambda: measure_llm(targets, llm_sizing)) if llm_sizing else None
            pgbench = attempt("pgbench", lambda: measure_pgbench(targets))
            apps = attempt("apps", lambda: measure_apps(targets)) or ()
            if dump is not None:
                problems.extend(f"database dump: {problem}" for problem in dump.problems)
            gates = evaluate_gates(
                loaded.plan.verify, llm, pgbench, apps, browser_checks, dump=dump, dump_expected=dump_expected
            )
            cost, idle = electricity_of(loaded.plan, llm)
            report = Report(
                loaded.text_sha256, llm, pgbench, apps, gates, infra_counts, browser_checks, cost, idle, dump
            )
            json_path = reports_dir / "report.json"
            markdown_path = reports_dir / "report.md"
            data = report.to_dict() | {"problems": problems, "timings": timings}
            json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            markdown_path.write_text(
                render_markdown(report) + "".join(f"\n- problem: {p}" for p in problems), encoding="utf-8"
            )
            run.attach_report("json", json_path)
            run.attach_report("markdown", markdown_path)
            html_path = write_html_report(ledger, run.id)
            run.attach_report("html", html_path)
            for problem in problems:
                run.event(problem, level="error")
            run.finish("succeeded" if report.passed and not problems else "failed")
        return VerifyOutcome(run.id, report, json_path, markdown_path, html_path, tuple(problems))
    finally:
        targets.close()
        if own_ledger:
            ledger.close()
