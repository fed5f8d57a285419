"""Who is calling: the current workflow, session and agent, kept in a contextvar.

asyncio tasks copy it when created; LangGraph's thread pools copy it per task; for a
thread pool of your own, wrap the submitted function with :func:`bind_context`. A
framework adapter may install a *resolver* that computes the agent at call time (LangGraph
reads the running node from ``langchain_core``'s own contextvar), so a context is set
once per session, not once per node.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from pythia_sdk import _semconv as sc
from pythia_sdk.protocol import AgentTags, encode_headers

P = ParamSpec("P")
R = TypeVar("R")


def call_attributes(tags: AgentTags) -> dict[str, str]:
    """The tag attributes of a model-call span (GenAI names; pythia.* only where none)."""
    attrs: dict[str, str] = {}
    if tags.workflow:
        attrs[sc.PYTHIA_WORKFLOW] = tags.workflow
    if tags.session:
        attrs[sc.GEN_AI_CONVERSATION_ID] = tags.session
    if tags.agent:
        attrs[sc.GEN_AI_AGENT_NAME] = tags.agent
    if tags.parent:
        attrs[sc.PYTHIA_PARENT] = tags.parent
    return attrs


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a resolver says about the call being made right now."""

    tags: AgentTags
    headers: Mapping[str, str]
    parent_span: Any = None  # an opentelemetry Span, or None for the current one
    attributes: Mapping[str, str] = field(default_factory=dict)  # call_attributes(tags)

    @staticmethod
    def of(tags: AgentTags, parent_span: Any = None) -> Resolved:
        return Resolved(tags, encode_headers(tags), parent_span, call_attributes(tags))


@dataclass(frozen=True, slots=True)
class CallContext:
    """The tags in force, with their headers encoded once (not per call)."""

    tags: AgentTags
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Computes tags at call time; returns None to fall back to ``tags``.
    resolver: Callable[[CallContext], Resolved | None] | None = None
    #: True on the context that owns the session (its end ends the session).
    owns_session: bool = False
    #: call_attributes(tags), computed once.
    attributes: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def of(
        tags: AgentTags,
        resolver: Callable[[CallContext], Resolved | None] | None = None,
        owns_session: bool = False,
    ) -> CallContext:
        return CallContext(tags, encode_headers(tags), resolver, owns_session,
                           call_attributes(tags))


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "pythia_call_context", default=None
)


def get_context() -> CallContext | None:
    return _current.get()


def set_context(ctx: CallContext | None) -> contextvars.Token[CallContext | None]:
    return _current.set(ctx)


def reset_context(token: contextvars.Token[CallContext | None]) -> None:
    _current.reset(token)


def current_tags() -> AgentTags | None:
    """The tags the next LLM call from here would carry (resolvers applied)."""
    ctx = _current.get()
    if ctx is None:
        return None
    if ctx.resolver is not None:
        try:
            resolved = ctx.resolver(ctx)
        except Exception:
            resolved = None
        if resolved is not None:
            return resolved.tags
    return ctx.tags


def new_session_id() -> str:
    return uuid.uuid4().hex


def bind_context(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to a copy of the caller's context (for your own thread pools)."""
    ctx = contextvars.copy_context()

    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return bound
