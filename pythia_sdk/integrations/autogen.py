"""AutoGen AgentChat (0.7.x): a team or agent run is a session, the speaking agent is
the agent.

* ``instrument_autogen(team_or_agent)`` shadows that object's ``run_stream`` (``run``
  goes through it) and sets the session around each step of the stream (never across a
  ``yield``). The team's embedded runtime is started inside that step, so its message
  tasks inherit the session.
* Once per process (class level): ``ChatAgentContainer.handle_request``, where a team
  hands the turn to one participant, sets that participant as the agent and opens
  ``invoke_agent {name}``; ``SelectorGroupChatManager.select_speaker`` tags the
  selector's own model calls with the agent :data:`SELECTOR_AGENT`.
* ``OpenAIChatCompletionClient`` refuses per-call ``extra_headers``, so tags are added
  below it, at the openai client it wraps (see integrations/openai.py).

Instrument before the team's first run: a team builds its participant containers on its
first run, and they pick up the patched handler then.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from pythia_sdk import _semconv as sc
from pythia_sdk._context import CallContext, get_context, reset_context, set_context
from pythia_sdk._instrumentor import REGISTRY, object_key, patch_instance, patch_target
from pythia_sdk._scopes import agent_attributes, open_session, tracer
from pythia_sdk._spans import record_error
from pythia_sdk.protocol import AgentTags

FRAMEWORK = "autogen"
#: The agent the selector's model calls carry (the group chat manager choosing a speaker).
SELECTOR_AGENT = "selector"
GLOBAL_KEY = "autogen"
CONTAINER_TARGET = (
    "autogen_agentchat.teams._group_chat._chat_agent_container:ChatAgentContainer.handle_request"
)
SELECTOR_TARGET = (
    "autogen_agentchat.teams._group_chat._selector_group_chat:SelectorGroupChatManager.select_speaker"
)


async def _as_agent(name: str, call: Callable[[], Any]) -> Any:
    """Await ``call()`` with ``name`` as the agent, inside an ``invoke_agent`` span."""
    outer = get_context()
    base = outer.tags if outer is not None else AgentTags()
    tags = AgentTags(base.workflow, base.session, name, None)
    span = tracer().start_span(f"{sc.OP_INVOKE_AGENT} {name}",
                               attributes=agent_attributes(tags, FRAMEWORK))
    return await _run_in(CallContext.of(tags), span, call)


async def _run_in(ctx: CallContext, span: Any, call: Callable[[], Any]) -> Any:
    """Await ``call()`` with ``ctx`` and ``span`` current; the span ends with it."""
    token = set_context(ctx)
    otel_token = otel_context.attach(trace.set_span_in_context(span))
    try:
        return await call()
    except BaseException as exc:
        record_error(span, exc)
        raise
    finally:
        otel_context.detach(otel_token)
        reset_context(token)
        span.end()


def _wrap_handle_request(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def handle_request(self: Any, message: Any, ctx: Any) -> Any:
        try:
            name = str(self._agent.name)
        except Exception:  # never break the team over a tag
            return await original(self, message, ctx)
        return await _as_agent(name, lambda: original(self, message, ctx))
    return handle_request


def _wrap_select_speaker(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def select_speaker(self: Any, thread: Any) -> Any:
        return await _as_agent(SELECTOR_AGENT, lambda: original(self, thread))
    return select_speaker


def _instrument_classes() -> None:
    if REGISTRY.has(GLOBAL_KEY):
        return
    patches = [patch_target(CONTAINER_TARGET, _wrap_handle_request)]
    try:
        patches.append(patch_target(SELECTOR_TARGET, _wrap_select_speaker))
    except (ImportError, AttributeError, KeyError):  # a version without the selector
        pass
    REGISTRY.add(GLOBAL_KEY, patches)


def _is_team(obj: Any) -> bool:
    from autogen_agentchat.base import Team

    return isinstance(obj, Team)


def instrument_autogen(target: Any, workflow: str | None = None) -> bool:
    """Instrument one team or agent (and, once, the classes); False when already done."""
    _instrument_classes()
    key = object_key(target)
    if REGISTRY.has(key):
        return False
    is_team = _is_team(target)
    name = workflow or str(getattr(target, "name", None) or type(target).__name__)
    original = target.run_stream
    original_run = target.run
    agent_name = None if is_team else str(target.name)

    def start() -> tuple[CallContext, Any]:
        ctx, span_name, attrs = open_session(name, None, FRAMEWORK)
        if agent_name is not None:  # a lone agent: its own run is the session and the agent
            tags = AgentTags(ctx.tags.workflow, ctx.tags.session, agent_name, ctx.tags.agent)
            ctx = CallContext.of(tags, owns_session=ctx.owns_session)
            attrs[sc.GEN_AI_AGENT_NAME] = agent_name
            attrs[sc.PYTHIA_AGENT] = agent_name
        return ctx, tracer().start_span(span_name, attributes=attrs)

    async def run(*args: Any, **kwargs: Any) -> Any:
        """A lone agent's run() does not go through run_stream()."""
        ctx, span = start()
        return await _run_in(ctx, span, lambda: original_run(*args, **kwargs))

    async def run_stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        ctx, span = start()
        otel_ctx = trace.set_span_in_context(span)
        inner = original(*args, **kwargs)
        error: BaseException | None = None
        try:
            while True:
                token = set_context(ctx)
                otel_token = otel_context.attach(otel_ctx)
                try:
                    item = await inner.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(otel_token)
                    reset_context(token)
                yield item
        except BaseException as exc:
            error = None if isinstance(exc, GeneratorExit) else exc
            await inner.aclose()
            raise
        finally:
            if error is not None:
                record_error(span, error)
            span.end()

    patches = [patch_instance(target, "run_stream", run_stream)]
    if not is_team:
        patches.append(patch_instance(target, "run", run))
    return REGISTRY.add(key, patches, obj=target)
