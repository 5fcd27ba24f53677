"""A tiny ASGI app for smoke tests: GET /health and POST /ask {question}."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from ailab_kit.db import check_database, make_engine, make_sessionmaker
from ailab_kit.llm import LLMError
from ailab_kit.service import ask
from ailab_kit.settings import Settings

MAX_BODY = 64 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@cache
def _resources():
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    client = settings.llm_client()
    return engine, make_sessionmaker(engine), client


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, default=str).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError("request body too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _health() -> tuple[int, dict[str, Any]]:
    engine, _, client = _resources()
    result: dict[str, Any] = {"status": "ok"}
    try:
        result["database"] = check_database(engine)
    except Exception as exc:
        result["status"], result["database_error"] = "degraded", exc.__class__.__name__
    try:
        result["llm_models"] = client.models()
    except LLMError as exc:
        result["status"], result["llm_error"] = "degraded", str(exc)
    return (200 if result["status"] == "ok" else 503), result


def _ask(question: str) -> dict[str, Any]:
    _, factory, client = _resources()
    answer = ask(client, factory, question)
    return {
        "answer": answer.answer,
        "latency_ms": answer.latency_ms,
        "stored_id": answer.stored_id,
        "model": answer.model,
    }


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    if path == "/health/live" and method == "GET":
        await _send_json(send, 200, {"status": "ok"})
    elif path == "/health" and method == "GET":
        status, payload = await asyncio.to_thread(_health)
        await _send_json(send, status, payload)
    elif path == "/ask" and method == "POST":
        try:
            data = json.loads(await _read_body(receive) or b"{}")
            question = data["question"]
            if not isinstance(question, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            await _send_json(send, 400, {"error": 'expected JSON {"question": "..."}'})
            return
        try:
            payload = await asyncio.to_thread(_ask, question)
        except ValueError as exc:
            await _send_json(send, 400, {"error": str(exc)})
        except LLMError as exc:
            await _send_json(send, 502, {"error": str(exc)})
        else:
            await _send_json(send, 200, payload)
    else:
        await _send_json(send, 404, {"error": f"no route {method} {path}"})
