from __future__ import annotations

import pytest

from pythia_server.policy import make_policy
from pythia_server.policy.baselines import POLICY_NAMES
from pythia_server.policy.pythia import (
    PYTHIA_VARIANTS,
    ContextScaler,
    LookaheadPriority,
    LookaheadRouter,
    PythiaConfig,
    SpeculativeCacheManager,
    make_pythia_bundle,
)
from pythia_server.policy.pythia.bundle import running_cap
from pythia_server.policy.pythia.priority import SESSION_TOP
from pythia_server.policy.types import CacheOwner, ScaleTick
from pythia_server.profiler.profiler import WorkflowProfiler
from tests.pythia_server.policy.pythia.fakes import (
    ROLE,
    WORKFLOW,
    call,
    feed_session,
    outcome,
    trained_profiler,
    view,
)


def test_every_variant_is_registered_and_switches_its_mechanism_off() -> None:
    assert set(PYTHIA_VARIANTS) <= set(POLICY_NAMES)
    for name in PYTHIA_VARIANTS:
        bundle = make_policy(name, block_size=32)
        assert bundle.name == name and isinstance(bundle.router, LookaheadRouter)
        assert isinstance(bundle.cache_hints, SpeculativeCacheManager)
        config = bundle.router.config
        assert config.block_size == 32
        assert (bundle.priority is None) == (name == "pythia-no-priority")
        assert bundle.engine.enable_priority_scheduling == (bundle.priority is not None)
        assert bundle.engine.priority_preemption == (name == "pythia-preempt")
        assert isinstance(bundle.priority, LookaheadPriority) or bundle.priority is None
        assert config.warm == (name != "pythia-no-warm")
        assert config.retention == (name != "pythia-no-retention")
        assert config.lookahead == (name != "pythia-no-lookahead")
        assert config.affinity == ("weighted" if name == "pythia-weighted" else "tiebreak")
        assert config.priority_order == ("critical-path" if name == "pythia-critical-path" else "session")
        assert config.srpt_s_per_token == (0.01 if name == "pythia-srpt" else 0.0)
        capped = name not in ("pythia-no-cap", "pythia-no-priority")  # a cap without an order only queues
        assert (bundle.engine.max_running_requests is not None) == capped
        assert bundle.engine.enable_mixed_chunk == (name != "pythia-no-mixed")
        assert bundle.scaler is None  # fixed replicas, like the baselines
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("pythia-typo")


def test_the_parts_of_one_bundle_share_one_context_and_profiler() -> None:
    profiler = WorkflowProfiler()
    bundle = make_policy("pythia", profiler=profiler)
    assert bundle.router.context is bundle.cache_hints.context is bundle.priority.context  # type: ignore[union-attr]
    assert bundle.router.context.profiler is profiler


def _first_step(bundle, session: str = "live"):  # type: ignore[no-untyped-def]
    views = [view("r0"), view("r1")]
    planner = call("p1", session=session, agent="planner", blocks=(*ROLE, 1), prompt=704, arrival_s=5000.0)
    decision = bundle.router.route(planner, views, 5000.0)
    priority = bundle.priority.priority(planner, 5000.0)
    bundle.cache_hints.on_start(planner, decision.replica_id, 5000.0)
    done = outcome(planner, decision.replica_id, finished_s=5001.0, output=200)
    bundle.router.on_finish(planner, decision.replica_id, 5001.0)
    bundle.priority.on_finish(done, 5001.0)
    return decision, priority, bundle.cache_hints.on_finish(done, 5001.0)


