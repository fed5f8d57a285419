"""Decisions without I/O: routing, priority, cache actions and scaling.

Every policy here is a plain object that takes events and state (time arrives as
``now_s``) and returns decisions carrying a short ``reason``. The live gateway and the
offline replay drive the same objects; this package imports neither of them.
"""

from pythia_server.policy.baselines import POLICY_NAMES, make_policy
from pythia_server.policy.routing import RoundRobinRouter, make_router
from pythia_server.policy.types import (
    SGLANG_PRIORITY_PREEMPTION_THRESHOLD,
    CacheHintPolicy,
    CacheOwner,
    CallInfo,
    CallOutcome,
    EngineSettings,
    PolicyBundle,
    PrefetchAction,
    PriorityPolicy,
    ReplicaView,
    RetentionHint,
    RouteDecision,
    Router,
    ScaleDecision,
    Scaler,
    ScaleTick,
)

__all__ = [
    "POLICY_NAMES",
    "SGLANG_PRIORITY_PREEMPTION_THRESHOLD",
    "CacheHintPolicy",
    "CacheOwner",
    "CallInfo",
    "CallOutcome",
    "EngineSettings",
    "PolicyBundle",
    "PrefetchAction",
    "PriorityPolicy",
    "ReplicaView",
    "RetentionHint",
    "RoundRobinRouter",
    "RouteDecision",
    "Router",
    "ScaleDecision",
    "ScaleTick",
    "Scaler",
    "make_policy",
    "make_router",
]
