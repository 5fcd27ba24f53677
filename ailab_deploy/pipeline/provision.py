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
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ailab_deploy.adapters.known_hosts import KnownHosts, fetch_host_keys, forget_vm, wait_for_port
from ailab_deploy.adapters.ledger import Ledger, Run, apply_lock
from ailab_deploy.adapters.nodeprep import (
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
    ActualVM,
    Create,
    Grow,
    ProvisionPlan,
    Start,
    Update,
    VMPlan,
    WaitUnlock,
    diff,
    diff_vm,
    is_managed,
)
from ailab_deploy.core.hostkeys import judge_host_keys
from ailab_deploy.core.loader import LoadedPlan
from ailab_deploy.core.privileges import grant_command
from ailab_deploy.core.pveformat import actual_value
from ailab_deploy.errors import AilabError, ConfigError, InputError, ProxmoxError
from ailab_deploy.pipeline.backup_job import ensure_backup_job, run_job_now

log = logging.getLogger(__name__)

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
    ) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.client = client
        self.ledger = ledger
        self.state_dir = state_dir
        self.known_hosts = KnownHosts(state_dir)
        self.progress = progress or (lambda message: log.info("%s", message))
        self.desired = {vm.name: vm for vm in desired_vms(self.plan, resolve_ssh_keys(loaded))}
        self._run: Run | None = None

    # ------------------------------------------------------------------------------- reading

    def read_state(self) -> dict[int, ActualVM]:
        """All guests (one call) with the configs of those the ledger records (a small pool)."""
        vms = self.client.cluster_vms()
        ledger_ids = self.ledger.managed_vmids()
        ours = [
            vmid
            for vmid, vm in vms.items()
            if vmid in ledger_ids and vm.node == self.client.node and vm.type == "qemu" and not vm.template
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
            node=self.client.node,
            type="qemu",
            status=str(status.get("status", "")),
            template=bool(config.get("template")),
            tags=actual_value(config, "tags") or "",
            lock=config.get("lock") or status.get("lock") or None,
            config=config,
        )

    def compute(self, state: dict[int, ActualVM] | None = None) -> ProvisionPlan:
        state = self.read_state() if state is None else state
        return diff(list(self.desired.values()), state, self.ledger.managed_vmids(), self.client.node)

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
        report = ApplyReport(run.id, results, self.client.stats.as_dict(), self.client.clock() - started)
        if report.failed:
            run.finish("failed")
            raise ApplyFailed(report)
        return report

    def _prepare_node(self) -> None:
        """Over SSH, before any clone: the vendor-data snippet every VM boots with, and storage checks."""
        if not self.plan.proxmox.prepare_node:
            self._skip("node", "prepare", "proxmox.prepare_node is false")
            return

        def prepare() -> str:
            snippet = vendor_snippet(self.plan, self.loaded.path.absolute().parent)
            result = prepare_node(
                NodeTarget.from_plan(self.loaded, self.state_dir),
                [snippet],
                plan=self.plan,
                storages=storages_from_api(self.client.storages()),
                # only when the node's storage.cfg lacks it: reading /storage/{id} needs
                # Datastore.Allocate, which the deploy token does not have
                storage_config=self.client.storage_config,
            )
            if result.problems:
                raise ConfigError("; ".join(result.problems))
            return f"{snippet.volume} {'uploaded' if result.changed else 'unchanged'}"

        self._step("node", "prepare", prepare)

    def _ensure_vzdump_job(self, vmids: set[int]) -> None:
        """The node's vzdump job lists exactly the managed VMs (removed when none are left)."""
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
                prune_backups=job.retention.prune_backups(),
            ).describe(),
        )

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
            plan = diff_vm(desired, actual, self.ledger.managed_vmids(), self.client.node)
            wait = plan.first(WaitUnlock)
            if isinstance(wait, WaitUnlock):
                last[:] = [wait]
                return None
            if plan.blocked:
                raise AilabError("; ".join(getattr(a, "reason", a.kind) for a in plan.actions))
            return plan

        return poll(
            unlocked,
            timeout=options.clone_timeout,
            interval=1.0,
            on_timeout=lambda: ProxmoxError(
                f"VM {desired.vmid} is still locked ({last[0].lock}) after {options.clone_timeout:g} s; "
                "re-run apply when the task holding it has finished"
            ),
            clock=self.client.clock,
            sleep=self.client.sleep,
        )

    # ---- the phases; each returns what it did

    def _clone(self, desired: DesiredVM, gate: StorageGate, options: ApplyOptions) -> str:
        template = self.plan.template
        storage = desired.storage
        # Recorded before the clone exists: an interrupted apply must recognise its half-made VM.
        self.ledger.record_vm(desired.vmid, desired.name)
        params = {
            "newid": desired.vmid,
            "name": desired.name,
            "description": desired.config["description"],  # the marker, from the first moment
            "full": True,
            "storage": storage,
        }

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
                return f"full clone of {template.vmid} onto {storage} (attempt {number})"

        def contended(error: Exception, _delay: float) -> None:
            lock_timeout = isinstance(error, ProxmoxApiError | TaskFailed) and error.lock_timeout
            if lock_timeout and gate.serialise(storage):
                self._event(desired.name, f"lock contention on {storage}: cloning one at a time there")

        try:
            return retry(
                attempt,
                delays=linear_delays(options.lock_backoff, options.clone_attempts),
                retryable=_clone_retryable,
                sleep=self.client.sleep,
                on_retry=contended,
            )
        except (ProxmoxApiError, TaskFailed):
            self.ledger.forget_vm(desired.vmid)
            raise

    def _configure(self, desired: DesiredVM) -> str:
        """Read, diff, write with the digest of that read: a concurrent edit makes PVE refuse."""
        actual = self.read_vm(desired.vmid)
        update = diff_vm(desired, actual, self.ledger.managed_vmids(), self.client.node).first(Update)
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

        return poll(
            reported,
            timeout=options.agent_timeout,
            interval=2.0,
            on_timeout=lambda: ProxmoxError(
                f"the guest agent did not report {desired.ip} within {options.agent_timeout:g} s "
                f"(last: {last[0]}); check that qemu-guest-agent is installed and enabled in the template, "
                "then run apply again (or raise --agent-timeout)"
            ),
            clock=self.client.clock,
            sleep=self.client.sleep,
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
            if actual.node != self.client.node:
                raise AilabError(f"{label} is on node {actual.node!r}, not {self.client.node!r}")
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
            vm.name: vm for vm in state.values() if vm.node == self.client.node and is_managed(vm, ledger_ids)
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
        """POST status/<verb> (start, stop, reboot) and wait for its task."""
        self.client.run_task(
            "POST",
            self.client.qemu_path(vmid, f"status/{verb}"),
            {},
            f"{verb} of {name}",
            options.task_timeout,
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
        """The vzdump archives (of ``vmid``) on every storage that takes backups, newest first."""
        archives: list[dict[str, Any]] = []
        for pool in self.client.storages("backup"):
            storage = str(pool["storage"])
            filters = {"content": "backup", **({"vmid": vmid} if vmid is not None else {})}
            listed = self.client.get(f"nodes/{self.client.node}/storage/{storage}/content", **filters)
            archives += [dict(item, storage=storage) for item in listed if item.get("content") == "backup"]
        return sorted(archives, key=lambda item: int(item.get("ctime", 0)), reverse=True)

    def back_up_now(self, options: ApplyOptions) -> str:
        """The node's backup job, run now; the task's UPID."""
        return run_job_now(
            self.client,
            self.client.node,
            lambda upid: self.client.wait_task(upid, "backup of the managed VMs", options.clone_timeout),
        )

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
        elif archive not in {str(item["volid"]) for item in archives}:
            known = ", ".join(str(item["volid"]) for item in archives) or "none"
            raise InputError(
                f"--archive: {archive} is not an archive of {name} (VM {desired.vmid}); its: {known}"
            )
        current = self.read_vm(desired.vmid)
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
                    f"nodes/{self.client.node}/qemu",
                    params,
                    f"restore of {name}",
                    options.clone_timeout,
                )
                self.ledger.record_vm(desired.vmid, name)
                return f"VM {desired.vmid} restored from {archive}"

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
