"""The server's errors: one tree, each rendered once as OpenAI's error body.

::

    PythiaError                      500  internal_error
    ├── InvalidRequestError          400  invalid_request_error
    │   ├── NotFoundError            404  invalid_request_error (e.g. model_not_found)
    │   └── PayloadTooLargeError     413  invalid_request_error
    ├── OverloadedError              429  overloaded_error
    └── UpstreamError                502  upstream_error
        ├── UpstreamUnavailableError 503  upstream_unavailable
        └── UpstreamTimeoutError     504  upstream_timeout

Foreign errors (aiohttp, json, sqlite) are translated where they enter
(``raise UpstreamUnavailableError(...) from exc``); the gateway renders any
:class:`PythiaError` with :func:`error_body`, so every failure a client sees has the
shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "InvalidRequestError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PythiaError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "error_body",
]


class PythiaError(Exception):
    """Base of every error the gateway turns into an HTTP response."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, param=self.param, code=self.code)


class InvalidRequestError(PythiaError):
    """The client's request cannot be served as sent (bad JSON, missing or wrong field)."""

    status_code = 400
    error_type = "invalid_request_error"


class NotFoundError(InvalidRequestError):
    """The request names something that does not exist (a model, a route)."""

    status_code = 404


class PayloadTooLargeError(InvalidRequestError):
    """The request body exceeds the configured limit (checked while reading)."""

    status_code = 413


class OverloadedError(PythiaError):
    """The gateway refuses new work to protect what it is already serving."""

    status_code = 429
    error_type = "overloaded_error"


class UpstreamError(PythiaError):
    """A replica answered badly (garbage, a broken stream)."""

    status_code = 502
    error_type = "upstream_error"


class UpstreamUnavailableError(UpstreamError):
    """No replica could take the request (connection refused, all unhealthy)."""

    status_code = 503
    error_type = "upstream_unavailable"


class UpstreamTimeoutError(UpstreamError):
    """A replica did not answer in time."""

    status_code = 504
    error_type = "upstream_timeout"


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape; the one place it is spelled."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
