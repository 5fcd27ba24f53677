"""PVE's permission evaluation in the emulator: propagation, privilege separation, and/or, root."""

from __future__ import annotations

import pytest

from ailab_deploy.lab.emulator.access import AccessControl, builtin_roles
from ailab_deploy.lab.emulator.apierror import ApiError


def control(**seed: object) -> AccessControl:
    access = AccessControl("9.1", None, pool_of_vm=lambda vmid: "team" if vmid == 300 else None)
    access.state.users.update({"alice@pve": {"enable": 1, "groups": ["ops"]}, "bob@pve": {"enable": 1}})
    access.state.groups["ops"] = {}
    access.state.roles["Deploy"] = ["VM.Audit", "VM.PowerMgmt", "Datastore.AllocateSpace"]
    access.state.roles["Reader"] = ["VM.Audit"]
    access.state.tokens["alice@pve!sep"] = {"privsep": 1}
    access.state.tokens["alice@pve!full"] = {"privsep": 0}
    return access


def refusal(access: AccessControl, authid: str, path: str, privileges: list[str], **kw: bool) -> str:
    with pytest.raises(ApiError) as raised:
        access.check(authid, path, privileges, **kw)
    assert raised.value.status == 403
    return raised.value.reason


def test_propagation_reaches_below_only_when_set() -> None:
    access = control()
    access.set_acl("/vms", ["Deploy"], kind="user", ugids=["bob@pve"], propagate=False, delete=False)
    assert set(access.permissions("bob@pve", "/vms")) == {
        "VM.Audit",
        "VM.PowerMgmt",
        "Datastore.AllocateSpace",
    }
    assert access.permissions("bob@pve", "/vms/100") == {}  # not propagated
    access.set_acl("/vms", ["Deploy"], kind="user", ugids=["bob@pve"], propagate=True, delete=False)
    assert access.permissions("bob@pve", "/vms/100") == {
        "VM.Audit": 1,
        "VM.PowerMgmt": 1,
        "Datastore.AllocateSpace": 1,
    }
    # an entry deeper down replaces what came from above
    access.set_acl("/vms/100", ["Reader"], kind="user", ugids=["bob@pve"], propagate=True, delete=False)
    assert access.permissions("bob@pve", "/vms/100") == {"VM.Audit": 1}
    assert (
        refusal(access, "bob@pve", "/vms/100", ["VM.PowerMgmt"])
        == "Permission check failed (/vms/100, VM.PowerMgmt)"
    )
    assert "VM.PowerMgmt" in access.permissions("bob@pve", "/vms/101")


def test_user_entries_override_group_entries_and_noaccess_wins() -> None:
    access = control()
    access.set_acl("/", ["Deploy"], kind="group", ugids=["ops"], propagate=True, delete=False)
    assert "VM.PowerMgmt" in access.permissions("alice@pve", "/vms/1")
    assert access.permissions("bob@pve", "/vms/1") == {}  # not in the group
    access.set_acl("/vms", ["Reader"], kind="user", ugids=["alice@pve"], propagate=True, delete=False)
    assert access.permissions("alice@pve", "/vms/1") == {"VM.Audit": 1}
    access.set_acl(
        "/vms/1", ["NoAccess", "Deploy"], kind="user", ugids=["alice@pve"], propagate=True, delete=False
    )
    assert access.permissions("alice@pve", "/vms/1") == {}


def test_a_privilege_separated_token_gets_the_intersection_with_its_user() -> None:
    access = control()
    access.set_acl("/", ["Reader"], kind="user", ugids=["alice@pve"], propagate=True, delete=False)
    access.set_acl("/", ["Deploy"], kind="token", ugids=["alice@pve!sep"], propagate=True, delete=False)
    assert access.permissions("alice@pve!sep", "/vms/7") == {"VM.Audit": 1}  # Deploy ∩ Reader
    assert access.permissions("alice@pve!full", "/vms/7") == {"VM.Audit": 1}  # the user's, whatever its ACLs
    access.set_acl("/", ["Deploy"], kind="user", ugids=["alice@pve"], propagate=True, delete=False)
    assert set(access.permissions("alice@pve!sep", "/vms/7")) == {
        "VM.Audit",
        "VM.PowerMgmt",
        "Datastore.AllocateSpace",
    }
    assert access.permissions("alice@pve!missing", "/vms/7") == {}  # an unknown token has nothing


