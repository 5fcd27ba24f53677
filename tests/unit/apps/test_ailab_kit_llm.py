"""ailab_kit: settings and the LLM client against an in-process fake server on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "apps" / "ailab_kit" / "src"))

from ailab_kit.llm import LLMClient, LLMError
from ailab_kit.settings import Settings, SettingsError


class FakeLLM(BaseHTTPRequestHandler):
    """Answers the few routes of Ollama and llama-server that ailab_kit uses; records requests."""

    requests: ClassVar[list[tuple[str, str, Any]]] = []
    authorizations: ClassVar[list[str | None]] = []
    fail_with: int | None = None
    completion_content = " Paris.\n"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        FakeLLM.requests.append(("GET", self.path, None))
        FakeLLM.authorizations.append(self.headers.get("Authorization"))
        if FakeLLM.fail_with:
            self._reply(FakeLLM.fail_with, {"error": "boom"})
        elif self.path == "/api/tags":
            self._reply(200, {"models": [{"name": "ailab-llm:latest", "digest": "abc"}]})
        elif self.path == "/v1/models":
            self._reply(200, {"object": "list", "data": [{"id": "gemma3-270m", "object": "model"}]})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        FakeLLM.requests.append(("POST", self.path, body))
        FakeLLM.authorizations.append(self.headers.get("Authorization"))
        if FakeLLM.fail_with:
            self._reply(FakeLLM.fail_with, {"error": "boom"})
        elif self.path == "/api/generate":
            self._reply(200, {"model": body["model"], "response": " Paris. ", "done": True, "eval_count": 3})
        elif self.path == "/completion":
            self._reply(
                200,
                {
                    "content": FakeLLM.completion_content,
                    "stop": True,
                    "timings": {"predicted_n": 2, "predicted_ms": 20.0},
                },
            )
        else:
            self._reply(404, {"error": "not found"})


@pytest.fixture()
def fake_llm() -> Iterator[str]:
    FakeLLM.requests = []
    FakeLLM.authorizations = []
    FakeLLM.fail_with = None
    FakeLLM.completion_content = " Paris.\n"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_ollama_models_and_generate(fake_llm: str) -> None:
    client = LLMClient(fake_llm + "/", "ailab-llm", "ollama", timeout=5)
    assert client.models() == ["ailab-llm:latest"]
    completion = client.generate("Capital of France?", max_tokens=16)
    assert completion.text == "Paris."
    assert completion.tokens == 3
    assert completion.latency_ms > 0
    method, path, body = FakeLLM.requests[-1]
    assert (method, path) == ("POST", "/api/generate")
    assert body == {
        "model": "ailab-llm",
        "prompt": "Capital of France?",
        "stream": False,
        "options": {"num_predict": 16},
    }


def test_llamacpp_models_and_completion(fake_llm: str) -> None:
    client = LLMClient(fake_llm, "gemma3-270m", "llamacpp", timeout=5)
    assert client.models() == ["gemma3-270m"]
    completion = client.generate("Capital of France?", max_tokens=8)
    assert completion.text == "Paris."
    assert completion.tokens == 2
    _, path, body = FakeLLM.requests[-1]
    assert path == "/completion"
    assert body["prompt"] == "Question: Capital of France?\nAnswer:"
    assert body["n_predict"] == 8


def test_the_clients_answer_cap_applies_unless_a_call_sets_its_own(fake_llm: str) -> None:
    client = LLMClient(fake_llm, "gemma3-270m", "llamacpp", timeout=5, max_tokens=48)
    client.generate("Capital of France?")
    assert FakeLLM.requests[-1][2]["n_predict"] == 48
    client.generate("Capital of France?", max_tokens=8)
    assert FakeLLM.requests[-1][2]["n_predict"] == 8
    ollama = LLMClient(fake_llm, "gemma3-270m", "ollama", timeout=5, max_tokens=48)
    ollama.generate("Capital of France?")
    assert FakeLLM.requests[-1][2]["options"] == {"num_predict": 48}


@pytest.mark.parametrize(
    ("content", "answer"),
    [
        ("\n\nParis is the capital.\n\nIt is large.", "Paris is the capital."),
        ("\n Paris.", "Paris."),
        (" Paris.\nQuite big.\n\nMore.", "Paris.\nQuite big."),
        ("\n\n", ""),
    ],
)
def test_a_completion_keeps_its_first_paragraph_after_leading_blank_lines(
    fake_llm: str, content: str, answer: str
) -> None:
    FakeLLM.completion_content = content
    completion = LLMClient(fake_llm, "gemma3-270m", "llamacpp", timeout=5).generate("Capital?")
    assert completion.text == answer
    _, _, body = FakeLLM.requests[-1]
    assert "\n\n" not in body["stop"]


def test_api_key_goes_out_as_a_bearer_token(fake_llm: str) -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+psycopg://lab:pw@10.0.0.10:5432/lab",
            "AILAB_LLM_URL": fake_llm,
            "AILAB_LLM_MODEL": "gemma3-270m",
            "AILAB_LLM_PROVIDER": "llamacpp",
            "AILAB_LLM_API_KEY": "k3y-from-the-env-file",
        }
    )
    assert "k3y-from-the-env-file" not in repr(settings)
    client = settings.llm_client()
    client.models()
    client.generate("Capital of France?")
    assert FakeLLM.authorizations == ["Bearer k3y-from-the-env-file"] * 2
    LLMClient(fake_llm, "m", "llamacpp", timeout=5).models()  # no key: no header
    assert FakeLLM.authorizations[-1] is None


def test_http_error_becomes_llm_error(fake_llm: str) -> None:
    FakeLLM.fail_with = 503
    with pytest.raises(LLMError, match="HTTP 503"):
        LLMClient(fake_llm, "m", "llamacpp", timeout=5).models()


def test_unreachable_server_becomes_llm_error() -> None:
    # Port 9 on loopback: nothing listens there in the test environment.
    with pytest.raises(LLMError, match="cannot reach"):
        LLMClient("http://127.0.0.1:9", "m", "ollama", timeout=2).models()


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="provider"):
        LLMClient("http://127.0.0.1:1", "m", "openai")


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+psycopg://lab:p%40ss@10.0.0.10:5432/lab",
            "AILAB_LLM_URL": "http://10.0.0.11:8080/",
            "AILAB_LLM_MODEL": "ailab-llm",
            "AILAB_LLM_PROVIDER": "llamacpp",
            "AILAB_LLM_TIMEOUT": "30",
            "AILAB_LLM_MAX_TOKENS": "64",
        }
    )
    assert settings.llm_url == "http://10.0.0.11:8080"
    assert settings.llm_provider == "llamacpp"
    assert settings.llm_timeout == 30.0
    assert settings.llm_max_tokens == 64 and settings.llm_client().max_tokens == 64
    minimal = Settings.from_env({"DATABASE_URL": "x", "AILAB_LLM_URL": "y", "AILAB_LLM_MODEL": "z"})
    assert minimal.llm_max_tokens == 128
    assert settings.masked_database_url() == "postgresql+psycopg://lab:***@10.0.0.10:5432/lab"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "DATABASE_URL, AILAB_LLM_URL, AILAB_LLM_MODEL"),
        (
            {"DATABASE_URL": "x", "AILAB_LLM_URL": "y", "AILAB_LLM_MODEL": "z", "AILAB_LLM_PROVIDER": "gpt"},
            "must be one of",
        ),
        (
            {"DATABASE_URL": "x", "AILAB_LLM_URL": "y", "AILAB_LLM_MODEL": "z", "AILAB_LLM_TIMEOUT": "soon"},
            "number",
        ),
        (
            {
                "DATABASE_URL": "x",
                "AILAB_LLM_URL": "y",
                "AILAB_LLM_MODEL": "z",
                "AILAB_LLM_MAX_TOKENS": "lots",
            },
            "AILAB_LLM_MAX_TOKENS must be a whole number of tokens, 1 or more",
        ),
        (
            {"DATABASE_URL": "x", "AILAB_LLM_URL": "y", "AILAB_LLM_MODEL": "z", "AILAB_LLM_MAX_TOKENS": "0"},
            "AILAB_LLM_MAX_TOKENS must be a whole number of tokens, 1 or more",
        ),
    ],
)
def test_settings_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
