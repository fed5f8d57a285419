"""``pythia.workflow``, ``pythia.session``, ``pythia.agent``, ``pythia.tool``: context
managers (sync and async) and decorators for hand-written agents.

Each scope sets the tags for the calls made inside it and opens its GenAI span
(``invoke_workflow``, ``invoke_agent {name}``, ``execute_tool {name}``), attached as the
current span for the block. Only the scope that *starts* a session emits
``invoke_workflow`` (the gateway ends the session when it ends); a workflow opened inside
a running session joins it and is traced as an agent.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from pythia_sdk import _semconv as sc
from pythia_sdk._context import CallContext, get_context, new_session_id, reset_context, set_context
from pythia_sdk._instrumentor import REGISTRY
from pythia_sdk._spans import record_error
from pythia_sdk.protocol import AgentTags

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_WORKFLOW = "default"


def tracer() -> trace.Tracer:
    telemetry = REGISTRY.telemetry
    return telemetry.tracer if telemetry is not None else trace.NoOpTracer()


def session_attributes(tags: AgentTags, framework: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_WORKFLOW}
    return _with_run_attributes(attrs, tags, framework)


def agent_attributes(tags: AgentTags, framework: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT}
    if tags.agent:
        attrs[sc.GEN_AI_AGENT_NAME] = tags.agent
        attrs[sc.PYTHIA_AGENT] = tags.agent
    if tags.parent:
        attrs[sc.PYTHIA_PARENT] = tags.parent
    return _with_run_attributes(attrs, tags, framework)


def _with_run_attributes(
    attrs: dict[str, Any], tags: AgentTags, framework: str | None
) -> dict[str, Any]:
    """``attrs`` plus the workflow, session and framework every scope span carries."""
    if tags.workflow:
        attrs[sc.PYTHIA_WORKFLOW] = tags.workflow
    if tags.session:
        attrs[sc.PYTHIA_SESSION] = tags.session
        attrs[sc.GEN_AI_CONVERSATION_ID] = tags.session
    if framework:
        attrs[sc.PYTHIA_FRAMEWORK] = framework
    return attrs


def open_session(
    workflow: str | None, session_id: str | None, framework: str | None = None
) -> tuple[CallContext, str, dict[str, Any]]:
    """The context and span (name, attributes) for a run starting here.

    Inside a running session (and no explicit id) the run joins it as an agent.
    """
    outer = get_context()
    if outer is not None and outer.tags.session and session_id is None:
        name = workflow or DEFAULT_WORKFLOW
        tags = AgentTags(outer.tags.workflow, outer.tags.session, name, outer.tags.agent)
        return CallContext.of(tags), f"{sc.OP_INVOKE_AGENT} {name}", agent_attributes(tags, framework)
    inherited = outer.tags.workflow if outer is not None else None
    tags = AgentTags(workflow or inherited or DEFAULT_WORKFLOW, session_id or new_session_id())
    ctx = CallContext.of(tags, owns_session=True)
    return ctx, f"{sc.OP_INVOKE_WORKFLOW} {tags.workflow}", session_attributes(tags, framework)


class _Scope:
    """One kind of scope with its arguments; each ``with`` or decorated call is fresh."""

    def __init__(self, kind: str, name: str | None, **options: Any) -> None:
        self._kind = kind
        self._name = name
        self._options = options
        self._state: list[tuple[Any, Any, Span]] = []

    # -- opening and closing ---------------------------------------------------------------
    def _open(self) -> Span:
        ctx, span_name, attrs = self._plan()
        span = tracer().start_span(span_name, attributes=attrs)
        ctx_token = set_context(ctx) if ctx is not None else None
        otel_token = otel_context.attach(trace.set_span_in_context(span))
        self._state.append((ctx_token, otel_token, span))
        return span

    def _plan(self) -> tuple[CallContext | None, str, dict[str, Any]]:
        name = self._name
        if self._kind == "session":
            return open_session(self._options.get("workflow") or name, self._options.get("session"))
        if self._kind == "agent":
            assert name is not None
            outer = get_context()
            base = outer.tags if outer is not None else AgentTags()
            parent = self._options.get("parent") or base.agent
            tags = AgentTags(base.workflow, base.session, name, parent)
            return CallContext.of(tags), f"{sc.OP_INVOKE_AGENT} {name}", agent_attributes(tags)
        attrs = {sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL, sc.GEN_AI_TOOL_NAME: name}
        return None, f"{sc.OP_EXECUTE_TOOL} {name}", attrs

    def _close(self, error: BaseException | None) -> None:
        ctx_token, otel_token, span = self._state.pop()
        otel_context.detach(otel_token)
        if ctx_token is not None:
            reset_context(ctx_token)
        if error is not None:
            record_error(span, error)
        span.end()

    def __enter__(self) -> Span:
        return self._open()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._close(exc)

    async def __aenter__(self) -> Span:
        return self._open()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._close(exc)

    # -- decorator -------------------------------------------------------------------------
    def __call__(self, fn: F) -> F:
        kind, name, options = self._kind, self._name, self._options
        if kind != "session" and name is None:
            name = fn.__name__

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with _Scope(kind, name, **options):
                    return await fn(*args, **kwargs)
            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _Scope(kind, name, **options):
                return fn(*args, **kwargs)
        return run  # type: ignore[return-value]


def workflow(name: str, *, session: str | None = None) -> _Scope:
    """One run of workflow type ``name`` (a new session unless inside one)."""
    return _Scope("session", name, workflow=name, session=session)


def session(session_id: str | None = None, *, workflow: str | None = None) -> _Scope:
    """A session with this id (new when None) of ``workflow`` (inherited, else "default")."""
    return _Scope("session", None, workflow=workflow, session=session_id)


def agent(name: str | None = None, *, parent: str | None = None) -> _Scope:
    """Calls inside are made by agent ``name``; parent defaults to the enclosing agent.

    As a decorator (``@pythia.agent`` or ``@pythia.agent()``) the name defaults to the
    function's name.
    """
    if callable(name):
        return _Scope("agent", None, parent=parent)(name)  # type: ignore[return-value]
    return _Scope("agent", name, parent=parent)


def tool(name: str | None = None) -> _Scope:
    """An ``execute_tool {name}`` span around a tool call (tags unchanged)."""
    return _Scope("tool", name)