def test_a_trained_profiler_drives_lookahead_priority_and_warms() -> None:
    bundle = make_pythia_bundle(profiler=trained_profiler())
    decision, priority, warms = _first_step(bundle)
    assert decision.reason.startswith("fits")
    assert priority == SESSION_TOP - round(5000.0 / 0.01)  # the session's start
    assert bundle.engine.max_running_requests == running_cap(bundle.router.config, bundle.router.context.profiler)  # type: ignore[attr-defined]
    (warm,) = warms
    assert warm.owner.agent == "searcher" and warm.replica_id == decision.replica_id
    assert warm.block_hashes[: len(ROLE)] == ROLE
    assert warm.at_s == pytest.approx(5002.0 - warm.prompt_tokens * 2.5e-5 - 0.05)
    # The searcher arrives where the warm went and finds it cached: a hit.
    searcher = call("s1", session="live", agent="searcher", blocks=warm.block_hashes, prompt=warm.prompt_tokens,
                    arrival_s=5002.0)
    assert bundle.priority.priority(searcher, 5002.0) == priority  # type: ignore[union-attr]  # in line with its session
    views = [view("r0"), view("r1")]
    assert bundle.router.route(searcher, views, 5002.0).replica_id == warm.replica_id
    bundle.cache_hints.on_start(searcher, warm.replica_id, 5002.0)
    bundle.cache_hints.on_finish(outcome(searcher, warm.replica_id, cached=warm.prompt_tokens, finished_s=5004.0), 5004.0)
    assert bundle.cache_hints.counters.hits == 1  # type: ignore[union-attr]


def test_shadow_mode_gets_reactive_defaults_from_every_part() -> None:
    profiler = WorkflowProfiler()
    for i in range(3):  # learned, but too few sessions to be promoted
        feed_session(profiler, f"train-{i}", start_s=i * 100.0)
    assert profiler.mode(WORKFLOW) == "shadow"
    bundle = make_pythia_bundle(profiler=profiler)
    decision, priority, warms = _first_step(bundle)
    assert decision.reason.startswith("reactive")
    assert priority == SESSION_TOP - round(5000.0 / 0.01)  # FCFS by the call's own arrival
    later = call("s1", session="live", agent="searcher", arrival_s=5002.0)
    assert bundle.priority.priority(later, 5002.0) == SESSION_TOP - round(5002.0 / 0.01)  # type: ignore[union-attr]
    assert warms == ()
    hint = bundle.cache_hints.retention(CacheOwner(WORKFLOW, "live", "planner"), 5002.0)  # type: ignore[union-attr]
    assert hint is not None and hint.reason == "live session, no prediction"


def test_the_scaler_reads_live_sessions_from_the_context() -> None:
    bundle = make_pythia_bundle(profiler=trained_profiler(), autoscale=True)
    assert isinstance(bundle.scaler, ContextScaler)
    _first_step(bundle)
    decision = bundle.scaler.decide(ScaleTick(5001.0, (view("r0"),)))
    assert decision.reason.startswith("forecast peak 3.0 calls")  # the planner fans out to 3 searchers
    # A session with a call running is in the observed load, not projected again.
    bundle.router.route(call("s1", session="live", agent="searcher", arrival_s=5002.0), [view("r0")], 5002.0)
    bundle.cache_hints.on_start(call("s1", session="live", agent="searcher", arrival_s=5002.0), "r0", 5002.0)
    busy = bundle.scaler.decide(ScaleTick(5002.0, (view("r0", running=1),)))
    assert busy.reason.startswith("no proactive session")


def test_the_running_cap_is_derived_unless_set() -> None:
    derived = make_pythia_bundle().engine.max_running_requests
    assert derived is not None and 16 <= derived <= 256
    assert make_pythia_bundle(config=PythiaConfig(max_running_requests=40)).engine.max_running_requests == 40
    smaller = make_pythia_bundle(config=PythiaConfig(cap_context_tokens=16_384)).engine.max_running_requests
    assert smaller is not None and smaller < derived  # longer agent contexts fill the KV pool sooner
    # Sized for the calls the profiler learned: these are short (<= 14 blocks + 800 tokens), so more run at once.
    learned = make_pythia_bundle(profiler=trained_profiler()).engine.max_running_requests
    assert learned is not None and learned > derived


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="priority_order"):
        PythiaConfig(priority_order="random")
    with pytest.raises(ValueError, match="max_running_requests"):
        PythiaConfig(max_running_requests=0)
    with pytest.raises(ValueError, match="affinity"):
        PythiaConfig(affinity="nearest")
    with pytest.raises(ValueError, match="max_kv_fill"):
        PythiaConfig(max_kv_fill=0.0)