def test_root_has_everything_its_tokens_only_what_they_are_given() -> None:
    access = control()
    everything = builtin_roles("9.1")["Administrator"]
    assert set(access.permissions("root@pam", "/anything")) == set(everything)
    access.check("root@pam", "/vms/1", ["VM.Allocate", "Sys.Modify"])
    access.state.tokens["root@pam!ci"] = {"privsep": 1}
    assert access.permissions("root@pam!ci", "/") == {}
    access.state.tokens["root@pam!ci"] = {"privsep": 0}
    assert set(access.permissions("root@pam!ci", "/")) == set(everything)


def test_pool_roles_reach_the_pools_guests() -> None:
    access = control()
    access.set_acl("/pool/team", ["Deploy"], kind="user", ugids=["bob@pve"], propagate=True, delete=False)
    assert "VM.PowerMgmt" in access.permissions("bob@pve", "/vms/300")  # VM 300 is in pool team
    assert access.permissions("bob@pve", "/vms/301") == {}


def test_declared_checks_with_and_or_any_and_require_param() -> None:
    access = control()
    access.set_acl(
        "/vms/100", ["PVETemplateUser"], kind="user", ugids=["bob@pve"], propagate=True, delete=False
    )
    clone = [
        "and",
        ["perm", "/vms/{vmid}", ["VM.Clone"]],
        [
            "or",
            ["perm", "/vms/{newid}", ["VM.Allocate"]],
            ["perm", "/pool/{pool}", ["VM.Allocate"], "require_param", "pool"],
        ],
    ]
    with pytest.raises(ApiError, match=r"^Permission check failed\n$"):  # 'or' names nothing, as PVE
        access.check_api({"check": clone}, "bob@pve", {"vmid": "100", "newid": "101"})
    access.set_acl("/vms/101", ["PVEVMAdmin"], kind="user", ugids=["bob@pve"], propagate=True, delete=False)
    access.check_api({"check": clone}, "bob@pve", {"vmid": "100", "newid": "101"})
    with pytest.raises(ApiError, match=r"\(/vms/102, VM.Clone\)"):  # 'and' stops at its first failure
        access.check_api({"check": clone}, "bob@pve", {"vmid": "102", "newid": "101"})
    config = {"check": ["perm", "/vms/{vmid}", ["VM.Config.Disk", "VM.Config.CPU"], "any", 1]}
    access.set_acl("/vms/103", ["Reader"], kind="user", ugids=["bob@pve"], propagate=True, delete=False)
    assert refusal(access, "bob@pve", "/vms/103", ["VM.Config.Disk", "VM.Config.CPU"], any_of=True) == (
        "Permission check failed (/vms/103, VM.Config.Disk|VM.Config.CPU)"
    )
    with pytest.raises(ApiError):
        access.check_api(config, "bob@pve", {"vmid": "103"})
    access.check_api({"user": "all"}, "bob@pve", {})
    with pytest.raises(ApiError, match="user != root@pam"):  # no declaration: root only
        access.check_api(None, "bob@pve", {})


def test_releases_differ_where_pve_9_changed_privileges() -> None:
    nine, eight = builtin_roles("9.1"), builtin_roles("8.4")
    assert "VM.Monitor" in eight["PVEVMAdmin"] and "VM.Monitor" not in nine["Administrator"]
    assert {"VM.GuestAgent.Audit", "VM.Replicate"} <= nine["PVEVMAdmin"]
    assert "VM.GuestAgent.Audit" not in eight["Administrator"]
    assert "Mapping.Modify" not in nine["PVEAdmin"] and "Mapping.Modify" in nine["PVEMappingAdmin"]
    assert nine["PVEAuditor"] >= {"VM.Audit", "Sys.Audit", "Datastore.Audit"}
    assert nine["NoAccess"] == frozenset()
