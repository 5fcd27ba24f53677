"""The reference app's JSON API (lab_status.api) driven as ASGI, on sqlite and a fake LLM server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "apps" / "ailab_kit" / "src"))
sys.path.insert(0, str(ROOT / "apps" / "lab_status" / "src"))

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from ailab_kit.migrate import upgrade  # noqa: E402
from lab_status import api  # noqa: E402

from .test_ailab_kit_llm import FakeLLM, fake_llm  # noqa: E402,F401  (fixture re-used)


def _call(method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path}
    asyncio.run(api.app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.fixture()
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_llm: str) -> str:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("AILAB_LLM_URL", fake_llm)
    monkeypatch.setenv("AILAB_LLM_MODEL", "gemma3-270m")
    monkeypatch.setenv("AILAB_LLM_PROVIDER", "llamacpp")
    api._resources.cache_clear()
    yield url
    api._resources.cache_clear()


def test_health_reports_database_and_models(lab_env: str) -> None:
    status, payload = _call("GET", "/health")
    assert status == 200
    assert payload["status"] == "ok"
    assert payload["llm_models"] == ["gemma3-270m"]
    assert _call("GET", "/health/live") == (200, {"status": "ok"})


def test_health_is_503_when_the_llm_is_down(lab_env: str) -> None:
    FakeLLM.fail_with = 500
    status, payload = _call("GET", "/health")
    assert status == 503
    assert payload["status"] == "degraded"


def test_ask_goes_app_llm_database(lab_env: str) -> None:
    status, payload = _call("POST", "/ask", {"question": "Capital of France?"})
    assert status == 200
    assert payload["answer"] == "Paris."
    assert payload["stored_id"] == 1
    assert payload["latency_ms"] >= 0
    status, payload = _call("POST", "/ask", {"question": "And of Spain?"})
    assert payload["stored_id"] == 2


@pytest.mark.parametrize("body", [b"not json", {"q": 1}, {"question": 3}, {"question": "  "}])
def test_ask_rejects_bad_requests(lab_env: str, body: Any) -> None:
    status, payload = _call("POST", "/ask", body)
    assert status == 400
    assert "error" in payload


def test_unknown_route_is_404(lab_env: str) -> None:
    assert _call("GET", "/nope")[0] == 404
