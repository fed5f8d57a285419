"""AG2 1.x (the ``ag2`` package, ``from ag2 import Agent``): each turn an agent takes is
tagged with that agent.

``instrument_ag2(agent)`` shadows, on that one agent, the two entries every turn starts
from: ``ask`` (``Agent.ask``) and ``_execute`` (continuations, ``reply.ask(...)``, and
AG2's A2A / ACP executors). Around each: outside any session, a new session of the
workflow (default: the agent's name); inside one (a ``pythia.workflow``, or another
instrumented agent whose tool asks this one), the turn joins it; in both, the agent is
``agent.name`` and its parent the enclosing agent. AG2's model calls go through openai's
``AsyncOpenAI`` (``ag2.config.openai``), where the chokepoint adds the tags, so this only
sets the context. ``agent.run(...)`` (an ``AgentRun`` driven later by ``result()``) is
not wrapped: put it inside ``pythia.workflow`` / ``pythia.agent`` yourself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pythia_sdk._context import get_context
from pythia_sdk._instrumentor import REGISTRY, object_key, patch_instance
from pythia_sdk._scopes import agent as agent_scope
from pythia_sdk._scopes import workflow as workflow_scope

#: The methods shadowed on the instance: every turn of an AG2 agent starts in one.
ENTRIES = ("ask", "_execute")


def is_ag2_agent(obj: Any) -> bool:
    module = type(obj).__module__
    return (module == "ag2" or module.startswith("ag2.")) and callable(
        getattr(obj, "ask", None)) and callable(getattr(obj, "_execute", None))


async def run_turn(name: str, workflow: str, call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` as agent ``name``: in the running session, or in a new one."""
    outer = get_context()
    if outer is not None and outer.tags.session:
        if outer.tags.agent == name:  # this agent's own turn, entered twice
            return await call()
        async with agent_scope(name):
            return await call()
    async with workflow_scope(workflow), agent_scope(name):
        return await call()


def instrument_ag2(agent: Any, workflow: str | None = None) -> bool:
    """Tag every turn of ``agent``; False when it is already instrumented."""
    key = object_key(agent)
    if REGISTRY.has(key):
        return False
    name = str(getattr(agent, "name", None) or type(agent).__name__)
    workflow = workflow or name
    patches = []
    for entry in ENTRIES:
        original = getattr(agent, entry)

        def make(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def turn(*args: Any, **kwargs: Any) -> Any:
                return await run_turn(name, workflow, lambda: original(*args, **kwargs))
            turn.__pythia_original__ = original  # type: ignore[attr-defined]
            return turn

        patches.append(patch_instance(agent, entry, make(original)))
    return REGISTRY.add(key, patches, obj=agent)
