"""The infra suite's expectations (tests/infra/expected.py) against literal values for the lab plan,
and its firewall test against nftables rulesets in the JSON ``nft -j list ruleset`` prints."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.core.plan import Plan
from ailab_deploy.lab.labplan import render_lab_plan
from tests.infra import test_common
from tests.infra.expected import (
    accepted_tcp_sources,
    debian_release,
    llamacpp_flags,
    open_ports,
    plan_vm,
    postgresql_clients,
    postgresql_major,
    postgresql_settings,
    postgresql_unit,
    python_version,
)
from tests.unit.lab.test_labplan import _inputs

net = ipaddress.ip_network
LAB = net("10.77.0.0/24")
APPS = net("10.77.0.12/32")


@pytest.fixture
def lab_plan(tmp_path: Path) -> Plan:
    return load_plan_text(render_lab_plan(_inputs(tmp_path)), "vms.lab.yaml").plan


def test_release_expectations_of_the_lab_plan(tmp_path: Path) -> None:
    expected = {13: (17, "postgresql@17-main", "3.13"), 12: (15, "postgresql@15-main", "3.11")}
    for release, (major, unit, python) in expected.items():
        plan = load_plan_text(
            render_lab_plan(dataclasses.replace(_inputs(tmp_path), debian_release=release))
        ).plan
        assert debian_release(plan) == release
        assert (postgresql_major(plan), postgresql_unit(plan), python_version(plan)) == (major, unit, python)


def test_postgresql_settings_of_the_lab_vm(lab_plan: Plan) -> None:
    # 2 GiB, 1 vCPU, HDD pool, web workload, 50 connections, PostgreSQL 17 (pgtune by hand; 15
    # gives the same: lz4 WAL compression from 15, JIT off from 12):
    # shared_buffers = 2 GiB / 4; work_mem = (2097152 - 524288) kB / ((50 + 8 workers) x 3) = 9039 kB
    settings = postgresql_settings(lab_plan, plan_vm(lab_plan, "postgres"))
    assert settings == {
        "max_connections": "50",
        "shared_buffers": "512MB",
        "effective_cache_size": "1536MB",
        "maintenance_work_mem": "128MB",
        "checkpoint_completion_target": "0.9",
        "wal_buffers": "16MB",
        "default_statistics_target": "100",
        "random_page_cost": "4",
        "effective_io_concurrency": "2",
        "work_mem": "9039kB",
        "huge_pages": "off",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "jit": "off",
        "wal_compression": "lz4",
    }
    assert postgresql_clients(lab_plan) == {APPS}


def test_llamacpp_flags_of_the_lab_vm(lab_plan: Plan) -> None:
    assert llamacpp_flags(lab_plan, plan_vm(lab_plan, "ollama")) == {
        "--host": "10.77.0.11",
        "--port": "8080",
        "--threads": "2",  # 2 vCPUs on a 2-core host
        "--parallel": "1",
        "--ctx-size": "2048",
        "--cache-type-k": "f16",
        "--cache-type-v": "f16",
        "--alias": "ailab-llm",
        "--api-key-file": "/etc/ailab-llm/api-key",
    }


def test_open_ports_of_the_lab_vms(lab_plan: Plan) -> None:
    ports = {vm.name: open_ports(lab_plan, vm) for vm in lab_plan.vms}
    assert ports == {
        "postgres": {22: {LAB}, 5432: {APPS}},
        "ollama": {22: {LAB}, 8080: {APPS}},
        "devapps": {22: {LAB}, 8000: {LAB}, 8501: {LAB}},
    }


# ---- nftables JSON, in the shape nft 1.0.6 prints for roles/common's ruleset


def _match(protocol: str, field: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"payload": {"protocol": protocol, "field": field}}, "right": right}}


def _rule(*expressions: dict[str, Any], chain: str = "input") -> dict[str, Any]:
    return {"rule": {"family": "inet", "table": "ailab_filter", "chain": chain, "expr": list(expressions)}}


ACCEPT = {"accept": None}
BASE_RULES = [
    _rule(
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, ACCEPT
    ),
    _rule({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": None}),
    _rule({"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, ACCEPT),
]
SSH_RULE = _rule(
    _match("ip", "saddr", {"prefix": {"addr": "10.77.0.0", "len": 24}}), _match("tcp", "dport", 22), ACCEPT
)


def _ruleset(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *BASE_RULES, SSH_RULE, *rules]}


def _postgres_rule(source: Any) -> dict[str, Any]:
    return _rule(_match("ip", "saddr", source), _match("tcp", "dport", 5432), ACCEPT)


def test_parsing_reads_addresses_prefixes_sets_and_ranges() -> None:
    ruleset = _ruleset(
        _postgres_rule("10.77.0.12"),
        _rule(
            _match("ip", "saddr", {"set": [{"prefix": {"addr": "10.77.0.0", "len": 25}}, "10.77.0.200"]}),
            _match("tcp", "dport", {"set": [8000, 8501]}),
            ACCEPT,
        ),
        _rule(
            _match("ip6", "saddr", {"prefix": {"addr": "fd00::", "len": 64}}),
            _match("tcp", "dport", 8000),
            ACCEPT,
        ),
        _rule(
            _match("ip", "saddr", {"range": ["10.0.0.0", "10.0.0.3"]}), _match("tcp", "dport", 9000), ACCEPT
        ),
        _rule(_match("tcp", "dport", 9100), ACCEPT),  # no source: anyone
        _rule(
            _match("ip", "saddr", "10.0.0.9"), _match("tcp", "dport", 9200), {"drop": None}
        ),  # not an opening
        _rule(_match("tcp", "dport", 9300), ACCEPT, chain="forward"),  # another chain
    )
    assert accepted_tcp_sources(ruleset) == {
        22: {LAB},
        5432: {APPS},
        8000: {net("10.77.0.0/25"), net("10.77.0.200/32"), net("fd00::/64")},
        8501: {net("10.77.0.0/25"), net("10.77.0.200/32")},
        9000: {net("10.0.0.0/30")},
        9100: None,
    }


class RulesetHost:
    """A testinfra host whose only answer is this ruleset, for ``nft -j list ruleset``."""

    def __init__(self, ruleset: dict[str, Any]) -> None:
        self.ruleset = ruleset

    def check_output(self, command: str) -> str:
        assert command == "nft -j list ruleset"
        return json.dumps(self.ruleset)


def _firewall_test(lab_plan: Plan, *postgres_rules: dict[str, Any]) -> None:
    host = RulesetHost(_ruleset(*postgres_rules))
    test_common.test_firewall_opens_each_service_only_to_its_sources(
        host, lab_plan, plan_vm(lab_plan, "postgres")
    )


def test_firewall_test_passes_on_the_planned_ruleset(lab_plan: Plan) -> None:
    _firewall_test(lab_plan, _postgres_rule("10.77.0.12"))
    _firewall_test(lab_plan, _postgres_rule({"set": ["10.77.0.12"]}))  # same sources, other spelling


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param([_postgres_rule("10.77.0.120")], id="a-neighbouring-address"),
        pytest.param([_postgres_rule("10.77.0.1")], id="a-prefix-of-the-address"),
        pytest.param([_postgres_rule({"set": ["10.77.0.12", "10.77.0.13"]})], id="one-source-too-many"),
        pytest.param([_postgres_rule({"prefix": {"addr": "10.77.0.0", "len": 24}})], id="the-whole-subnet"),
        pytest.param([_rule(_match("tcp", "dport", 5432), ACCEPT)], id="open-to-anyone"),
        pytest.param([], id="port-closed"),
        pytest.param(
            [_postgres_rule("10.77.0.12"), _rule(_match("tcp", "dport", 6379), ACCEPT)], id="extra-port"
        ),
    ],
)
def test_firewall_test_fails_on_a_wrong_ruleset(lab_plan: Plan, rules: list[dict[str, Any]]) -> None:
    with pytest.raises(AssertionError):
        _firewall_test(lab_plan, *rules)
