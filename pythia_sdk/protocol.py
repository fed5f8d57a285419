"""Pythia's wire protocol: the one place that spells how an agent call is tagged.

The SDK writes tags with :func:`encode_headers`; the gateway reads them with
:func:`parse_headers` and :func:`parse_nvext` (NVIDIA Dynamo's body extension).
Readers never raise: a malformed value is dropped and reported as a
:class:`Problem`, so a bad tag loses an optimisation and never a request.

Standard library only: the server imports this module too, and no other module
may contain a header name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "HEADER_AGENT",
    "HEADER_CALL",
    "HEADER_PARENT",
    "HEADER_PREFIX",
    "HEADER_SESSION",
    "HEADER_WORKFLOW",
    "MAX_ID_LENGTH",
    "AgentTags",
    "Hints",
    "Problem",
    "encode_headers",
    "is_valid_value",
    "merge_headers",
    "parse_headers",
    "parse_nvext",
    "parse_request",
]

HEADER_PREFIX = "x-pythia-"
HEADER_WORKFLOW = HEADER_PREFIX + "workflow"
HEADER_SESSION = HEADER_PREFIX + "session"
HEADER_AGENT = HEADER_PREFIX + "agent"
HEADER_PARENT = HEADER_PREFIX + "parent"
HEADER_CALL = HEADER_PREFIX + "call"

#: Longest accepted tag value, in characters. Agent paths of nested subgraphs fit easily.
MAX_ID_LENGTH = 200
#: Printable ASCII without quotes, backslash, commas or semicolons (safe in headers,
#: Prometheus labels, SQL and HTML once escaped). Spaces are allowed: roles are often
#: "Chief Product Officer".
_VALUE_RE = re.compile(r"^[A-Za-z0-9 _.:/@+=#()\[\]{}|~!$%&*?<>^-]+$")

_FIELDS: tuple[tuple[str, str], ...] = (
    ("workflow", HEADER_WORKFLOW),
    ("session", HEADER_SESSION),
    ("agent", HEADER_AGENT),
    ("parent", HEADER_PARENT),
    ("call", HEADER_CALL),
)

# nvext.agent_context key -> AgentTags field (Dynamo's names).
_NVEXT_CONTEXT: tuple[tuple[str, str], ...] = (
    ("workflow_type_id", "workflow"),
    ("workflow_id", "session"),
    ("program_id", "agent"),
    ("parent_program_id", "parent"),
)


@dataclass(frozen=True, slots=True)
class AgentTags:
    """Who made an LLM call: workflow type, one run of it (session) and the agent.

    Every field is optional on the wire; ``complete`` says whether the call can be
    attributed to a workflow at all.
    """

    workflow: str | None = None
    session: str | None = None
    agent: str | None = None
    parent: str | None = None
    call: str | None = None

    @property
    def complete(self) -> bool:
        return bool(self.workflow and self.session and self.agent)

    def merged_over(self, base: AgentTags) -> AgentTags:
        """These tags, with gaps filled from ``base`` (headers win over body hints)."""
        return AgentTags(
            workflow=self.workflow or base.workflow,
            session=self.session or base.session,
            agent=self.agent or base.agent,
            parent=self.parent or base.parent,
            call=self.call or base.call,
        )


@dataclass(frozen=True, slots=True)
class Hints:
    """Advisory per-call hints (Dynamo's ``nvext.agent_hints``); never orders."""

    priority: int | None = None
    output_tokens: int | None = None  # Dynamo's ``osl``
    speculative_prefill: bool | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """One dropped value: where it came from and why, for a counted warning."""

    source: str  # header name or nvext path
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass(slots=True)
class _Parsed:
    values: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def is_valid_value(value: object) -> bool:
    """True when ``value`` may travel as a tag (bounded length, safe charset)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and _VALUE_RE.match(value) is not None
        and value.strip() == value
    )


def _check(source: str, value: object, into: _Parsed, key: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        into.problems.append(Problem(source, f"expected a string, got {type(value).__name__}"))
    elif not value:
        into.problems.append(Problem(source, "empty value"))
    elif len(value) > MAX_ID_LENGTH:
        into.problems.append(Problem(source, f"longer than {MAX_ID_LENGTH} characters"))
    elif not is_valid_value(value):
        into.problems.append(Problem(source, "characters outside the allowed set"))
    else:
        into.values[key] = value


def encode_headers(tags: AgentTags) -> dict[str, str]:
    """HTTP headers carrying ``tags``; invalid or missing fields are left out."""
    out: dict[str, str] = {}
    for attr, header in _FIELDS:
        value = getattr(tags, attr)
        if value is not None and is_valid_value(value):
            out[header] = value
    return out


def merge_headers(
    caller: Mapping[str, Any] | None, tags: AgentTags
) -> dict[str, Any]:
    """The caller's headers plus Pythia's tags; a header the caller set is never replaced."""
    merged: dict[str, Any] = dict(caller or {})
    present = {k.lower() for k in merged}
    for header, value in encode_headers(tags).items():
        if header not in present:
            merged[header] = value
    return merged


def parse_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[AgentTags, list[Problem]]:
    """Tags from request headers (case-insensitive names). Never raises."""
    parsed = _Parsed()
    wanted = {header: attr for attr, header in _FIELDS}
    try:
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            attr = wanted.get(name.lower()) if isinstance(name, str) else None
            if attr is not None:
                _check(name.lower(), value, parsed, attr)
    except Exception as exc:  # a hostile mapping must not fail the request
        parsed.problems.append(Problem("headers", f"unreadable: {exc!r}"))
    return AgentTags(**parsed.values), parsed.problems


def parse_nvext(body: Mapping[str, Any] | None) -> tuple[AgentTags, Hints, list[Problem]]:
    """Tags and hints from Dynamo's ``nvext`` body extension. Never raises."""
    parsed = _Parsed()
    hints = Hints()
    nvext = body.get("nvext") if isinstance(body, Mapping) else None
    if nvext is None:
        return AgentTags(), hints, []
    if not isinstance(nvext, Mapping):
        return AgentTags(), hints, [Problem("nvext", "expected an object")]

    context = nvext.get("agent_context")
    if isinstance(context, Mapping):
        for key, attr in _NVEXT_CONTEXT:
            value = context.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # Dynamo allows numeric ids
            _check(f"nvext.agent_context.{key}", value, parsed, attr)
    elif context is not None:
        parsed.problems.append(Problem("nvext.agent_context", "expected an object"))

    raw_hints = nvext.get("agent_hints")
    if isinstance(raw_hints, Mapping):
        hints = _parse_hints(raw_hints, parsed.problems)
    elif raw_hints is not None:
        parsed.problems.append(Problem("nvext.agent_hints", "expected an object"))
    return AgentTags(**parsed.values), hints, parsed.problems


def _parse_hints(raw: Mapping[str, Any], problems: list[Problem]) -> Hints:
    hints = Hints()
    priority = raw.get("priority")
    if priority is not None:
        if isinstance(priority, int) and not isinstance(priority, bool) and abs(priority) <= 2**31:
            hints = replace(hints, priority=priority)
        else:
            problems.append(Problem("nvext.agent_hints.priority", "expected a 32-bit integer"))
    osl = raw.get("osl")
    if osl is not None:
        if isinstance(osl, int) and not isinstance(osl, bool) and 0 <= osl <= 10_000_000:
            hints = replace(hints, output_tokens=osl)
        else:
            problems.append(Problem("nvext.agent_hints.osl", "expected a non-negative integer"))
    spec = raw.get("speculative_prefill")
    if spec is not None:
        if isinstance(spec, bool):
            hints = replace(hints, speculative_prefill=spec)
        else:
            problems.append(Problem("nvext.agent_hints.speculative_prefill", "expected a boolean"))
    return hints


def parse_request(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: Mapping[str, Any] | None,
) -> tuple[AgentTags, Hints, list[Problem]]:
    """Everything a gateway reads from one request: headers win, the body fills gaps."""
    from_headers, problems = parse_headers(headers)
    from_body, hints, body_problems = parse_nvext(body)
    return from_headers.merged_over(from_body), hints, problems + body_problems
