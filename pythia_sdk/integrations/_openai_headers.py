"""Where the tags and ``traceparent`` enter the HTTP request.

Why not through openai's ``extra_headers``: openai and httpx copy and re-normalise every
custom header several times per call (openai's header dict and ``Headers``, the httpx
client's merge, whose per-header update rescans the list), about 3 us per header on a
real call path: four headers were half of the SDK's budget. So, in the common case where the
caller set none of our headers, the request wrapper leaves ``options.headers`` alone and
puts the headers in :data:`OUTGOING`; the wrapped ``_build_request`` (openai's one
method that turns options into an ``httpx.Request``, every retry included) appends them
to the built request. Where the caller did set headers, the wrapper merges into
``options.headers`` as before (never replacing one of theirs).

Appending is one ``list.extend`` on the ``Headers``' list of ``(name, lowercased name,
value)`` byte triples, the layout httpx has kept since 0.18 and httpx2 shares; it is
checked once per ``Headers`` class against the public API, and any class that fails
the check gets the public ``headers[name] = value`` instead.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any

#: (the openai client, the byte triples to add) while that client's call is being made.
OUTGOING: contextvars.ContextVar[tuple[Any, tuple[tuple[bytes, bytes, bytes], ...]] | None] = \
    contextvars.ContextVar("pythia_outgoing_headers", default=None)

_TRACEPARENT = b"traceparent"
_Triples = tuple[tuple[bytes, bytes, bytes], ...]
_encoded: dict[int, tuple[Mapping[str, str], _Triples]] = {}


def encoded_triples(headers: Mapping[str, str]) -> _Triples:
    """``headers`` as byte triples, computed once per mapping (contexts and resolved
    tags keep theirs for their whole life; the entry keeps the mapping alive, so its
    ``id`` cannot be reused while cached)."""
    found = _encoded.get(id(headers))
    if found is not None and found[0] is headers:
        return found[1]
    triples = tuple((k.encode("ascii"), k.lower().encode("ascii"), v.encode("ascii"))
                    for k, v in headers.items())
    if len(_encoded) >= 1024:
        _encoded.clear()
    _encoded[id(headers)] = (headers, triples)
    return triples


def with_traceparent(triples: _Triples, tp: str | None) -> _Triples:
    if tp is None:
        return triples
    return (*triples, (_TRACEPARENT, _TRACEPARENT, tp.encode("ascii")))


#: ``Headers`` classes checked to keep httpx's list of byte triples (True) or not.
_list_layout: dict[type, bool] = {}


def _has_list_layout(headers_type: type) -> bool:
    """Whether appending to ``_list`` is seen through ``headers_type``'s public API."""
    try:
        probe = headers_type({"Content-Type": "application/json"})
        probe._list.extend(((b"X-Probe", b"x-probe", b"v1"),))
        return probe.get("x-probe") == "v1" and probe.get_list("X-PROBE") == ["v1"] \
            and probe.raw[-1] == (b"X-Probe", b"v1") and bool(probe.get("content-type"))
    except Exception:  # noqa: BLE001 - any other layout: the public API
        return False


def add_headers(headers: Any, triples: _Triples) -> None:
    layout = _list_layout.get(type(headers))
    if layout is None:
        layout = _list_layout[type(headers)] = _has_list_layout(type(headers))
    if layout:
        headers._list.extend(triples)
    else:
        for name, _, value in triples:
            headers[name.decode("ascii")] = value.decode("ascii")


def build_request_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    """openai's ``_build_request``, adding the outgoing headers of the call in progress
    on this client (each retry builds a request, and each gets them)."""

    def _build_request(self_: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        request = original(self_, options, *args, **kwargs)
        outgoing = OUTGOING.get()
        if outgoing is not None and outgoing[0] is self_:
            try:
                headers = request.headers
                if _list_layout.get(type(headers)):
                    headers._list.extend(outgoing[1])
                else:
                    add_headers(headers, outgoing[1])
            except Exception as exc:  # noqa: BLE001 - never fail the user's call
                from pythia_sdk.integrations._openai_calls import log_failure

                log_failure("openai request headers", exc)
        return request

    _build_request.__pythia_original__ = original  # type: ignore[attr-defined]
    return _build_request
