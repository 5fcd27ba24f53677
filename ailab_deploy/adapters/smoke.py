"""Smoke tests that measure: the LLM's speed, PostgreSQL under load, the apps end to end.

Traffic follows the lab's real paths: the LLM is asked from the apps VM (the only
client its firewall admits), pgbench runs on the apps VM against the database VM,
and the apps are reached from the controller (an admin source).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from ailab_deploy.adapters.bandwidth_probe import PROBE_SOURCE, parse_probe_output
from ailab_deploy.adapters.secrets import LLM_API_KEY_SECRET_NAME, SecretStore, database_password_secret_name
from ailab_deploy.adapters.ssh import SshSession
from ailab_deploy.adapters.statedir import known_hosts_path
from ailab_deploy.core.inventory import SERVED_MODEL_NAME
from ailab_deploy.core.loader import LoadedPlan, private_key_of
from ailab_deploy.core.plan import VM
from ailab_deploy.core.report import (
    AppResult,
    LlmResult,
    MeasurementError,
    PgbenchResult,
    engine_ceiling_from_llama_bench,
    parse_pgbench,
    tokens_per_second_from_response,
)
from ailab_deploy.core.sizing import LlmSizing
from ailab_deploy.errors import AilabError

log = logging.getLogger(__name__)

FIXED_PROMPT = "Explain in plain words why a database needs an index. Answer in a few sentences."
E2E_QUESTION = "In one sentence: what is PostgreSQL?"

# Runs on the apps VM: one JSON POST, proxies bypassed (the LLM is on the private network).
# stdin: the API key on the first line (empty: none), then the body; the key never is in argv.
HTTP_POST = r"""
import sys, urllib.error, urllib.request
key = sys.stdin.buffer.readline().strip().decode()
headers = {"Content-Type": "application/json"}
if key:
    headers["Authorization"] = "Bearer " + key
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(), headers=headers)
try:
    with opener.open(request, timeout=float(sys.argv[2])) as response:
        sys.stdout.write(response.read().decode())
except urllib.error.HTTPError as error:
    sys.exit(f"HTTP {error.code}")
"""


# Runs on the LLM VM: llama-bench from the running llama-server's own build directory, with the
# server's model, threads, KV cache types, flash attention and NUMA mode (read from its command
# line), as the server's user. argv: tokens to generate, context depth (the deployed request's
# prompt tokens), repetitions. Prints llama-bench's JSON.
LLAMA_BENCH = r"""
import os, pwd, subprocess, sys
n_gen, depth, repetitions = sys.argv[1:4]
pid = subprocess.check_output(["pgrep", "-o", "-x", "llama-server"], text=True).split()[0]
with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
    server = cmdline.read().decode().rstrip("\0").split("\0")
def option(name, default=None):
    return server[server.index(name) + 1] if name in server else default
bench = os.path.join(os.path.dirname(os.path.realpath(server[0])), "llama-bench")
command = [bench, "-m", option("--model"), "-t", option("--threads", "1"), "-p", "0", "-n", n_gen,
           "-d", depth, "-r", repetitions, "-o", "json",
           "-ctk", option("--cache-type-k", "f16"), "-ctv", option("--cache-type-v", "f16")]
if option("--flash-attn") in ("on", "off", "auto"):
    command += ["-fa", option("--flash-attn")]
if option("--numa"):
    command += ["--numa", option("--numa")]
