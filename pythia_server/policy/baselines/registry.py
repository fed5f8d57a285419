"""The policy names users type, each a constructor of a fresh ``PolicyBundle``.

Single-replica research systems (KVFlow, Continuum) say nothing about placement across
replicas; their bundles use sgl-router's ``cache_aware`` (what an SGLang deployment puts in
front of several replicas), so they differ from ``sglang-router`` only by what they
reproduce. ``router=`` overrides that for ablations.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from pythia_server.policy.baselines.autellix import AutellixConfig, AutellixPriority, AutellixRouter
from pythia_server.policy.baselines.cache_aware import CacheAwareConfig, CacheAwareRouter
from pythia_server.policy.baselines.continuum import ContinuumCacheHints, ContinuumConfig, ProgramFcfsPriority
from pythia_server.policy.baselines.dynamo_kv import DynamoKvConfig, DynamoKvRouter
from pythia_server.policy.baselines.kvflow import KVFlowCacheHints, WorkflowGraph
from pythia_server.policy.routing import RoundRobinRouter, make_router
from pythia_server.policy.types import EngineSettings, PolicyBundle, Router

__all__ = ["POLICY_NAMES", "PolicyOptions", "make_policy"]


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """What a bundle may need from the run: randomness, block size, workflow graphs."""

    seed: int = 0
    block_size: int = 64  # tokens per CallInfo.block_hashes entry
    graphs: tuple[WorkflowGraph, ...] = ()
    router: str | None = None  # override the bundle's router by policy name
    profiler: object | None = None  # Pythia: a shared (pre-trained) WorkflowProfiler


def _sglang(o: PolicyOptions) -> PolicyBundle:
    return PolicyBundle("sglang", RoundRobinRouter(), description="SGLang as shipped: round robin, FCFS, LRU")


def _sglang_router(o: PolicyOptions) -> PolicyBundle:
    router = CacheAwareRouter(CacheAwareConfig(block_size=o.block_size))
    return PolicyBundle("sglang-router", router, description="sgl-router cache_aware (0.3 / 64 / 1.5), FCFS, LRU")


def _autellix(mode: str) -> Callable[[PolicyOptions], PolicyBundle]:
    def build(o: PolicyOptions) -> PolicyBundle:
        name = "autellix" if mode == "atlas" else "autellix-plas"
        return PolicyBundle(
            name,
            AutellixRouter(),
            priority=AutellixPriority(AutellixConfig(mode=mode)),
            engine=EngineSettings(enable_priority_scheduling=True),
            description=f"Autellix {mode.upper()}: discretised program-level attained service, "
            "anti-starvation, locality-aware balancing",
        )

    return build


def _kvflow(o: PolicyOptions) -> PolicyBundle:
    return PolicyBundle(
        "kvflow",
        CacheAwareRouter(CacheAwareConfig(block_size=o.block_size)),
        cache_hints=KVFlowCacheHints(o.graphs, block_size=o.block_size),
        description="KVFlow: steps-to-execution eviction and next-step prefetch (cache_aware routing)",
    )


def _continuum(o: PolicyOptions) -> PolicyBundle:
    return PolicyBundle(
        "continuum",
        CacheAwareRouter(CacheAwareConfig(block_size=o.block_size)),
        priority=ProgramFcfsPriority(),
        cache_hints=ContinuumCacheHints(ContinuumConfig()),
        engine=EngineSettings(enable_priority_scheduling=True, priority_preemption=False),
        description="Continuum: TTL pinning across tool calls, program-level FCFS (cache_aware routing)",
    )


def _dynamo_kv(o: PolicyOptions) -> PolicyBundle:
    router = DynamoKvRouter(DynamoKvConfig(block_size=o.block_size), rng=random.Random(o.seed))
    return PolicyBundle("dynamo-kv", router, description="Dynamo KV router (weight 1.0, temperature 0), FCFS, LRU")


def _pythia(name: str) -> Callable[[PolicyOptions], PolicyBundle]:
    def build(o: PolicyOptions) -> PolicyBundle:
        from pythia_server.policy.pythia.bundle import make_variant  # it imports this package

        return make_variant(name, block_size=o.block_size, profiler=o.profiler)  # type: ignore[arg-type]

    return build


_BUNDLES: dict[str, Callable[[PolicyOptions], PolicyBundle]] = {
    "sglang": _sglang,
    "sglang-router": _sglang_router,
    "autellix": _autellix("atlas"),
    "autellix-plas": _autellix("plas"),
    "kvflow": _kvflow,
    "continuum": _continuum,
    "dynamo-kv": _dynamo_kv,
    **{name: _pythia(name) for name in (
        "pythia", "pythia-weighted", "pythia-no-warm", "pythia-no-retention", "pythia-no-priority",
        "pythia-no-lookahead", "pythia-preempt", "pythia-no-cap", "pythia-critical-path", "pythia-no-mixed",
        "pythia-srpt",
    )},
}

POLICY_NAMES: tuple[str, ...] = tuple(_BUNDLES)


def make_policy(
    name: str,
    *,
    seed: int = 0,
    block_size: int = 64,
    graphs: Iterable[WorkflowGraph] = (),
    router: str | None = None,
    profiler: object | None = None,
) -> PolicyBundle:
    """A fresh bundle for the policy users name (``--policy``); a clear error for an unknown one."""
    try:
        build = _BUNDLES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}") from None
    options = PolicyOptions(seed=seed, block_size=block_size, graphs=tuple(graphs), router=router, profiler=profiler)
    bundle = build(options)
    if router is None:
        return bundle
    replacement: Router = make_router(router, seed=seed, block_size=block_size)
    return replace(bundle, router=replacement)
