"""Faithful baselines: the published policies Pythia is measured against, as bundles.

``make_policy(name)`` builds a fresh ``PolicyBundle`` (router, priority, cache hints,
scaler slot, the engine flags it expects) for the names users type: ``sglang``,
``sglang-router``, ``autellix`` (``autellix-plas``), ``kvflow``, ``continuum``,
``dynamo-kv``. Each module's docstring names what it reproduces and every deviation;
docs/baselines.md collects them.
"""

from pythia_server.policy.baselines.approx_tree import ApproxTree
from pythia_server.policy.baselines.autellix import AutellixConfig, AutellixPriority, AutellixRouter
from pythia_server.policy.baselines.cache_aware import CacheAwareConfig, CacheAwareRouter
from pythia_server.policy.baselines.continuum import (
    ContinuumCacheHints,
    ContinuumConfig,
    ProgramFcfsPriority,
    choose_ttl,
    cold_start_ttl,
    memoryfulness,
)
from pythia_server.policy.baselines.dynamo_kv import DynamoKvConfig, DynamoKvRouter, softmax_sample
from pythia_server.policy.baselines.kvflow import KVFlowCacheHints, WorkflowGraph
from pythia_server.policy.baselines.registry import POLICY_NAMES, PolicyOptions, make_policy
from pythia_server.policy.baselines.retention import (
    MAX_OWNERS_PER_NODE,
    NOT_EXPECTED,
    combine_hints,
    is_pinned,
    node_sort_key,
)

__all__ = [
    "MAX_OWNERS_PER_NODE",
    "NOT_EXPECTED",
    "POLICY_NAMES",
    "ApproxTree",
    "AutellixConfig",
    "AutellixPriority",
    "AutellixRouter",
    "CacheAwareConfig",
    "CacheAwareRouter",
    "ContinuumCacheHints",
    "ContinuumConfig",
    "DynamoKvConfig",
    "DynamoKvRouter",
    "KVFlowCacheHints",
    "PolicyOptions",
    "ProgramFcfsPriority",
    "WorkflowGraph",
    "choose_ttl",
    "cold_start_ttl",
    "combine_hints",
    "is_pinned",
    "make_policy",
    "memoryfulness",
    "node_sort_key",
    "softmax_sample",
]