user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
os.execvp("sudo", ["sudo", "-n", "-u", user, *command])
"""
LLAMA_BENCH_REPETITIONS = 2  # after its own warm-up run; the mean of two is within 1% of three on the lab


class SmokeError(AilabError):
    """A smoke test could not measure (as opposed to measuring a value below a gate)."""


@dataclass
class Targets:
    loaded: LoadedPlan
    state_dir: Path
    _sessions: dict[str, SshSession] = field(default_factory=dict, init=False, repr=False)  # see session()

    def vm_with_role(self, role: str) -> VM:
        vms = self.loaded.plan.vms_with_role(role)
        if not vms:
            raise SmokeError(f"no VM has the {role!r} role")
        return vms[0]

    def llm_api_key(self) -> str:
        key = SecretStore(self.state_dir).get(LLM_API_KEY_SECRET_NAME)
        if key is None:
            raise SmokeError("no stored LLM API key: run `ailab-deploy configure` first")
        return key

    def ssh(self, vm: VM) -> SshSession:
        """A new SSH session to ``vm``; the caller closes it (``with targets.session(vm) as session``)."""
        return SshSession(
            str(vm.ip),
            self.loaded.plan.template.admin_user,
            known_hosts=known_hosts_path(self.state_dir),
            key_file=private_key_of(self.loaded),
        )

    @contextmanager
    def session(self, vm: VM) -> Iterator[SshSession]:
        """The SSH session to ``vm`` these measurements share: opened at first use and kept open
        (one handshake per VM per verify run, not one per command); :meth:`close` ends them."""
        if vm.name not in self._sessions:
            self._sessions[vm.name] = self.ssh(vm)
        yield self._sessions[vm.name]

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()


def _generation_request(engine: str, tokens: int) -> tuple[str, dict[str, Any]]:
    if engine == "ollama":
        return "/api/generate", {
            "model": SERVED_MODEL_NAME,
            "prompt": FIXED_PROMPT,
            "stream": False,
            "options": {"num_predict": tokens, "temperature": 0},
        }
    return "/completion", {
        "prompt": FIXED_PROMPT,
        "n_predict": tokens,
        "temperature": 0,
        "cache_prompt": False,
        "ignore_eos": True,  # generate exactly N tokens, so runs are comparable
    }


def measure_llm(targets: Targets, sizing: LlmSizing) -> LlmResult:
    plan = targets.loaded.plan
    llm_vm = targets.vm_with_role("llm")
    apps_vm = targets.vm_with_role("python_app")
    with targets.session(llm_vm) as session:
        bandwidth = parse_probe_output(session.check(["python3", "-"], stdin=PROBE_SOURCE, timeout=600))
    path, body = _generation_request(plan.llm.engine, plan.verify.llm_tokens)
    url = f"http://{llm_vm.ip}:{plan.llm.port}{path}"
    key = targets.llm_api_key()
    with targets.session(apps_vm) as session:
        warm = dict(
            body, **({"options": {"num_predict": 1}} if plan.llm.engine == "ollama" else {"n_predict": 1})
        )
        post = ["python3", "-c", HTTP_POST, url, "900"]
        session.check(post, stdin=f"{key}\n{json.dumps(warm)}", timeout=960)
        raw = session.check(post, stdin=f"{key}\n{json.dumps(body)}", timeout=960)
    try:
        response = json.loads(raw)
    except json.JSONDecodeError:
        raise SmokeError(f"{url}: answer is not JSON: {raw[:200]!r}") from None
    tokens, tokens_per_second = tokens_per_second_from_response(plan.llm.engine, response)
    ceiling = None
    if plan.llm.engine == "llamacpp":
        # The engine's own ceiling, right after the deployed measurement (never at the same time).
        depth = int((response.get("timings") or {}).get("prompt_n") or 0)
        ceiling = measure_engine_ceiling(targets, llm_vm, tokens or plan.verify.llm_tokens, depth)
    return LlmResult(
        engine=plan.llm.engine,
        model=plan.llm.model,
        tokens=tokens,
        tokens_per_second=tokens_per_second,
        predicted_tokens_per_second=sizing.expected_tokens_per_second,
        bandwidth_gbs=bandwidth,
        bound_tokens_per_second=bandwidth * 1e9 / sizing.bytes_per_token,
        engine_ceiling_tokens_per_second=ceiling,
    )


def measure_engine_ceiling(targets: Targets, llm_vm: VM, tokens: int, depth: int) -> float:
    """llama-bench's generation tokens/s for what the server runs, on the server's VM."""
    argv = ["python3", "-c", LLAMA_BENCH, str(tokens), str(depth), str(LLAMA_BENCH_REPETITIONS)]
    with targets.session(llm_vm) as session:
        return engine_ceiling_from_llama_bench(session.check(argv, timeout=1800))


def measure_pgbench(targets: Targets) -> PgbenchResult:
    plan = targets.loaded.plan
    verify = plan.verify
    database_vm = targets.vm_with_role("postgresql")
    apps_vm = targets.vm_with_role("python_app")
    app = next((a for a in plan.apps.apps if a.database and a.database_user), None)
    if app is None or app.database is None or app.database_user is None:
        raise SmokeError("pgbench needs an app with database and database_user in the plan")
    user = next(u for u in plan.database.users if u.name == app.database_user)
    if user.password != "generated":
        raise SmokeError(f"pgbench needs {user.name}'s password; only generated passwords are readable here")
    password = SecretStore(targets.state_dir).get(database_password_secret_name(user.name))
    if password is None:
        raise SmokeError(f"no stored password for {user.name}: run `ailab-deploy configure` first")
    database: str = app.database
    connection = ["-h", str(database_vm.ip), "-p", str(plan.database.port), "-U", user.name]

    def pgbench(arguments: list[str], timeout: float) -> str:
        # The password arrives on stdin, so it is neither in the process list nor in a file.
        script = 'IFS= read -r PGPASSWORD; export PGPASSWORD; exec "$@"'
        argv = ["sh", "-c", script, "pgbench", "pgbench", *connection, *arguments, database]
        with targets.session(apps_vm) as session:
            return session.check(argv, stdin=password + "\n", timeout=timeout)

    pgbench(["-i", "-q", "-s", str(verify.pgbench_scale)], timeout=600)
    try:
        clients = str(verify.pgbench_clients)
        output = pgbench(["-c", clients, "-j", clients, "-T", str(verify.pgbench_seconds)], 600)
    finally:
        pgbench(["-i", "-I", "d"], timeout=120)  # drop the pgbench tables again
    return parse_pgbench(output, verify.pgbench_clients, verify.pgbench_seconds)


def measure_apps(targets: Targets) -> tuple[AppResult, ...]:
    plan = targets.loaded.plan
    apps_vm = targets.vm_with_role("python_app")
    session = requests.Session()
    session.trust_env = False  # the apps are on the private network, never behind a proxy
    results = []
    for app in plan.apps.apps:
        base = f"http://{apps_vm.ip}:{app.port}"
        try:
            status = session.get(base + app.health_path, timeout=30).status_code
        except requests.RequestException as error:
            results.append(AppResult(app.name, 0, None, f"health: {type(error).__name__}"))
            continue
        latency = None
        detail = ""
        if app.kind == "asgi" and status == 200:
            started = time.perf_counter()
            try:
                answer = session.post(base + "/ask", json={"question": E2E_QUESTION}, timeout=600)
                latency = (time.perf_counter() - started) * 1000
                if answer.status_code != 200:
                    raise MeasurementError(f"/ask answered {answer.status_code}")
                data = answer.json()
                if not data.get("answer") or not data.get("stored_id"):
                    raise MeasurementError("/ask gave no answer or stored nothing")
                detail = f"stored_id={data['stored_id']}"
            except (requests.RequestException, ValueError) as error:
                latency = None
                detail = f"ask: {error}"
                status = 0
        results.append(AppResult(app.name, status, latency, detail))
    return tuple(results)
