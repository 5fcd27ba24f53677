"""One small client for both engines: Ollama and llama.cpp's llama-server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class LLMError(RuntimeError):
    """The LLM server could not be reached or answered something unexpected."""


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    latency_ms: float
    tokens: int | None = None


def first_paragraph(text: str) -> str:
    """The answer's first paragraph, ignoring blank lines before it."""
    return text.strip().split("\n\n", 1)[0].strip()


class LLMClient:
    """`provider` is "ollama" (/api/tags, /api/generate) or "llamacpp" (/v1/models, /completion).

    `api_key` goes out as "Authorization: Bearer <key>" (llama-server's --api-key, or the key
    check in front of Ollama); never into error messages.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        provider: str = "ollama",
        timeout: float = 120.0,
        api_key: str = "",
        max_tokens: int = 128,
    ):
        if provider not in ("ollama", "llamacpp"):
            raise ValueError(f"unknown LLM provider {provider!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.provider = provider
        self.timeout = timeout
        self._api_key = api_key
        self.max_tokens = max_tokens  # the longest answer generated, unless a call says otherwise

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(
            self.base_url + path, data=data, method="GET" if body is None else "POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode() or "null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise LLMError(f"{self.provider} {path} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise LLMError(f"cannot reach {self.provider} at {self.base_url}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise LLMError(f"{self.provider} {path} did not answer JSON") from exc

    def models(self) -> list[str]:
        """Names of the models the server offers."""
        if self.provider == "ollama":
            payload = self._request("/api/tags")
            return [m["name"] for m in (payload or {}).get("models", [])]
        payload = self._request("/v1/models")
        return [m["id"] for m in (payload or {}).get("data", [])]

    def generate(self, prompt: str, max_tokens: int | None = None) -> Completion:
        """Answer one prompt; latency is measured around the HTTP call."""
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        started = time.perf_counter()
        if self.provider == "ollama":
            payload = self._request(
                "/api/generate",
                {
                    "model": self.model,
                    "prompt": prompt,
                    "stream": False,
                    "options": {"num_predict": max_tokens},
                },
            )
            text = (payload or {}).get("response")
            tokens = (payload or {}).get("eval_count")
        else:
            # /completion with a plain question/answer prompt: works for base and instruct GGUFs
            # alike, also when the GGUF carries no chat template (llama-server would fall back to chatml).
            payload = self._request(
                "/completion",
                {
                    "prompt": f"Question: {prompt}\nAnswer:",
                    "n_predict": max_tokens,
                    # Not "\n\n": a small model may open its answer with a blank line, and
                    # stopping there would return nothing. The first paragraph is kept below.
                    "stop": ["\nQuestion:"],
                    "cache_prompt": True,
                },
            )
            content = (payload or {}).get("content")
            text = first_paragraph(content) if isinstance(content, str) else content
            tokens = ((payload or {}).get("timings") or {}).get("predicted_n")
        if not isinstance(text, str):
            raise LLMError(f"{self.provider} answered without text")
        latency_ms = (time.perf_counter() - started) * 1000.0
        return Completion(text=text.strip(), model=self.model, latency_ms=latency_ms, tokens=tokens)
