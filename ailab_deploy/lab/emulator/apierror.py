"""API errors in PVE's shape: the message goes into the HTTP status line."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error answer. ``message`` is the full text; its first line is the reason."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: dict[str, str] | None = None,
        *,
        empty_body: bool = False,
        delay: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.empty_body = empty_body  # PVE sends 401s with an empty body
        self.delay = delay  # PVE delays authentication failures

    @property
    def reason(self) -> str:
        return self.message.split("\n", 1)[0]


def fail(message: str, status: int = 500) -> ApiError:
    """A plain ``die "msg\\n"`` in PVE: 500, message in the status line and body."""
    return ApiError(status, message if message.endswith("\n") else message + "\n")


def param_error(errors: dict[str, str]) -> ApiError:
    """PVE's ``raise_param_exc``: 400 ``Parameter verification failed.``"""
    return ApiError(400, "Parameter verification failed.\n", errors)


def not_implemented(method: str, path: str) -> ApiError:
    return ApiError(501, f"Method '{method} {path}' not implemented\n")


def auth_error(reason: str) -> ApiError:
    return ApiError(401, reason, empty_body=True, delay=True)
