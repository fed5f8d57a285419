"""LangGraph: one graph invocation is one session, each node task is an agent.

``instrument_graph`` shadows the compiled graph's ``stream`` and ``astream`` (``invoke``,
``ainvoke``, ``batch`` and ``abatch`` all go through them). Each invocation:

* picks its session: the enclosing ``pythia.session`` (the run joins it), else the
  ``configurable.thread_id``, else a new id;
* sets a :class:`CallContext` around each step of the stream (never across a ``yield``),
  so the tasks LangGraph starts (threads for sync nodes, asyncio tasks) inherit it;
* adds a callback handler (:class:`GraphRun`) that opens an ``invoke_agent {path}`` span
  per node task, ``execute_tool {name}`` per tool run, and remembers which node emitted
  ``Send`` packets so fan-out instances carry the right parent.

At call time the openai chokepoint asks :meth:`GraphRun.resolve`, which reads the running
node from ``langchain_core``'s ``var_child_runnable_config`` (langgraph >= 1.1.7 no longer
copies custom configurable keys into callback metadata, but this contextvar holds the
node's config). The agent is the node's path: ``checkpoint_ns`` ``"subg:<id>|inner:<id>"``
gives ``"subg/inner"``. The parent is the sending node for ``Send`` tasks and the
enclosing subgraph node for subgraph nodes.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from pythia_sdk import _semconv as sc
from pythia_sdk._context import CallContext, Resolved, get_context, new_session_id, reset_context, set_context
from pythia_sdk._instrumentor import REGISTRY, object_key, patch_instance
from pythia_sdk._scopes import agent_attributes, session_attributes, tracer
from pythia_sdk._spans import record_error
from pythia_sdk.protocol import AgentTags

FRAMEWORK = "langgraph"
_PUSH = "__pregel_push"


def agent_path(checkpoint_ns: str) -> str:
    """``"subg:1a2b|inner:3c4d"`` -> ``"subg/inner"``."""
    return "/".join(part.split(":", 1)[0] for part in checkpoint_ns.split("|"))


@dataclass(slots=True)
class _Task:
    ns: str
    step: int | None
    tags: AgentTags
    resolved: Resolved
    span: Span


def _is_send(value: Any) -> bool:
    return type(value).__name__ == "Send" and type(value).__module__.startswith("langgraph")


class GraphRun(BaseCallbackHandler):
    """Callbacks of one graph invocation: task spans, Send parents, and tag resolution."""

    run_inline = True  # called in the running task, never in an executor
    raise_error = False

    def __init__(self, base: AgentTags, root_span: Span) -> None:
        super().__init__()
        self.base = base
        self.root_span = root_span
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}  # live tasks by checkpoint_ns
        self._run_ns: dict[UUID, str] = {}  # every run inside a task -> its task's ns
        self._task_runs: dict[UUID, str] = {}  # the run that *is* the task
        self._tools: dict[UUID, Span] = {}
        # (namespace prefix, step) -> [(sending agent, number of Sends)]
        self._senders: dict[tuple[str, int], list[tuple[str, int]]] = {}

    # -- call-time resolution (hot path) -----------------------------------------------
    def resolve(self, ctx: CallContext) -> Resolved | None:
        config = var_child_runnable_config.get()
        if not config:
            return None
        ns = (config.get("metadata") or {}).get("langgraph_checkpoint_ns")
        if not ns:
            return None
        task = self._tasks.get(ns)
        if task is not None:
            return task.resolved
        tags = AgentTags(self.base.workflow, self.base.session, agent_path(ns), self.base.agent)
        return Resolved.of(tags)

    # -- callbacks ---------------------------------------------------------------------
    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                       **kwargs: Any) -> None:
        md = metadata or {}
        ns = md.get("langgraph_checkpoint_ns")
        if not ns:
            return
        with self._lock:
            self._run_ns[run_id] = ns
            if ns in self._tasks:
                return
            self._start_task(ns, md, run_id)

    def _start_task(self, ns: str, md: dict[str, Any], run_id: UUID) -> None:
        prefix, _, _ = ns.rpartition("|")
        outer = self._tasks.get(prefix) if prefix else None
        step = md.get("langgraph_step")
        parent = outer.tags.agent if outer is not None else self.base.agent
        path = md.get("langgraph_path")
        if isinstance(path, tuple) and path and path[0] == _PUSH and isinstance(step, int):
            parent = self._sender(prefix, step - 1, path[1] if len(path) > 1 else 0) or parent
        tags = AgentTags(self.base.workflow, self.base.session, agent_path(ns), parent)
        attrs = agent_attributes(tags, FRAMEWORK)
        attrs[sc.PYTHIA_CHECKPOINT_NS] = ns
        span = tracer().start_span(
            f"{sc.OP_INVOKE_AGENT} {tags.agent}", attributes=attrs,
            context=trace.set_span_in_context(outer.span if outer else self.root_span),
        )
        self._tasks[ns] = _Task(ns, step, tags, Resolved.of(tags, span), span)
        self._task_runs[run_id] = ns

    def _sender(self, prefix: str, step: int, index: Any) -> str | None:
        senders = self._senders.get((prefix, step))
        if not senders:
            return None
        remaining = index if isinstance(index, int) else 0
        for agent, count in senders:
            if remaining < count:
                return agent
            remaining -= count
        return senders[-1][0]

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_run(run_id, outputs, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_run(run_id, None, error)

    def _end_run(self, run_id: UUID, outputs: Any, error: BaseException | None) -> None:
        with self._lock:
            ns = self._run_ns.pop(run_id, None)
            if ns is None:
                return
            sends = 0
            if _is_send(outputs):
                sends = 1
            elif isinstance(outputs, (list, tuple)):
                sends = sum(1 for o in outputs if _is_send(o))
            task = self._tasks.get(ns)
            if sends and task is not None and isinstance(task.step, int):
                prefix = ns.rpartition("|")[0]
                self._senders.setdefault((prefix, task.step), []).append(
                    (task.tags.agent or "", sends))
            if self._task_runs.pop(run_id, None) is None or task is None:
                return
            del self._tasks[ns]
        if error is not None:
            record_error(task.span, error)
        task.span.end()

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID,
                      metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        ns = (metadata or {}).get("langgraph_checkpoint_ns")
        task = self._tasks.get(ns) if ns else None
        attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                                 sc.GEN_AI_TOOL_NAME: str(name)}
        if task is not None and task.tags.agent:
            attrs[sc.GEN_AI_AGENT_NAME] = task.tags.agent
        tool_call_id = kwargs.get("tool_call_id")  # langchain-core >= 1.x passes it
        if tool_call_id is None and isinstance(kwargs.get("inputs"), dict):
            tool_call_id = kwargs["inputs"].get("tool_call_id")
        if tool_call_id:
            attrs[sc.GEN_AI_TOOL_CALL_ID] = str(tool_call_id)
        span = tracer().start_span(
            f"{sc.OP_EXECUTE_TOOL} {name}", attributes=attrs,
            context=trace.set_span_in_context(task.span if task else self.root_span),
        )
        self._tools[run_id] = span

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._tools.pop(run_id, None)
        if span is not None:
            span.end()

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._tools.pop(run_id, None)
        if span is not None:
            record_error(span, error)
            span.end()

    def close(self) -> None:
        """End whatever an interrupted run left open."""
        with self._lock:
            leftovers = [t.span for t in self._tasks.values()] + list(self._tools.values())
            self._tasks.clear()
            self._tools.clear()
            self._run_ns.clear()
            self._task_runs.clear()
        for span in leftovers:
            span.end()


# -- one invocation ------------------------------------------------------------------------
class _Invocation:
    """The context and root span of one graph run; entered around each stream step."""

    def __init__(self, workflow: str, config: Any) -> None:
        outer = get_context()
        configurable = (config or {}).get("configurable") or {}
        thread_id = configurable.get("thread_id")
        if outer is not None and outer.tags.session:
            base = AgentTags(outer.tags.workflow or workflow, outer.tags.session,
                             None, outer.tags.agent)
            owns = False
        else:
            session = str(thread_id) if thread_id is not None else new_session_id()
            base = AgentTags(workflow, session)
            owns = True
        if owns:
            name = f"{sc.OP_INVOKE_WORKFLOW} {workflow}"
            attrs = session_attributes(base, FRAMEWORK)
        else:
            tags = AgentTags(base.workflow, base.session, workflow, base.parent)
            name = f"{sc.OP_INVOKE_AGENT} {workflow}"
            attrs = agent_attributes(tags, FRAMEWORK)
        self.span = tracer().start_span(name, attributes=attrs)
        self.run = GraphRun(base, self.span)
        self.ctx = CallContext.of(base, resolver=self.run.resolve, owns_session=owns)
        self.otel_ctx = trace.set_span_in_context(self.span)
        self.config = _with_handler(config, self.run)
        self.ended = False

    def enter(self) -> tuple[Any, Any]:
        return set_context(self.ctx), otel_context.attach(self.otel_ctx)

    @staticmethod
    def leave(tokens: tuple[Any, Any]) -> None:
        otel_context.detach(tokens[1])
        reset_context(tokens[0])

    def end(self, error: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        self.run.close()
        if error is not None:
            record_error(self.span, error)
        self.span.end()


def _with_handler(config: Any, handler: GraphRun) -> dict[str, Any]:
    config = dict(config or {})
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = [handler]
    elif isinstance(callbacks, list):
        config["callbacks"] = [*callbacks, handler]
    else:  # a callback manager
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        config["callbacks"] = manager
    return config


def _inside_graph_run() -> bool:
    ctx = get_context()
    return ctx is not None and isinstance(getattr(ctx.resolver, "__self__", None), GraphRun)


def instrument_graph(graph: Any, workflow: str | None = None) -> bool:
    """Shadow ``graph.stream`` / ``graph.astream``; False when already instrumented."""
    key = object_key(graph)
    if REGISTRY.has(key):
        return False
    name = workflow or getattr(graph, "name", None) or "LangGraph"
    original_stream = graph.stream
    original_astream = graph.astream

    def stream(input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
        if _inside_graph_run():  # a subgraph call: the outer run already resolves it
            yield from original_stream(input, config, **kwargs)
            return
        run = _Invocation(name, config)
        tokens = run.enter()
        try:
            inner = original_stream(input, run.config, **kwargs)
        finally:
            run.leave(tokens)
        try:
            while True:
                tokens = run.enter()
                try:
                    item = next(inner)
                except StopIteration:
                    break
                finally:
                    run.leave(tokens)
                yield item
        except BaseException as exc:
            inner.close()
            run.end(None if isinstance(exc, GeneratorExit) else exc)
            raise
        run.end()

    async def astream(input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        if _inside_graph_run():
            async for item in original_astream(input, config, **kwargs):
                yield item
            return
        run = _Invocation(name, config)
        inner = original_astream(input, run.config, **kwargs)
        try:
            while True:
                tokens = run.enter()
                try:
                    item = await inner.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    run.leave(tokens)
                yield item
        except BaseException as exc:
            await inner.aclose()
            run.end(None if isinstance(exc, GeneratorExit) else exc)
            raise
        run.end()

    patches = [patch_instance(graph, "stream", stream), patch_instance(graph, "astream", astream)]
    return REGISTRY.add(key, patches, obj=graph)
