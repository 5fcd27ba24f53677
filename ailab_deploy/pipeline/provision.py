"""The provisioning engine: read the node, diff against the plan, act, record every step.

``plan`` reads only: one ``/cluster/resources`` call, then the configs of the VMs the
ledger says are ours, concurrently. ``apply`` carries out the diff, VM by VM in
parallel: clone (storage-aware), configure, grow, start, wait for the guest agent and
SSH, record host keys. Every step re-reads and re-diffs, so a failed or interrupted
apply resumes by running it again: what is done diffs to nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ailab_deploy.adapters.known_hosts import KnownHosts, fetch_host_keys, forget_vm, wait_for_port
from ailab_deploy.adapters.ledger import Ledger, Run, apply_lock
from ailab_deploy.adapters.nodeprep import (
    NodeShare,
    NodeTarget,
    prepare_node,
    storages_from_api,
    vendor_snippet,
)
from ailab_deploy.adapters.proxmox import PermissionDenied, ProxmoxApiError, ProxmoxClient, TaskFailed
from ailab_deploy.adapters.retry import linear_delays, poll, retry
from ailab_deploy.adapters.statedir import forget_facts
from ailab_deploy.core.desired import DesiredVM, desired_vms
from ailab_deploy.core.diff import (
    UNREACHABLE,
    ActualVM,
    Create,
    Grow,
    Migrate,
    ProvisionPlan,
    Start,
    Update,
    VMPlan,
    WaitUnlock,
    diff,
    diff_vm,
    is_managed,
)
from ailab_deploy.core.ha import ha_calls, sid_of, wanted_ha
from ailab_deploy.core.hostkeys import judge_host_keys
from ailab_deploy.core.loader import LoadedPlan
from ailab_deploy.core.privileges import grant_command
from ailab_deploy.core.pveformat import actual_value
from ailab_deploy.errors import AilabError, ConfigError, InputError, ProxmoxError
from ailab_deploy.pipeline.backup_job import ensure_backup_job, run_job_now

log = logging.getLogger(__name__)
T = TypeVar("T")

SNAPSHOT_PREFIX = "ailab-"
TEMPLATE_MARKER = "ailab-deploy: template"
IMPORT_SUFFIXES = (".qcow2", ".raw", ".vmdk")


@dataclass(frozen=True)
class ApplyOptions:
    parallel: int = 4  # VMs converged at once
    clone_timeout: float = 1800.0  # a full clone copies the whole disk
    task_timeout: float = 600.0
    agent_timeout: float = 300.0
    wait_ssh: bool = True
    ssh_timeout: float = 300.0
    ssh_port: int = 22
    snapshot: bool = False
    restart: bool = False
    clone_attempts: int = 5
    lock_backoff: float = 2.0
    online: bool = False  # migrate running VMs live (with their local disks) instead of offline


@dataclass(frozen=True)
class RestoreResult:
    name: str
    vmid: int
    archive: str  # the volume id restored from
    restore_seconds: float  # the qmrestore task
    seconds: float  # restore, start, guest agent and host keys


@dataclass
class VMResult:
    name: str
    vmid: int
    done: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class ApplyReport:
    run_id: int
    results: list[VMResult]
    api_calls: dict[str, Any]
    seconds: float

    @property
    def failed(self) -> list[VMResult]:
        return [r for r in self.results if r.error]


def _clone_retryable(error: Exception) -> bool:
    """A clone is tried again after a storage lock timeout or PVE's transient 5xx: in both, PVE
    answered, so no clone is under way; a lost connection is never retried."""
    if isinstance(error, ProxmoxApiError):
        return error.lock_timeout or error.transient
    return isinstance(error, TaskFailed) and error.lock_timeout


class ApplyFailed(AilabError):
    def __init__(self, report: ApplyReport) -> None:
        self.report = report
        # a missing privilege is one line however many VMs met it
        lines: dict[str, str] = {}
        for r in report.failed:
            error = r.error or ""
            denied = re.search(r"permission denied: (\S+)", error)
            key = denied.group(1) if denied else r.name
            lines.setdefault(key, error if denied else f"{r.name} (VM {r.vmid}): {error}")
        super().__init__(
            "\n".join(
                [
                    *lines.values(),
                    f"apply failed (run {report.run_id}); fix the cause and run apply again to resume",
                ]
            )
        )


def resolve_ssh_keys(loaded: LoadedPlan) -> list[str]:
    """Keys from the plan, then from each key file (``~`` expanded, relative to the plan file)."""
    template = loaded.plan.template
    keys = [key.strip() for key in template.ssh_public_keys if key.strip()]
    for index, name in enumerate(template.ssh_public_key_files):
        path = loaded.resolve(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            where = loaded.where(["template", "ssh_public_key_files", index])
            raise ConfigError(f"{where}: cannot read {path} ({error.strerror})") from None
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return list(dict.fromkeys(keys))


class StorageGate:
    """Clone slots per storage: start concurrent; after a lock timeout, one at a time there.

    A full clone holds the storage's cluster-fs lock for the whole copy, so other clones to
    the same storage give up after ~10 s with ``can't lock file ... got timeout``.
    """

    def __init__(self, limit: int) -> None:
        self._default = max(1, limit)
        self._limits: dict[str, int] = {}
        self._active: dict[str, int] = {}
        self._changed = threading.Condition()

    def limit(self, storage: str) -> int:
        return self._limits.get(storage, self._default)

    @contextmanager
    def slot(self, storage: str) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._active.get(storage, 0) < self.limit(storage))
            self._active[storage] = self._active.get(storage, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                self._active[storage] -= 1
                self._changed.notify_all()

    def serialise(self, storage: str) -> bool:
        """Drop ``storage`` to one clone at a time; True if that is a change."""
        with self._changed:
            changed = self.limit(storage) != 1
            self._limits[storage] = 1
            return changed


class Provisioner:
    def __init__(
        self,
        loaded: LoadedPlan,
        client: ProxmoxClient,
        ledger: Ledger,
        state_dir: Path,
        *,
        progress: Callable[[str], None] | None = None,
        replace_placement: bool = False,
    ) -> None:
        self.loaded = loaded
        self.replace_placement = replace_placement
        self.plan = loaded.plan
        self.client = client
        self.ledger = ledger
        self.state_dir = state_dir
        self.known_hosts = KnownHosts(state_dir)
        self.progress = progress or (lambda message: log.info("%s", message))
        self.node_names = frozenset(node.name for node in self.plan.nodes)
        self._ssh_keys = resolve_ssh_keys(loaded)
        self.desired = {vm.name: vm for vm in desired_vms(self.plan, self._ssh_keys)}
        self._run: Run | None = None

    # ------------------------------------------------------------------------------- reading

    def read_state(self) -> dict[int, ActualVM]:
        """All guests (one call) with the configs of those the ledger records (a small pool)."""
        vms = self.client.cluster_vms()
        ledger_ids = self.ledger.managed_vmids()
        ours = [
            vmid
            for vmid, vm in vms.items()
            if vmid in ledger_ids
            and vm.node in self.node_names
            and vm.type == "qemu"
            and not vm.template
            and vm.status != UNREACHABLE  # its node does not answer: nothing to read there
        ]
        configs = self.client.vm_configs(ours)
        return {vmid: replace(vm, config=configs.get(vmid)) for vmid, vm in vms.items()}

    def read_vm(self, vmid: int) -> ActualVM | None:
        """One VM's current state (status and config), or None if it does not exist."""
        try:
            status = self.client.vm_status(vmid)
            config = self.client.vm_config(vmid)
        except ProxmoxApiError as error:
            if "does not exist" in error.reason or "unable to find configuration" in error.reason:
                return None
            raise
        return ActualVM(
            vmid=vmid,
            name=str(config.get("name", "")),
            node=self.client.node_of(vmid),
            type="qemu",
            status=str(status.get("status", "")),
            template=bool(config.get("template")),
            tags=actual_value(config, "tags") or "",
            lock=config.get("lock") or status.get("lock") or None,
            config=config,
        )

    def compute(self, state: dict[int, ActualVM] | None = None) -> ProvisionPlan:
        state = self.read_state() if state is None else state
        self._place(state)
        return diff(list(self.desired.values()), state, self.ledger.managed_vmids(), self.node_names)

    def _place(self, state: dict[int, ActualVM]) -> None:
        """Each VM's node: where it runs now, unless the plan pins it elsewhere; new VMs by fit.

        ``replace_placement`` places every VM afresh, as for a new cluster (HA VMs excepted:
        where they run is the HA manager's business).
        """
        running_on = {
            vm.name: state[vm.vmid].node
            for vm in self.plan.vms
            if vm.vmid in state
            and state[vm.vmid].node in self.node_names
            and (not self.replace_placement or vm.ha is not None)
        }
        self.desired = {vm.name: vm for vm in desired_vms(self.plan, self._ssh_keys, running_on)}

    # -------------------------------------------------------------------------------- apply

    def apply(self, options: ApplyOptions) -> ApplyReport:
        started = self.client.clock()
        plan_hash = self.loaded.text_sha256
        with apply_lock(self.state_dir, plan_hash), self.ledger.start_run("apply", plan_hash) as run:
            self._run = run
            state = self.read_state()
            plan = self.compute(state)
            if plan.problems:
                raise AilabError("\n".join([*plan.problems, "nothing was changed"]))
            self._prepare_node()
            self._ensure_template(state, options)
            gate = StorageGate(options.parallel)
            results = [VMResult(vm.name, vm.vmid) for vm in plan.vms if vm.name in self.desired]
            by_name = {vm.name: vm for vm in plan.vms}
            with ThreadPoolExecutor(max_workers=max(1, options.parallel), thread_name_prefix="vm") as pool:
                futures = [
                    pool.submit(self._converge, self.desired[r.name], by_name[r.name], r, gate, options)
                    for r in results
                ]
                for future in futures:
                    future.result()
            return self._finish(run, results, started)

    def _finish(self, run: Run, results: list[VMResult], started: float) -> ApplyReport:
        """After every VM: the vzdump job follows the managed VMs, unless a VM failed."""
        if not any(r.error for r in results):
            self._ensure_vzdump_job(self.ledger.managed_vmids())
            self._ensure_ha(self.ledger.managed_vmids())
        report = ApplyReport(run.id, results, self.client.stats.as_dict(), self.client.clock() - started)
        if report.failed:
            run.finish("failed")
            raise ApplyFailed(report)
        return report

    def _prepare_node(self) -> None:
        """Over SSH, before any clone: on every node that will hold a VM, the vendor-data snippet
        every VM boots with, and storage checks."""
        if not self.plan.proxmox.prepare_node:
            self._skip("node", "prepare", "proxmox.prepare_node is false")
            return
        hosting = sorted({vm.node for vm in self.desired.values() if vm.node} or {self.client.node})
        snippet = vendor_snippet(self.plan, self.loaded.path.absolute().parent)
        template_node = self.client.node_of(self.plan.template.vmid)
        template_pool = self.plan.storage(self.plan.template.storage)

        def prepare(node: str) -> str:
            result = prepare_node(
                NodeTarget.from_plan(self.loaded, self.state_dir, node),
                [snippet],
                plan=self.plan,
                storages=storages_from_api(self.client.storages(node=node)),
                # only when the node's storage.cfg lacks it: reading /storage/{id} needs
                # Datastore.Allocate, which the deploy token does not have
                storage_config=self.client.storage_config,
                share=NodeShare(
                    node,
                    frozenset(vm.name for vm in self.desired.values() if vm.node in ("", node)),
                    template=node == template_node or bool(template_pool and template_pool.shared),
                ),
            )
            if result.problems:
                where = f"node {node}: " if len(self.node_names) > 1 else ""
                raise ConfigError(where + "; ".join(result.problems))
            return f"{snippet.volume} {'uploaded' if result.changed else 'unchanged'}"

        for node in hosting:
            self._step(
                "node" if len(self.node_names) == 1 else f"node {node}",
                "prepare",
                partial(prepare, node),
            )

    def _ensure_vzdump_job(self, vmids: set[int]) -> None:
        """The vzdump job lists exactly the managed VMs (removed when none are left), on every
        node of a cluster."""
        job = self.plan.proxmox.vzdump
        if not job.enabled:
            self._skip("node", "vzdump", "proxmox.vzdump.enabled is false")
            return
        self._step(
            "node",
            "vzdump",
            lambda: ensure_backup_job(
                self.client,
                self.client.node,
                vmids,
                storage=job.storage,
                schedule=job.schedule,
                every_node=len(self.node_names) > 1,  # a job naming a node backs up only that node's
                prune_backups=job.retention.prune_backups(),
            ).describe(),
        )

    def _ensure_ha(self, vmids: set[int]) -> None:
        """PVE's HA config holds the plan's HA VMs, with where they may run (after they exist)."""
        if not any(vm.ha for vm in self.plan.vms) and len(self.node_names) < 2:
            self._skip("cluster", "ha", "no VM asks for HA")
            return

        def reconcile() -> str:
            release = self.client.release()
            wanted = wanted_ha(self.plan, release, vmids)  # a destroyed VM has no HA resource
            objects = "cluster/ha/groups" if release.startswith("8.") else "cluster/ha/rules"
            calls = ha_calls(
                wanted,
                self.client.get("cluster/ha/resources"),
                self.client.get(objects),
                {sid_of(vmid) for vmid in vmids},
                release,
            )
            for call in calls:
                self.client.call(call.method, call.path, call.params)
            done = "; ".join(call.what for call in calls)
            return done or f"{len(wanted.resources)} HA resource(s) as planned"

        self._step("cluster", "ha", reconcile)

    def _step(self, vm: str, phase: str, action: Callable[[], str]) -> str:
        """Run one phase as a ledger step; its return value is the step's detail."""
        assert self._run is not None
        step = self._run.step(vm, phase)
        step.start()
        try:
            detail = action()
        except BaseException as error:
            step.fail(str(error) or type(error).__name__)
            raise
        step.succeed(detail)
        self.progress(f"{vm}: {phase}: {detail}")
        return detail

    def _skip(self, vm: str, phase: str, reason: str) -> None:
        assert self._run is not None
        self._run.step(vm, phase).skip(reason)

    def _converge(
        self, desired: DesiredVM, vmplan: VMPlan, result: VMResult, gate: StorageGate, options: ApplyOptions
    ) -> None:
        name = desired.name
        try:
            existed = not isinstance(vmplan.first(Create), Create)
            if not existed:
                result.done.append(self._step(name, "clone", lambda: self._clone(desired, gate, options)))
            if not existed or isinstance(vmplan.first(WaitUnlock), WaitUnlock):
                vmplan = self._rediff(desired, options)
            if vmplan.changes_anything:
                forget_facts(self.state_dir, name)  # new hardware or a new machine: gather afresh
            migrate = vmplan.first(Migrate)
            if isinstance(migrate, Migrate):
                result.done.append(
                    self._step(name, "migrate", lambda: self._migrate(desired, migrate, options))
                )
            if not vmplan.changes_anything:
                self._skip(name, "configure", "no changes")
            elif existed and options.snapshot and (vmplan.first(Update) or vmplan.first(Grow)):
                result.done.append(self._step(name, "snapshot", lambda: self._snapshot(desired, options)))
            update = vmplan.first(Update)
            if isinstance(update, Update):
                result.done.append(self._step(name, "configure", lambda: self._configure(desired)))
            grow = vmplan.first(Grow)
            if isinstance(grow, Grow):
                result.done.append(self._step(name, "resize", lambda: self._resize(desired, grow, options)))
            if isinstance(vmplan.first(Start), Start):
                result.done.append(self._step(name, "start", lambda: self._start(desired, options)))
            elif isinstance(update, Update) and update.needs_restart:
                if options.restart:
                    result.done.append(self._step(name, "restart", lambda: self._reboot(desired, options)))
                else:
                    self.progress(f"{name}: changes wait for a restart (apply --restart, or reboot the VM)")
            if desired.kept_off_by_ha:
                for phase in ("guest-agent", "ssh"):
                    self._skip(name, phase, "its HA state is stopped: Proxmox's HA manager keeps it off")
                return
            self._step(name, "guest-agent", lambda: self._wait_agent(desired, options))
            if options.wait_ssh:
                self._step(name, "ssh", lambda: self._ssh(desired, options, created=not existed))
            else:
                self._skip(name, "ssh", "--no-wait-ssh")
        except (AilabError, OSError) as error:
            result.error = str(error)
            self.progress(f"{name}: failed: {error}")

    def _rediff(self, desired: DesiredVM, options: ApplyOptions) -> VMPlan:
        """Re-read one VM (waiting, bounded, for a clone or other lock to end) and diff again."""
        last: list[WaitUnlock] = []

        def unlocked() -> VMPlan | None:
            actual = self.read_vm(desired.vmid)
            plan = diff_vm(desired, actual, self.ledger.managed_vmids(), self.node_names)
            wait = plan.first(WaitUnlock)
            if isinstance(wait, WaitUnlock):
                last[:] = [wait]
                return None
            if plan.blocked:
                raise AilabError("; ".join(getattr(a, "reason", a.kind) for a in plan.actions))
            return plan

        return self._poll(
            unlocked,
            timeout=options.clone_timeout,
            interval=1.0,
            on_timeout=lambda: ProxmoxError(
                f"VM {desired.vmid} is still locked ({last[0].lock}) after {options.clone_timeout:g} s; "
                "re-run apply when the task holding it has finished"
            ),
        )

    # ---- the phases; each returns what it did

    def _clone(self, desired: DesiredVM, gate: StorageGate, options: ApplyOptions) -> str:
        template = self.plan.template
        storage = desired.storage
        # Recorded before the clone exists: an interrupted apply must recognise its half-made VM.
        self.ledger.record_vm(desired.vmid, desired.name)
        params: dict[str, Any] = {
            "newid": desired.vmid,
            "name": desired.name,
            "description": desired.config["description"],  # the marker, from the first moment
            "full": True,
            "storage": storage,
        }
        source_node = self.client.node_of(template.vmid)
        target = desired.node or source_node
        # PVE clones to another node only from a template on shared storage onto shared storage
        # ("can't clone to non-shared storage"); otherwise it clones beside the template, then
        # the VM migrates (offline, its local disk with it) as PVE's docs advise.
        cross_node = target != source_node
        direct = all(
            (pool := self.plan.storage(name)) and pool.shared for name in (template.storage, storage)
        )
        if cross_node and direct:
            params["target"] = target

        def attempt(number: int) -> str:
            with gate.slot(storage):
                try:
                    upid = self.client.call(
                        "POST", self.client.qemu_path(template.vmid, "clone"), params, retry=False
                    )
                except ProxmoxApiError as error:
                    if "already exists" in error.reason:
                        return "already cloned (an earlier run started it)"
                    raise
                # PVE removes a clone target whose task failed, so nothing is left behind.
                self.client.wait_task(upid, f"clone of {desired.name}", options.clone_timeout)
                where = f" on {target}" if cross_node else ""
                return f"full clone of {template.vmid} onto {storage}{where} (attempt {number})"

        def contended(error: Exception, _delay: float) -> None:
            lock_timeout = isinstance(error, ProxmoxApiError | TaskFailed) and error.lock_timeout
            if lock_timeout and gate.serialise(storage):
                self._event(desired.name, f"lock contention on {storage}: cloning one at a time there")

        try:
            done = retry(
                attempt,
                delays=linear_delays(options.lock_backoff, options.clone_attempts),
                retryable=_clone_retryable,
                sleep=self.client.sleep,
                on_retry=contended,
            )
        except (ProxmoxApiError, TaskFailed):
            self.ledger.forget_vm(desired.vmid)
            raise
        if not cross_node or direct:
            self.client.located[desired.vmid] = target
            return done
        self.client.located[desired.vmid] = source_node
        moved = self._migrate(desired, Migrate(source_node, target, running=False), options)
        return f"{done}, then {moved}"

    def _wait_on_node(self, desired: DesiredVM, node: str, options: ApplyOptions) -> None:
        """Until the cluster lists the VM on ``node``: for an HA VM, PVE's migrate task only hands
        the request to the HA manager, which moves the VM afterwards."""
        last = [""]

        def arrived() -> bool | None:
            actual = self.client.cluster_vms().get(desired.vmid)
            last[0] = actual.node if actual else "nowhere"
            return True if actual is not None and actual.node == node and not actual.lock else None

        self._poll(
            arrived,
            timeout=options.clone_timeout,
            interval=1.0,
            on_timeout=lambda: ProxmoxError(
                f"{desired.name} is still on {last[0]}, not {node}, {options.clone_timeout:g} s after "
                "its migration was requested; see the node's task log and `ha-manager status`"
            ),
        )

    def _migrate(self, desired: DesiredVM, migrate: Migrate, options: ApplyOptions) -> str:
        """Offline: shut down, migrate, start again. Online (apply --online): live, with local disks."""
        online = migrate.running and options.online
        if migrate.running and not online:
            self._power(desired.vmid, desired.name, "shutdown", options)
        params: dict[str, Any] = {"target": migrate.target}
        if online:
            params |= {"online": True, "with-local-disks": True}
        self.client.run_task(
            "POST",
            self.client.qemu_path(desired.vmid, "migrate"),
            params,
            f"migration of {desired.name} to {migrate.target}",
            options.clone_timeout,  # a migration copies local disks, as a clone does
        )
        self._wait_on_node(desired, migrate.target, options)
        if migrate.running and not online:
            self._power(desired.vmid, desired.name, "start", options)
        return f"migrated {'online' if online else 'offline'} from {migrate.source} to {migrate.target}"

    def _configure(self, desired: DesiredVM) -> str:
        """Read, diff, write with the digest of that read: a concurrent edit makes PVE refuse."""
        actual = self.read_vm(desired.vmid)
        update = diff_vm(desired, actual, self.ledger.managed_vmids(), self.node_names).first(Update)
        if not isinstance(update, Update) or actual is None or actual.config is None:
            return "already up to date"
        params = {**update.params(), "digest": actual.config.get("digest")}
        self.client.call("PUT", self.client.qemu_path(desired.vmid, "config"), params)
        return "set " + ", ".join(change.key for change in update.changes)

    def _resize(self, desired: DesiredVM, grow: Grow, options: ApplyOptions) -> str:
        self.client.run_task(
            "PUT",
            self.client.qemu_path(desired.vmid, "resize"),
            {"disk": grow.disk, "size": f"{grow.to_gib}G"},
            f"resize of {desired.name}",
            options.task_timeout,
        )
        return f"{grow.disk} {grow.from_gib:g}G -> {grow.to_gib}G"

    def _start(self, desired: DesiredVM, options: ApplyOptions) -> str:
        self._power(desired.vmid, desired.name, "start", options)
        return "started"

    def _reboot(self, desired: DesiredVM, options: ApplyOptions) -> str:
        self._power(desired.vmid, desired.name, "reboot", options)
        return "rebooted to apply pending changes"

    def _snapshot(self, desired: DesiredVM, options: ApplyOptions) -> str:
        name = f"{SNAPSHOT_PREFIX}{time.strftime('%Y%m%d-%H%M%S').lower()}"
        self.client.run_task(
            "POST",
            self.client.qemu_path(desired.vmid, "snapshot"),
            {"snapname": name, "description": "before ailab-deploy apply"},
            f"snapshot of {desired.name}",
            options.task_timeout,
        )
        return f"snapshot {name}"

    def _wait_agent(self, desired: DesiredVM, options: ApplyOptions) -> str:
        last = ["no answer yet"]

        def reported() -> str | None:
            try:
                addresses = self.client.agent_ipv4(desired.vmid)
            except PermissionDenied:
                raise  # waiting cannot grant a privilege
            except ProxmoxApiError as error:
                last[0] = error.reason.strip()
                return None
            if desired.ip in addresses:
                return f"guest agent reports {desired.ip}"
            last[0] = f"agent reports {', '.join(addresses) or 'no IPv4 address'}"
            return None

        return self._poll(
            reported,
            timeout=options.agent_timeout,
            interval=2.0,
            on_timeout=lambda: ProxmoxError(
                f"the guest agent did not report {desired.ip} within {options.agent_timeout:g} s "
                f"(last: {last[0]}); check that qemu-guest-agent is installed and enabled in the template, "
                "then run apply again (or raise --agent-timeout)"
            ),
        )

    def _ssh(self, desired: DesiredVM, options: ApplyOptions, *, created: bool) -> str:
        """Record, check or (for a VM this run cloned) replace the VM's host keys."""
        wait_for_port(
            desired.ip,
            options.ssh_port,
            options.ssh_timeout,
            what=desired.name,
            clock=self.client.clock,
            sleep=self.client.sleep,
        )
        keys = fetch_host_keys(desired.ip, options.ssh_port)
        verdict = judge_host_keys(
            self.known_hosts.keys_for(desired.ip),
            keys,
            created_by_this_run=created,
            vmid=desired.vmid,
            host=desired.ip,
            known_hosts=str(self.known_hosts.path),
        )
        previous = self.ledger.address_of(desired.vmid)
        if previous is not None and previous != desired.ip:
            self.known_hosts.remove(previous)  # the VM moved: its old address is no longer its own
        if verdict.writes:
            self.known_hosts.replace(desired.ip, keys)
            forget_facts(self.state_dir, desired.name)  # a new machine: gather its facts afresh
        self.ledger.bind_address(desired.vmid, desired.ip)
        return verdict.message

    def forget_vm(self, vmid: int) -> None:
        forget_vm(self.ledger, self.known_hosts, vmid)

    def _poll(
        self,
        check: Callable[[], T | None],
        *,
        timeout: float,
        interval: float,
        on_timeout: Callable[[], Exception],
    ) -> T:
        """``poll`` on the client's clock and sleep, as every wait of the engine is."""
        return poll(
            check, timeout=timeout, interval=interval, on_timeout=on_timeout, clock=self.client.clock,
            sleep=self.client.sleep,
        )  # fmt: skip

    def _event(self, vm: str, message: str, level: str = "warning") -> None:
        self.progress(f"{vm}: {message}")
        if self._run is not None:
            self._run.event(message, level=level, vm=vm)

    # ---- the template

    def _ensure_template(self, state: dict[int, ActualVM], options: ApplyOptions) -> None:
        template = self.plan.template
        actual = state.get(template.vmid)
        label = f"template VM {template.vmid} ({template.name})"
        if actual is not None and actual.template:
            if actual.node not in self.node_names:
                raise AilabError(
                    f"{label} is on node {actual.node!r}, which is not one of the plan's "
                    f"({', '.join(sorted(self.node_names))})"
                )
            self._skip("template", "template", "exists")
            return
        if actual is not None:
            config = self.client.vm_config(template.vmid)
            if TEMPLATE_MARKER not in str(config.get("description", "")):
                raise AilabError(
                    f"VM {template.vmid} ({actual.name}) exists but is not a template; "
                    "fix template.vmid in the plan or convert that VM"
                )
        elif not template.image_url:
            raise AilabError(
                f"{label} does not exist on node {self.client.node}; create it, or set "
                f"template.image_url ({self.loaded.where(['template'])}) so apply builds it from a "
                "cloud image"
            )
        self._step("template", "template", lambda: self._build_template(actual is not None, options))

    def _build_template(self, vm_exists: bool, options: ApplyOptions) -> str:
        """download-url into an ``import`` storage, create the VM with import-from, convert it."""
        template = self.plan.template
        node = self.client.node
        if not vm_exists:
            storages = [
                s for s in self.client.storages("import") if s.get("active", 1) and s.get("enabled", 1)
            ]
            if not storages:
                raise AilabError(
                    f"no storage on node {node} that the token can see accepts 'import' content; add it, "
                    "e.g. `pvesm set local --content iso,vztmpl,backup,snippets,import`, or, if it is "
                    f"there, grant what lists it (Datastore.AllocateSpace on /storage/local): "
                    f"{grant_command('Datastore.AllocateSpace')}"
                )
            source = str(storages[0]["storage"])
            assert template.image_url is not None
            filename = PurePosixPath(urlsplit(template.image_url).path).name
            if not filename.endswith(IMPORT_SUFFIXES):
                filename = PurePosixPath(filename).stem + ".qcow2"  # cloud .img files are qcow2
            present = self.client.get(f"nodes/{node}/storage/{source}/content", content="import")
            if not any(str(item.get("volid", "")).endswith(f"import/{filename}") for item in present):
                self.client.run_task(
                    "POST",
                    f"nodes/{node}/storage/{source}/download-url",
                    {"url": template.image_url, "content": "import", "filename": filename},
                    f"download of {template.image_url}",
                    options.clone_timeout,
                )
            network = self.plan.network
            self.client.run_task(
                "POST",
                f"nodes/{node}/qemu",
                {
                    "vmid": template.vmid,
                    "name": template.name,
                    "description": TEMPLATE_MARKER,
                    "memory": 2048,
                    "cores": 2,
                    "cpu": "host",
                    "ostype": "l26",
                    "scsihw": "virtio-scsi-single",
                    "scsi0": f"{template.storage}:0,import-from={source}:import/{filename}",
                    "ide2": f"{template.storage}:cloudinit",
                    "boot": "order=scsi0",
                    "net0": f"virtio,bridge={network.bridge}",
                    "serial0": "socket",
                    "vga": "serial0",
                    "agent": 1,
                },
                f"creation of {template.name}",
                options.task_timeout,
            )
        self.client.run_task(
            "POST", self.client.qemu_path(template.vmid, "template"), {}, "conversion to a template",
            options.task_timeout,
        )  # fmt: skip
        return f"built from {template.image_url}"

    # -------------------------------------------------------------------------------- destroy

    def destroy_targets(self, names: list[str] | None) -> list[ActualVM]:
        """Managed VMs to destroy: all of them, or those named (planned or orphaned)."""
        state = self.read_state()
        ledger_ids = self.ledger.managed_vmids()
        managed = {
            vm.name: vm for vm in state.values() if vm.node in self.node_names and is_managed(vm, ledger_ids)
        }
        if not names:
            return sorted(managed.values(), key=lambda vm: vm.vmid)
        unknown = [name for name in names if name not in managed]
        if unknown:
            raise AilabError(
                f"no VM managed by ailab-deploy is named {', '.join(unknown)} "
                f"(managed: {', '.join(sorted(managed)) or 'none'})"
            )
        return [managed[name] for name in names]

    def destroy(self, targets: list[ActualVM], options: ApplyOptions) -> ApplyReport:
        started = self.client.clock()
        protected = [vm for vm in targets if actual_value(vm.config or {}, "protection") == "1"]
        if protected:
            raise AilabError(
                "protection is on for "
                + ", ".join(f"{vm.name} (VM {vm.vmid})" for vm in protected)
                + "; set protection: false in the plan and apply (or turn it off in Proxmox) to destroy it"
            )
        with (
            apply_lock(self.state_dir, self.loaded.text_sha256),
            self.ledger.start_run("destroy", self.loaded.text_sha256) as run,
        ):
            self._run = run
            results = [VMResult(vm.name, vm.vmid) for vm in targets]
            with ThreadPoolExecutor(max_workers=max(1, options.parallel), thread_name_prefix="vm") as pool:
                jobs = [
                    pool.submit(self._destroy_one, vm, r, options)
                    for vm, r in zip(targets, results, strict=True)
                ]
                for job in jobs:
                    job.result()
            return self._finish(run, results, started)

    def _destroy_one(self, vm: ActualVM, result: VMResult, options: ApplyOptions) -> None:
        try:
            if vm.status == "running":
                result.done.append(
                    self._step(vm.name, "stop", lambda: self._stop(vm, options))
                )  # fmt: skip
            result.done.append(self._step(vm.name, "destroy", lambda: self._delete(vm, options)))
        except AilabError as error:
            result.error = str(error)
            self.progress(f"{vm.name}: failed: {error}")

    def _power(self, vmid: int, name: str, verb: str, options: ApplyOptions) -> None:
        """POST status/<verb> (start, stop, shutdown, reboot) and wait for its task; a stop or
        shutdown also until the VM is down (for an HA VM the task only hands the request to HA)."""
        self.client.run_task(
            "POST",
            self.client.qemu_path(vmid, f"status/{verb}"),
            {},
            f"{verb} of {name}",
            options.task_timeout,
        )
        if verb in ("stop", "shutdown"):
            self._poll(
                lambda: True if self.client.vm_status(vmid).get("status") == "stopped" else None,
                timeout=options.task_timeout,
                interval=1.0,
                on_timeout=lambda: ProxmoxError(
                    f"{name} is still running {options.task_timeout:g} s after {verb}"
                ),
            )

    def _stop(self, vm: ActualVM, options: ApplyOptions) -> str:
        self._power(vm.vmid, vm.name, "stop", options)
        return "stopped"

    def _delete(self, vm: ActualVM, options: ApplyOptions) -> str:
        self.client.run_task(
            "DELETE",
            self.client.qemu_path(vm.vmid),
            {"purge": True, "destroy-unreferenced-disks": True},
            f"destruction of {vm.name}",
            options.task_timeout,
        )
        self.forget_vm(vm.vmid)
        forget_facts(self.state_dir, vm.name)
        return f"VM {vm.vmid} destroyed"

    # ------------------------------------------------------------------------------- backups

    def backup_archives(self, vmid: int | None = None) -> list[dict[str, Any]]:
        """The vzdump archives (of ``vmid``) on every storage that takes backups, as every node
        sees them (a shared storage's once), newest first; each names the ``node`` that reads it."""
        archives: dict[str, dict[str, Any]] = {}
        filters = {"content": "backup", **({"vmid": vmid} if vmid is not None else {})}
        for node in sorted(self.node_names, key=lambda name: name != self.client.node):
            for pool in self.client.storages("backup", node=node):
                storage = str(pool["storage"])
                listed = self.client.get(f"nodes/{node}/storage/{storage}/content", **filters)
                for item in listed:
                    if item.get("content") == "backup":
                        entry = dict(item, storage=storage, node=node, shared=bool(pool.get("shared")))
                        archives.setdefault(str(item["volid"]), entry)
        return sorted(archives.values(), key=lambda item: int(item.get("ctime", 0)), reverse=True)

    def back_up_now(self, options: ApplyOptions) -> list[str]:
        """The backup job, run now on each node that holds a managed VM; the tasks' UPIDs."""
        managed = self.ledger.managed_vmids()
        holders = sorted({vm.node for vmid, vm in self.client.cluster_vms().items() if vmid in managed})
        return [
            run_job_now(
                self.client,
                self.client.node,
                lambda upid: self.client.wait_task(upid, "backup of the managed VMs", options.clone_timeout),
                run_on=node,
            )
            for node in holders or [self.client.node]
        ]

    def restore(self, name: str, archive: str | None, options: ApplyOptions) -> RestoreResult:
        """Put VM ``name`` back from its newest (or the given) archive, start it, check its host
        keys as for any VM this run did not create (the restored VM keeps the recorded ones)."""
        desired = self.desired.get(name)
        if desired is None:
            raise InputError(
                f"--vm: no VM named {name!r} in {self.loaded.path} (VMs: {', '.join(self.desired)})"
            )
        archives = self.backup_archives(desired.vmid)
        if archive is None:
            if not archives:
                raise AilabError(
                    f"{name} (VM {desired.vmid}) has no vzdump archive on any backup storage; "
                    "`ailab-deploy backups --run` takes one while the VM still exists"
                )
            archive = str(archives[0]["volid"])
        chosen = next((item for item in archives if str(item["volid"]) == archive), None)
        if chosen is None:
            known = ", ".join(str(item["volid"]) for item in archives) or "none"
            raise InputError(
                f"--archive: {archive} is not an archive of {name} (VM {desired.vmid}); its: {known}"
            )
        current = self.read_vm(desired.vmid)
        # where the VM is; a VM that is gone comes back on its planned node if that node reads the
        # archive (a shared storage), else on the node whose disk holds it
        node = str(chosen["node"])
        if current is not None:
            node = self.client.node_of(desired.vmid)
        elif chosen["shared"] and desired.node:
            node = desired.node
        managed = self.ledger.managed_vmids()
        if current is not None and current.name != name and desired.vmid not in managed:
            raise AilabError(
                f"VM {desired.vmid} on the node is {current.name!r}, not {name}, and ailab-deploy does not "
                "manage it: restore refuses to overwrite it"
            )
        started = self.client.clock()
        with (
            apply_lock(self.state_dir, self.loaded.text_sha256),
            self.ledger.start_run("restore", self.loaded.text_sha256) as run,
        ):
            self._run = run
            if current is not None and current.status == "running":
                self._step(name, "stop", lambda: self._stop(current, options))
            restore_started = self.client.clock()

            def restore() -> str:
                params = {"vmid": desired.vmid, "archive": archive, "force": 1 if current is not None else 0}
                self.client.run_task(
                    "POST",
                    f"nodes/{node}/qemu",
                    params,
                    f"restore of {name}",
                    options.clone_timeout,
                )
                self.ledger.record_vm(desired.vmid, name)
                self.client.located[desired.vmid] = node
                return f"VM {desired.vmid} restored from {archive}" + (
                    f" on {node}" if len(self.node_names) > 1 else ""
                )

            self._step(name, "restore", restore)
            restore_seconds = self.client.clock() - restore_started
            self._step(name, "start", lambda: self._start(desired, options))
            self._step(name, "agent", lambda: self._wait_agent(desired, options))
            if options.wait_ssh:
                self._step(name, "ssh", lambda: self._ssh(desired, options, created=False))
            self._ensure_vzdump_job(self.ledger.managed_vmids())  # destroy took it out of the job
        return RestoreResult(name, desired.vmid, archive, restore_seconds, self.client.clock() - started)

    # ------------------------------------------------------------------------------- rollback

    def rollback(self, name: str, snapshot: str | None, options: ApplyOptions) -> str:
        [vm] = self.destroy_targets([name])
        snapshots = [
            s for s in self.client.snapshots(vm.vmid) if str(s.get("name", "")).startswith(SNAPSHOT_PREFIX)
        ]
        if snapshot is None:
            if not snapshots:
                raise AilabError(
                    f"{name} (VM {vm.vmid}) has no {SNAPSHOT_PREFIX}* snapshot (apply --snapshot makes one)"
                )
            snapshot = str(max(snapshots, key=lambda s: int(s.get("snaptime", 0)))["name"])
        elif snapshot not in {str(s.get("name")) for s in self.client.snapshots(vm.vmid)}:
            raise AilabError(f"{name} (VM {vm.vmid}) has no snapshot {snapshot!r}")
        with (
            apply_lock(self.state_dir, self.loaded.text_sha256),
            self.ledger.start_run("rollback", self.loaded.text_sha256) as run,
        ):
            self._run = run
            chosen = snapshot

            def roll() -> str:
                self.client.run_task(
                    "POST",
                    self.client.qemu_path(vm.vmid, f"snapshot/{chosen}/rollback"),
                    {"start": vm.status == "running"},
                    f"rollback of {name} to {chosen}",
                    options.task_timeout,
                )
                return f"rolled back to {chosen}"

            return self._step(name, "rollback", roll)
