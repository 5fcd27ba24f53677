"""Path routing: ``/nodes/{node}/qemu/{vmid}/config`` patterns to handler functions."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .auth import Identity


@dataclass
class Request:
    method: str
    path: str  # below /api2/json
    params: dict[str, str]  # query and body merged (query wins), path parameters added
    identity: Identity
    path_params: dict[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    """A success answer with extra envelope keys (e.g. ``total`` for task logs)."""

    data: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawJson:
    """Already-encoded JSON for ``data`` (hot read paths cache their encoding)."""

    data: bytes


Handler = Callable[[Request], Any]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._patterns: list[tuple[str, str]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern.rstrip("/"))
        self._routes.append((method, re.compile(f"^{regex}/?$"), handler))
        self._patterns.append((method, pattern))

    def routes(self) -> list[tuple[str, str]]:
        """(method, path pattern) of every served endpoint, in PVE's path notation."""
        return list(self._patterns)

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str], str] | None:
        """(handler, path parameters, path pattern) of the endpoint serving ``method path``."""
        for (route_method, regex, handler), (_, pattern) in zip(self._routes, self._patterns, strict=True):
            if route_method != method:
                continue
            match = regex.match(path)
            if match:
                return handler, match.groupdict(), pattern
        return None
