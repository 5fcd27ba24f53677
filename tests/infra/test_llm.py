"""llm: the engine's service, its flags or environment from sizing, the model, where it listens."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from ailab_deploy.core.plan import VM, Plan
from tests.infra.expected import SERVED_MODEL_NAME, llamacpp_flags, ollama_environment


@pytest.fixture
def llm(hostvars: dict[str, Any], needs: Any) -> dict[str, Any]:
    needs("llm")
    return hostvars


def _service(llm: dict[str, Any]) -> str:
    return "ollama" if llm["llm_engine"] == "ollama" else "llama-server"


def _port(llm: dict[str, Any]) -> int:
    key = "llm_ollama_port" if llm["llm_engine"] == "ollama" else "llm_llamacpp_port"
    return int(llm.get(key, 11434 if llm["llm_engine"] == "ollama" else 8080))


def test_service_is_enabled_and_running_as_its_own_user(host: Any, llm: dict[str, Any]) -> None:
    service = host.service(_service(llm))
    assert service.is_enabled and service.is_running
    user = host.check_output(f"systemctl show -P User {_service(llm)}")
    assert user in ("ollama", "llamacpp")
    assert host.user(user).shell in ("/usr/sbin/nologin", "/bin/false")


def test_llamacpp_flags_come_from_sizing(host: Any, llm: dict[str, Any], plan: Plan, vm: VM) -> None:
    if plan.llm.engine != "llamacpp":
        pytest.skip("the ollama engine has no command-line flags")
    argv = shlex.split(
        host.check_output("systemctl show -P ExecStart llama-server").split("argv[]=")[1].split(";")[0]
    )
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    expected = llamacpp_flags(plan, vm)
    assert {flag: flags.get(flag) for flag in expected} == expected


def test_ollama_environment_comes_from_the_plan(host: Any, llm: dict[str, Any], plan: Plan, vm: VM) -> None:
    if plan.llm.engine != "ollama":
        pytest.skip("llama.cpp takes flags, not environment")
    environment = dict(
        item.split("=", 1) for item in host.check_output("systemctl show -P Environment ollama").split()
    )
    expected = ollama_environment(plan, vm)
    assert {name: environment.get(name) for name in expected} == expected


def test_model_file_matches_its_checksum(host: Any, llm: dict[str, Any]) -> None:
    if not llm.get("llm_model_sha256"):
        pytest.skip("the model comes from a registry, identified by its digest")
    argv = host.check_output(f"systemctl show -P ExecStart {_service(llm)}")
    if llm["llm_engine"] == "ollama":
        pytest.skip("Ollama keeps the imported model in its own store")
    model = argv.split("--model ")[1].split()[0]
    assert host.file(model).sha256sum == llm["llm_model_sha256"]


def test_listens_only_on_the_private_address(host: Any, llm: dict[str, Any], plan: Plan, vm: VM) -> None:
    assert host.socket(f"tcp://{vm.ip}:{plan.llm.port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{plan.llm.port}").is_listening


def _key_file(plan: Plan) -> str:
    return "/etc/nginx/ailab-llm-key.conf" if plan.llm.engine == "ollama" else "/etc/ailab-llm/api-key"


def _print_authorization_header(plan: Plan) -> str:
    """A shell command printing the Authorization header from the host's own root-only key file,
    for ``curl -H @-``: the key is never on a command line (sudo logs those)."""
    if plan.llm.engine == "ollama":
        return f"""sed -n 's/^"\\(Bearer [^"]*\\)" 1;$/Authorization: \\1/p' {_key_file(plan)}"""
    return f"sed 's/^/Authorization: Bearer /' {_key_file(plan)}"


def test_api_key_file_is_readable_only_by_its_reader(host: Any, llm: dict[str, Any], plan: Plan) -> None:
    key = host.file(_key_file(plan))
    reader = "root" if plan.llm.engine == "ollama" else "llamacpp"  # nginx's master, or llama-server
    assert (key.user, key.mode) == (reader, 0o600)


def test_api_refuses_requests_without_the_key(host: Any, llm: dict[str, Any], plan: Plan, vm: VM) -> None:
    path = "/api/generate" if plan.llm.engine == "ollama" else "/completion"
    url = f"http://{vm.ip}:{plan.llm.port}{path}"
    curl = f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 --noproxy '*' -d '{{}}' {url}"
    assert int(host.check_output(curl)) == 401
    wrong = host.check_output(f"echo 'Authorization: Bearer not-the-key' | {curl} -H @-")
    assert int(wrong) == 401


def test_serves_the_sized_model(host: Any, llm: dict[str, Any], plan: Plan, vm: VM) -> None:
    base = f"http://{vm.ip}:{plan.llm.port}"
    path = "/api/tags" if llm["llm_engine"] == "ollama" else "/v1/models"
    curl = f"curl -fsS --max-time 10 --noproxy '*' -H @- {base}{path}"
    listing = json.loads(host.check_output(f"{_print_authorization_header(plan)} | {curl}"))
    names = [m.get("name") or m.get("id") for m in listing.get("models", listing.get("data", []))]
    served = SERVED_MODEL_NAME
    assert any(name and name.split(":")[0] == served.split(":")[0] for name in names), names
