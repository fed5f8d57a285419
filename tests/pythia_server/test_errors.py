from __future__ import annotations

import pytest

from pythia_server import errors


@pytest.mark.parametrize(("cls", "status", "kind", "parent"), [
    (errors.InvalidRequestError, 400, "invalid_request_error", errors.PythiaError),
    (errors.NotFoundError, 404, "invalid_request_error", errors.InvalidRequestError),
    (errors.PayloadTooLargeError, 413, "invalid_request_error", errors.InvalidRequestError),
    (errors.OverloadedError, 429, "overloaded_error", errors.PythiaError),
    (errors.UpstreamError, 502, "upstream_error", errors.PythiaError),
    (errors.UpstreamUnavailableError, 503, "upstream_unavailable", errors.UpstreamError),
    (errors.UpstreamTimeoutError, 504, "upstream_timeout", errors.UpstreamError),
])
def test_the_tree_and_its_bodies(cls: type[errors.PythiaError], status: int, kind: str, parent: type) -> None:
    exc = cls("went wrong", param="model", code="model_not_found")
    assert issubclass(cls, parent) and exc.status_code == status
    assert exc.to_body() == {"error": {"message": "went wrong", "type": kind, "param": "model",
                                       "code": "model_not_found"}}


def test_every_error_is_listed_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        if name[0].isupper():
            assert name in doc
