"""The POST helper the smoke tests run on the apps VM: the LLM key arrives on stdin, never in argv."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from ailab_deploy.adapters.smoke import HTTP_POST

KEY = "smoke-key-0123456789abcdef"


class KeyChecking(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str | None, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        authorization = self.headers.get("Authorization")
        KeyChecking.seen.append((authorization, body))
        status, answer = (200, b'{"content": "ok"}') if authorization == f"Bearer {KEY}" else (401, b"{}")
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def server() -> Iterator[str]:
    KeyChecking.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeyChecking)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/completion"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _post(url: str, stdin: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", HTTP_POST, url, "10"]
    assert not any(KEY in arg for arg in argv)
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)


def test_key_from_stdin_becomes_a_bearer_token(server: str) -> None:
    result = _post(server, KEY + "\n" + json.dumps({"prompt": "x", "n_predict": 1}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"content": "ok"}
    assert KeyChecking.seen == [(f"Bearer {KEY}", {"prompt": "x", "n_predict": 1})]


def test_without_a_key_the_refusal_is_reported_without_secrets(server: str) -> None:
    result = _post(server, "\n" + json.dumps({"prompt": "x"}))
    assert result.returncode == 1
    assert result.stderr.strip() == "HTTP 401"
    assert KeyChecking.seen == [(None, {"prompt": "x"})]
