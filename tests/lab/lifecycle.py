"""The product's whole life cycle against an API-only lab, one command at a time, with every
request the Proxmox adapter makes recorded (method, schema path, parameters)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from ailab_deploy.pipeline.provision import ApplyOptions, Provisioner
from tests.lab.provision_fixtures import LAB_OPTIONS, Engine, lab_vm, make_engine, write_lab_plan

IMAGE_URL = "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # below /api2/json, e.g. /nodes/pve/qemu/100/config
    params: dict[str, str]


@dataclass
class Recorder:
    requests: list[Request] = field(default_factory=list)

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = response.request
        url = urlsplit(request.url or "")
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        body = request.body
        if body:
            text = body if isinstance(body, str) else body.decode()
            params.update(parse_qsl(text, keep_blank_values=True))
        path = unquote(url.path.removeprefix("/api2/json"))
        self.requests.append(Request(request.method or "?", path, params))

    def attach(self, provisioner: Provisioner) -> Provisioner:
        session: requests.Session = provisioner.client.api._store["session"]
        session.hooks["response"].append(self.hook)
        return provisioner


def qcow2_image(path: Path) -> Path:
    path.write_bytes(b"QFI\xfb" + bytes(20) + (2 * 1024**3).to_bytes(8, "big"))  # qcow2 header, 2 GiB
    return path


def lab_settings(tmp_path: Path) -> dict[str, Any]:
    """An API-only lab without the template VM, so apply builds it from the (local) image."""
    return {"template": None, "download_map": {IMAGE_URL: str(qcow2_image(tmp_path / "debian-13.qcow2"))}}


def _snapshot(options: ApplyOptions) -> ApplyOptions:
    return ApplyOptions(**{**options.__dict__, "snapshot": True})


def life_cycle(
    lab: Any,
    tmp_path: Path,
    recorder: Recorder | None = None,
    token: tuple[str, str] | None = None,
    *,
    vzdump: bool = True,
) -> list[tuple[str, Callable[[], Any]]]:
    """(command, run it) in order: the template build and first apply, a no-op re-apply, the backup
    job run now (with the backup job), a change with a snapshot, the rollback, the restore of a VM
    from its archive (with the backup job), the destroy. Each builds a fresh engine, as each CLI run would."""
    engine: Engine = make_engine(lab, tmp_path, token=token)
    token_id = token[0] if token else None
    write_lab_plan(
        lab,
        engine.plan_path.parent,
        [lab_vm(i) for i in range(3)],
        image_url=IMAGE_URL,
        token_id=token_id,
        vzdump=vzdump,
    )

    def provisioner() -> Provisioner:
        made = engine.provisioner()
        return recorder.attach(made) if recorder else made

    def changed_apply() -> Any:
        write_lab_plan(
            lab,
            engine.plan_path.parent,
            [lab_vm(0, memory="3G"), lab_vm(1), lab_vm(2)],
            image_url=IMAGE_URL,
            token_id=token_id,
            vzdump=vzdump,
        )
        return provisioner().apply(_snapshot(LAB_OPTIONS))

    def destroy() -> Any:
        made = provisioner()
        return made.destroy(made.destroy_targets(None), LAB_OPTIONS)

    backups = [("backups --run", lambda: provisioner().back_up_now(LAB_OPTIONS))] if vzdump else []
    restore = (
        [("restore postgres", lambda: provisioner().restore("postgres", None, LAB_OPTIONS))] if vzdump else []
    )
    return [
        ("plan", lambda: provisioner().compute()),
        ("apply", lambda: provisioner().apply(LAB_OPTIONS)),
        ("apply (no change)", lambda: provisioner().apply(LAB_OPTIONS)),
        *backups,
        ("apply --snapshot (memory change)", changed_apply),
        ("rollback postgres", lambda: provisioner().rollback("postgres", None, LAB_OPTIONS)),
        *restore,
        ("destroy", destroy),
    ]


_PATH_PARAM = re.compile(r"\{(\w+)\}")


def schema_path(method: str, path: str, paths: set[tuple[str, str]]) -> tuple[str, dict[str, str]] | None:
    """The schema's templated path for a concrete one, with the values of its ``{params}``."""
    parts = path.strip("/").split("/")
    # literal segments first: /cluster/backup-info before /cluster/{something}
    for candidate_method, candidate in sorted(paths, key=lambda mp: (mp[1].count("{"), mp[1])):
        if candidate_method != method:
            continue
        template = candidate.strip("/").split("/")
        if len(template) != len(parts):
            continue
        values: dict[str, str] = {}
        for want, got in zip(template, parts, strict=True):
            match = _PATH_PARAM.fullmatch(want)
            if match:
                values[match.group(1)] = got
            elif want != got:
                break
        else:
            return candidate, values
    return None


CLUSTER_NODES = ["pve1", "pve2", "pve3"]
CLUSTER_FEATURES = ["core", "cluster", "ha"]  # the template is there; no backup job


def cluster_settings() -> dict[str, Any]:
    """A three-node API-only lab whose HA manager acts within a test's patience."""
    return {"nodes": CLUSTER_NODES, "fence_seconds": 0.6, "ha_tick_seconds": 0.1}


def cluster_life_cycle(
    lab: Any, tmp_path: Path, token: tuple[str, str] | None = None
) -> list[tuple[str, Callable[[], Any]]]:
    """(command, run it) on a three-node lab: the first apply (a clone to another node, an HA
    resource and its rule or group), a no-op re-apply, a migration the plan asks for by a
    changed ``node:``, the destroy (the HA resource purged with its VM)."""
    engine = Engine(lab, tmp_path / "plan" / "vms.yaml", token)
    token_id = token[0] if token else None

    def write(apps_node: str) -> None:
        vms = [
            lab_vm(0, storage="shared", node="pve1", ha={"state": "started"}),
            # on shared storage, cloned straight onto its node: only the changed node migrates
            lab_vm(2, storage="shared", node=apps_node),
        ]
        write_lab_plan(
            lab, engine.plan_path.parent, vms, token_id=token_id, vzdump=False, nodes=CLUSTER_NODES
        )

    write("pve2")

    def moved_apply() -> Any:
        write("pve3")
        return engine.provisioner().apply(LAB_OPTIONS)

    def destroy() -> Any:
        made = engine.provisioner()
        return made.destroy(made.destroy_targets(None), LAB_OPTIONS)

    return [
        ("plan", lambda: engine.provisioner().compute()),
        ("apply", lambda: engine.provisioner().apply(LAB_OPTIONS)),
        ("apply (no change)", lambda: engine.provisioner().apply(LAB_OPTIONS)),
        ("apply (node changed)", moved_apply),
        ("destroy", destroy),
    ]
