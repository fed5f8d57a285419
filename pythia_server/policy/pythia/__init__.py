"""Pythia's predictive policies: pure objects driven by the workflow profiler.

``make_pythia_bundle`` builds the ``pythia`` bundle (``make_policy("pythia")``): the
lookahead router, session-order priority under a running cap derived from the calibration
table, the speculative cache manager and the phase-adaptive autoscaler, sharing one
``PythiaContext``. Workflow types the profiler has not promoted
to proactive get reactive defaults from every part. See docs/policies.md.
"""

from pythia_server.policy.pythia.autoscale import (
    PhaseAdaptiveAutoscaler,
    PhaseConfig,
    ReactiveAutoscaler,
    ReactiveConfig,
)
from pythia_server.policy.pythia.bundle import (
    PYTHIA_VARIANTS,
    ContextScaler,
    make_pythia_bundle,
    make_variant,
    running_cap,
)
from pythia_server.policy.pythia.cache_manager import (
    ENDED_RANK,
    LIVE_RANK,
    SpeculativeCacheManager,
    WarmCounters,
)
from pythia_server.policy.pythia.capacity import (
    RunningCap,
    derive_running_cap,
    learned_context_tokens,
)
from pythia_server.policy.pythia.config import (
    AFFINITY_MODES,
    PRIORITY_ORDERS,
    PythiaConfig,
)
from pythia_server.policy.pythia.context import PythiaContext, SessionState
from pythia_server.policy.pythia.placement import LookaheadRouter, PrefixIndex
from pythia_server.policy.pythia.priority import (
    BASE_PRIORITY,
    SESSION_TOP,
    LookaheadPriority,
)

__all__ = [
    "AFFINITY_MODES",
    "BASE_PRIORITY",
    "ENDED_RANK",
    "LIVE_RANK",
    "PRIORITY_ORDERS",
    "PYTHIA_VARIANTS",
    "SESSION_TOP",
    "ContextScaler",
    "LookaheadPriority",
    "LookaheadRouter",
    "PhaseAdaptiveAutoscaler",
    "PhaseConfig",
    "PrefixIndex",
    "PythiaConfig",
    "PythiaContext",
    "ReactiveAutoscaler",
    "ReactiveConfig",
    "RunningCap",
    "SessionState",
    "SpeculativeCacheManager",
    "WarmCounters",
    "derive_running_cap",
    "learned_context_tokens",
    "make_pythia_bundle",
    "make_variant",
    "running_cap",
]
