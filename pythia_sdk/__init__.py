"""Pythia's client SDK: tag every LLM call of an agent program with its workflow type,
session and agent, and trace it with OpenTelemetry GenAI spans.

    import pythia_sdk as pythia
    graph = pythia.instrument(graph, workflow="deep_research")   # LangGraph
    team = pythia.instrument(team, workflow="triage")             # AutoGen AgentChat
    pythia.instrument(client)  # one openai client; pythia.instrument() for all of them

    with pythia.workflow("coding"), pythia.agent("planner"):      # hand-written agents
        client.chat.completions.create(...)

The SDK never raises its own faults into your program: a failure inside instrumentation
is logged and the call goes on untagged.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pythia_sdk._context import bind_context, current_tags
from pythia_sdk._instrumentor import REGISTRY, object_key
from pythia_sdk._scopes import agent, session, tool, workflow
from pythia_sdk.protocol import AgentTags

__all__ = [
    "AgentTags",
    "agent",
    "bind_context",
    "current_tags",
    "flush",
    "instrument",
    "is_instrumented",
    "session",
    "tool",
    "uninstrument",
    "workflow",
]

T = TypeVar("T")
log = logging.getLogger("pythia_sdk")


def instrument(
    target: T | str | None = None,
    *,
    workflow: str | None = None,
    endpoint: str | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    capture_content: bool | None = None,
) -> T | None:
    """Instrument ``target`` and return it.

    ``target``: None or ``"openai"`` (every openai client), an openai client (only that
    one), a compiled LangGraph graph, an AutoGen AgentChat team or agent, or an AG2
    (``ag2`` 1.x) ``Agent``. Frameworks also instrument every openai client, since their
    model calls end there.
    ``workflow`` names the workflow type (default: the graph's, team's or agent's name).
    ``endpoint`` is the OTLP/HTTP traces URL (default: the standard ``OTEL_*`` variables,
    else the gateway the client talks to). The first call's telemetry settings win.
    Instrumenting the same target twice is a no-op with a warning.
    """
    from pythia_sdk.integrations import openai as openai_integration

    telemetry = REGISTRY.ensure_telemetry(
        endpoint=endpoint, tracer_provider=tracer_provider,
        meter_provider=meter_provider, capture_content=capture_content,
    )
    if target is None or target == "openai":
        if not openai_integration.instrument_all(telemetry):
            log.warning("pythia: openai is already instrumented")
        return None
    if isinstance(target, str):
        raise ValueError(f"unknown instrumentation target {target!r} (expected 'openai')")
    if openai_integration.is_openai_client(target):
        if not openai_integration.instrument_client(target, telemetry):
            log.warning("pythia: this openai client is already instrumented")
        return target
    module = type(target).__module__
    if module.startswith("langgraph") and not hasattr(target, "astream"):
        raise TypeError("pythia.instrument() takes a compiled graph: call .compile() first")
    if module.startswith("autogen_agentchat") and not hasattr(target, "run_stream"):
        raise TypeError("pythia.instrument() takes an AutoGen AgentChat team or agent")
    if module.startswith("langgraph"):
        from pythia_sdk.integrations import langgraph

        openai_integration.instrument_all(telemetry)
        if not langgraph.instrument_graph(target, workflow=workflow):
            log.warning("pythia: this graph is already instrumented")
        return target
    if module.startswith("autogen_agentchat"):
        from pythia_sdk.integrations import autogen

        openai_integration.instrument_all(telemetry)
        if not autogen.instrument_autogen(target, workflow=workflow):
            log.warning("pythia: this AutoGen team or agent is already instrumented")
        return target
    if module == "ag2" or module.startswith("ag2."):
        from pythia_sdk.integrations import ag2

        if not ag2.is_ag2_agent(target):
            raise TypeError("pythia.instrument() takes an AG2 Agent (from ag2 import Agent)")
        openai_integration.instrument_all(telemetry)
        if not ag2.instrument_ag2(target, workflow=workflow):
            log.warning("pythia: this AG2 agent is already instrumented")
        return target
    raise TypeError(
        f"pythia.instrument() does not know {type(target).__qualname__}: pass an openai "
        "client, a compiled LangGraph graph, an AutoGen AgentChat team/agent or an AG2 Agent"
    )


def uninstrument(target: Any = None) -> None:
    """Restore what instrument() replaced: everything (no argument) or one target."""
    if target is None:
        REGISTRY.remove_all()
        return
    if target == "openai":
        REGISTRY.remove("openai")
        return
    REGISTRY.remove(object_key(target))


def is_instrumented(target: Any = None) -> bool:
    if target is None or target == "openai":
        return REGISTRY.has("openai")
    return REGISTRY.has(object_key(target))


def flush(timeout_s: float = 5.0) -> bool:
    """Export finished spans now (call before exit so the gateway sees sessions end)."""
    telemetry = REGISTRY.telemetry
    return telemetry.flush(timeout_s) if telemetry is not None else True
