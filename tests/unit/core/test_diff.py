"""Table-driven diff tests: each tests/unit/diff_cases/<case>.json holds
{desired overrides, actual overrides, ledger, expected actions} on top of _base.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.core.desired import DesiredVM
from ailab_deploy.core.diff import ActualVM, NoOp, Orphan, Update, diff, diff_vm

CASES = Path(__file__).parent / "diff_cases"
BASE = json.loads((CASES / "_base.json").read_text())


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides win; a null override removes the key."""
    merged = {**base, **overrides}
    return {key: value for key, value in merged.items() if value is not None}


def build(case: dict[str, Any]) -> tuple[DesiredVM, ActualVM | None, set[int], set[str]]:
    desired_fields = dict(BASE["desired"])
    desired_fields["config"] = {**desired_fields["config"], **case.get("desired_config", {})}
    desired = DesiredVM(
        **desired_fields,
        node=case.get("desired_node", ""),
        kept_off_by_ha=case.get("kept_off_by_ha", False),
    )
    actual: ActualVM | None = None
    if case.get("actual", {}) is not None:
        fields = {**BASE["actual"], **(case.get("actual") or {})}
        if "actual_config" in case and case["actual_config"] is None:
            fields["config"] = None
        else:
            fields["config"] = _merge(fields["config"], case.get("actual_config", {}))
        actual = ActualVM(**fields)
    return desired, actual, set(case.get("ledger", BASE["ledger"])), set(case.get("nodes", [BASE["node"]]))


@pytest.mark.parametrize("path", sorted(CASES.glob("[!_]*.json")), ids=lambda p: p.stem)
def test_diff_case(path: Path) -> None:
    case = json.loads(path.read_text())
    desired, actual, ledger, node = build(case)
    plan = diff_vm(desired, actual, ledger, node)
    assert [action.to_dict() for action in plan.actions] == case["expected"]


def test_there_are_cases() -> None:
    assert len(list(CASES.glob("[!_]*.json"))) >= 20


def test_update_params_set_and_delete_keys() -> None:
    case = json.loads((CASES / "llm-layout-removed-when-vm-is-no-longer-llm.json").read_text())
    update = diff_vm(*build(case)).first(Update)
    assert isinstance(update, Update)
    assert update.params() == {"numa": "0", "delete": "numa0,affinity"}


def test_diff_lists_planned_vms_then_managed_orphans_only() -> None:
    desired, actual, ledger, node = build({})
    assert actual is not None
    orphan = ActualVM(**{**BASE["actual"], "vmid": 150, "name": "old", "config": {}})
    stranger = ActualVM(**{**BASE["actual"], "vmid": 151, "name": "stranger", "config": {}})
    plan = diff([desired], {101: actual, 150: orphan, 151: stranger}, ledger | {150}, node)
    assert [(vm.name, vm.actions) for vm in plan.vms] == [("apps", (NoOp(),)), ("old", (Orphan(),))]
    assert not plan.changes_anything and plan.problems == []
    assert plan.to_dict()["counts"] == {"no-op": 1, "orphan": 1}
