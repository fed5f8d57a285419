from __future__ import annotations

import pytest

from pythia_server.replay.generators.deep_research import (
    DeepResearchParams,
    generate_deep_research,
)
from pythia_server.replay.workload import validate_workload


def test_seeded_and_deterministic() -> None:
    assert generate_deep_research(4, seed=9) == generate_deep_research(4, seed=9)
    assert generate_deep_research(4, seed=9) != generate_deep_research(4, seed=10)


def test_planner_fans_out_to_parallel_searchers_joined_by_the_aggregator() -> None:
    requests = generate_deep_research(10, seed=1)
    validate_workload(requests)
    for session in {r.session_id for r in requests}:
        calls = [r for r in requests if r.session_id == session]
        (planner,) = [r for r in calls if r.agent == "planner"]
        (aggregator,) = [r for r in calls if r.agent == "aggregator"]
        first_rounds = [
            r
            for r in calls
            if r.agent == "searcher" and r.wait_for == (planner.request_id,)
        ]
        assert 3 <= len(first_rounds) <= 5
        assert planner.is_root and len(aggregator.wait_for) == len(first_rounds)
        # siblings share the searcher role prompt and the question, then differ
        heads = {r.hash_ids[:16] for r in first_rounds}
        assert len(heads) == 1
        assert len({r.hash_ids for r in first_rounds}) == len(first_rounds)
        # search rounds wait for tool latency
        later = [r for r in calls if r.agent == "searcher" and r not in first_rounds]
        assert later and all(500.0 <= (r.tool_wait_ms or 0) <= 4000.0 for r in later)


def test_role_prompts_are_shared_across_sessions() -> None:
    requests = generate_deep_research(2, seed=0)
    planners = [r for r in requests if r.agent == "planner"]
    assert planners[0].hash_ids[:15] == planners[1].hash_ids[:15]


def test_parameters_bound_the_shape() -> None:
    params = DeepResearchParams(
        min_searchers=2, max_searchers=2, min_rounds=1, max_rounds=1
    )
    requests = generate_deep_research(3, seed=0, params=params)
    assert sum(r.agent == "searcher" for r in requests) == 3 * 2 * 2
    with pytest.raises(ValueError):
        generate_deep_research(
            1, params=DeepResearchParams(min_searchers=4, max_searchers=2)
        )
