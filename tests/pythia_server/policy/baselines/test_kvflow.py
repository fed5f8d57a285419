from __future__ import annotations

import pytest

from pythia_sdk.protocol import AgentTags
from pythia_server.policy.baselines import KVFlowCacheHints, WorkflowGraph, node_sort_key
from pythia_server.policy.types import CacheOwner, CallInfo, CallOutcome

GRAPH = WorkflowGraph("dev", {"planner": ("coder",), "coder": ("reviewer",), "reviewer": ("coder", "writer")})


def call(call_id: str, session: str, agent: str, hashes: tuple[int, ...] = (1, 2)) -> CallInfo:
    tags = AgentTags(workflow="dev", session=session, agent=agent)
    return CallInfo(call_id, tags, prompt_tokens=len(hashes) * 64, block_hashes=hashes)


def done(c: CallInfo, replica: str = "r0", at_s: float = 0.0) -> CallOutcome:
    return CallOutcome(c, replica, c.prompt_tokens, 0, 5, 0.0, 1.0, at_s)


@pytest.mark.parametrize(
    ("running", "finished", "expected"),
    [
        (["planner"], [], {"planner": 0, "coder": 1, "reviewer": 2, "writer": 3}),
        ([], ["planner"], {"coder": 1, "reviewer": 2, "writer": 3}),
        (["coder"], [], {"coder": 0, "reviewer": 1, "writer": 2}),
        ([], ["reviewer"], {"coder": 1, "writer": 1, "reviewer": 2}),
        ([], ["writer"], {}),
    ],
)
def test_steps_to_execution_from_the_step_graph(
    running: list[str], finished: list[str], expected: dict[str, int]
) -> None:
    assert GRAPH.steps_to_execution(running, finished) == expected


def test_chain_graph_helper() -> None:
    loop = WorkflowGraph.chain("w", ["a", "b", "c"], loop=True)
    assert loop.steps_to_execution(["c"], []) == {"c": 0, "a": 1, "b": 2}


def test_retention_follows_the_session_through_its_workflow() -> None:
    hints = KVFlowCacheHints([GRAPH])
    planner = call("1", "s", "planner")
    hints.on_start(planner, "r0", 0.0)

    def owner(agent: str) -> CacheOwner:
        return CacheOwner("dev", "s", agent)

    assert hints.retention(owner("planner"), 0.0).steps_to_execution == 0
    assert hints.retention(owner("reviewer"), 0.0).steps_to_execution == 2
    hints.on_finish(done(planner), 1.0)
    assert hints.retention(owner("planner"), 1.0) is None  # not expected again
    assert hints.retention(owner("coder"), 1.0).steps_to_execution == 1
    hints.on_start(call("2", "s", "coder"), "r0", 2.0)
    assert hints.retention(owner("coder"), 2.0).steps_to_execution == 0
    hints.on_session_end("s", 3.0)
    assert hints.retention(owner("coder"), 3.0) is None


def test_shared_role_prefix_takes_the_nearest_session() -> None:
    hints = KVFlowCacheHints([GRAPH])
    hints.on_start(call("1", "s1", "planner"), "r0", 0.0)  # s1: reviewer 2 steps away
    hints.on_start(call("2", "s2", "coder"), "r0", 0.0)  # s2: reviewer next
    assert hints.retention(CacheOwner("dev", None, "reviewer"), 0.0).steps_to_execution == 1


def test_unknown_workflow_gets_no_hint() -> None:
    hints = KVFlowCacheHints([GRAPH])
    other = CallInfo("1", AgentTags(workflow="chat", session="s", agent="a"), 64, (1,))
    hints.on_start(other, "r0", 0.0)
    assert hints.retention(CacheOwner("chat", "s", "a"), 0.0) is None
    assert hints.on_finish(done(other), 1.0) == ()


def test_finishing_agent_prefetches_the_next_steps_prefix() -> None:
    hints = KVFlowCacheHints([GRAPH])
    # session s1 teaches the coder's role prefix (blocks 7, 8 shared, then session blocks)
    hints.on_start(call("a", "s1", "coder", (7, 8, 100)), "r1", 0.0)
    hints.on_start(call("b", "s0", "coder", (7, 8, 200)), "r1", 0.0)
    planner = call("c", "s2", "planner", (1, 2))
    hints.on_start(planner, "r0", 1.0)
    actions = hints.on_finish(done(planner, "r0", 2.0), 2.0)
    assert len(actions) == 1
    action = actions[0]
    assert (action.replica_id, action.block_hashes, action.at_s) == ("r0", (7, 8), 2.0)
    assert action.owner == CacheOwner("dev", "s2", "coder")
    # once the coder ran in s2, its own last prompt is prefetched instead
    coder = call("d", "s2", "coder", (7, 8, 300, 301))
    hints.on_start(coder, "r0", 3.0)
    hints.on_finish(done(coder, "r0", 4.0), 4.0)
    reviewer = call("e", "s2", "reviewer", (9,))
    hints.on_start(reviewer, "r0", 5.0)
    next_actions = hints.on_finish(done(reviewer, "r0", 6.0), 6.0)
    prefixes = {a.owner.agent: a.block_hashes for a in next_actions}
    assert prefixes["coder"] == (7, 8, 300, 301)


def test_eviction_order_prefers_far_agents() -> None:
    hints = KVFlowCacheHints([GRAPH])
    hints.on_start(call("1", "s", "coder"), "r0", 0.0)
    near = node_sort_key(hints, [CacheOwner("dev", "s", "reviewer")], last_access=5.0, now_s=1.0)
    far = node_sort_key(hints, [CacheOwner("dev", "s", "writer")], last_access=9.0, now_s=1.0)
    gone = node_sort_key(hints, [CacheOwner("dev", "s", "planner")], last_access=10.0, now_s=1.0)
    assert sorted([near, far, gone]) == [gone, far, near]


def test_hold_step_caps_far_values_into_one_lru_tier() -> None:
    hints = KVFlowCacheHints([GRAPH], hold_step=3)
    hints.on_start(call("1", "s", "planner"), "r0", 0.0)
    values = {
        agent: hints.retention(CacheOwner("dev", "s", agent), 0.0).steps_to_execution  # type: ignore[union-attr]
        for agent in ("planner", "coder", "reviewer", "writer")
    }
    assert values == {"planner": 0, "coder": 1, "reviewer": 2, "writer": 2}
    assert hints.retention(CacheOwner("dev", "gone", "coder"), 0.0).steps_to_execution == 2  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="hold_step"):
        KVFlowCacheHints([GRAPH], hold_step=1)


def test_prefetch_can_look_further_ahead() -> None:
    hints = KVFlowCacheHints([GRAPH], prefetch_steps=2)
    for agent, hashes in (("coder", (7, 8)), ("reviewer", (9,))):
        hints.on_start(call(agent, "teach", agent, hashes), "r0", 0.0)
    planner = call("p", "s", "planner")
    hints.on_start(planner, "r0", 1.0)
    agents = {a.owner.agent for a in hints.on_finish(done(planner, "r0", 2.0), 2.0)}
    assert agents == {"coder", "reviewer"}
