"""Every request the Proxmox adapter makes in a whole life cycle, held to PVE's schema (9.1 and 8.4)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.lab import pve_schema
from tests.lab.lifecycle import Recorder, lab_settings, life_cycle, schema_path

pytestmark = pytest.mark.lab

if pve_schema.schema_dir() is None:
    pytest.skip(
        "PVE's API schema (shared/reference/pve-api) is not beside this checkout", allow_module_level=True
    )


def _property(props: dict[str, Any], name: str) -> dict[str, Any] | None:
    if name in props:
        return dict(props[name])
    numbered = re.fullmatch(r"([a-z]+)(\d+)", name)
    if numbered and f"{numbered.group(1)}[n]" in props:
        base = numbered.group(1)
        if int(numbered.group(2)) <= pve_schema.NUMBERED_MAX[base]:
            return dict(props[f"{base}[n]"])
    return None


def schema_problems(version: str, requests: list[Any]) -> tuple[int, list[str]]:
    """(parameters checked, what the schema of ``version`` refuses), naming request and parameter."""
    spec = pve_schema.load(version)
    paths = set(spec)
    checked, problems = 0, []
    for request in requests:
        where = f"{request.method} {request.path}"
        found = schema_path(request.method, request.path, paths)
        if found is None:
            problems.append(f"{where}: no such method and path in PVE {version}")
            continue
        template, in_path = found
        props = spec[(request.method, template)].get("parameters", {}).get("properties", {})
        for name, value in {**in_path, **request.params}.items():
            checked += 1
            prop = _property(props, name)
            if prop is None:
                problems.append(f"{where}: parameter '{name}' is not in the schema")
            elif pve_schema.accepts(prop, value) is False:
                problems.append(f"{where}: {name}={value!r} is refused by the schema")
        for name, prop in props.items():
            if not prop.get("optional") and name not in in_path and name not in request.params:
                problems.append(f"{where}: required parameter '{name}' is missing")
    return checked, problems


@pytest.mark.parametrize("lab_version", ["9.1", "8.4"])
def test_every_adapter_request_of_a_life_cycle_conforms_to_both_schemas(
    make_emulator: Any, tmp_path: Path, lab_version: str
) -> None:
    lab = make_emulator(version=lab_version, **lab_settings(tmp_path))
    recorder = Recorder()
    for _command, run in life_cycle(lab, tmp_path, recorder):
        run()
    paths = set(pve_schema.load("9.1"))
    writes = {
        (r.method, (schema_path(r.method, r.path, paths) or ("?",))[0])
        for r in recorder.requests
        if r.method != "GET"
    }
    # the life cycle did reach every kind of write the product makes
    assert writes >= {
        ("POST", "/nodes/{node}/storage/{storage}/download-url"),
        ("POST", "/nodes/{node}/qemu"),
        ("POST", "/nodes/{node}/qemu/{vmid}/template"),
        ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
        ("POST", "/nodes/{node}/qemu/{vmid}/snapshot"),
        ("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback"),
        ("POST", "/cluster/backup"),
        ("DELETE", "/cluster/backup/{id}"),
        ("DELETE", "/nodes/{node}/qemu/{vmid}"),
        ("POST", "/nodes/{node}/vzdump"),
    }
    for version in pve_schema.VERSIONS:
        checked, problems = schema_problems(version, recorder.requests)
        print(
            f"lab {lab_version}, schema PVE {version}: {len(recorder.requests)} requests, "
            f"{checked} parameters checked, {len(problems)} refused"
        )
        assert checked > len(recorder.requests)
        assert problems == [], "\n".join(problems)


def test_the_schema_check_catches_what_pve_would_refuse() -> None:
    from tests.lab.lifecycle import Request

    checked, problems = schema_problems(
        "9.1",
        [
            Request("PUT", "/nodes/pve/qemu/100/config", {"memory": "2G", "net40": "virtio,bridge=vmbr0"}),
            Request("POST", "/nodes/pve/qemu/100/clone", {}),
            Request("GET", "/nodes/pve/qemu/100/nosuch", {}),
        ],
    )
    assert checked == 6  # node, vmid, memory, net40; node, vmid
    assert problems == [
        "PUT /nodes/pve/qemu/100/config: memory='2G' is refused by the schema",
        "PUT /nodes/pve/qemu/100/config: parameter 'net40' is not in the schema",
        "POST /nodes/pve/qemu/100/clone: required parameter 'newid' is missing",
        "GET /nodes/pve/qemu/100/nosuch: no such method and path in PVE 9.1",
    ]
