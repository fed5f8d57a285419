"""A held-out split for learning policies: train the profiler on one part, measure on the other.

Pythia's bundles act on the workflow profiler's predictions, which a gateway learns from
traffic it has already seen. A fair measurement trains on sessions the results never
include: the workload's sessions are split in file order (the first ``train_fraction`` to
train on, the rest to test on) and each side is replicated separately, so test sessions
are never copies of training ones. Used by ``benchmarks/pythia_ablation.py`` and
``benchmarks/pythia_targets.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.policy import make_policy
from pythia_server.policy.baselines import WorkflowGraph
from pythia_server.policy.baselines.registry import PolicyBundle
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.transforms import resize_sessions, split_sessions
from pythia_server.replay.workload import WorkloadRequest

__all__ = ["held_out_split", "learns", "make_bundle", "profiler_modes", "train_profiler"]


def held_out_split(
    requests: Sequence[WorkloadRequest],
    train_fraction: float,
    *,
    train_sessions: int | None = None,
    test_sessions: int | None = None,
) -> tuple[list[WorkloadRequest], list[WorkloadRequest]]:
    """(train, test) calls; each side resized (replicated with fresh ids, then cut) when asked."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError("the train fraction must be within (0, 1)")
    train, test = split_sessions(requests, train_fraction)
    if not test:
        raise ValueError("the test split is empty")
    if train_sessions:
        train = resize_sessions(train, train_sessions)
    if test_sessions:
        test = resize_sessions(test, test_sessions)
    return train, test


def learns(name: str) -> bool:
    """Whether the named bundle carries a workflow profiler (the Pythia family)."""
    return name.startswith("pythia")


def train_profiler(
    train: Sequence[WorkloadRequest], config: ReplayConfig, step_time: StepTimeModel
) -> object:
    """The profiler of a ``pythia`` bundle after one replay of the training calls (timed by the caller)."""
    warmup = make_policy("pythia", block_size=config.block_size)
    ReplayRunner(train, warmup, config, step_time).run()
    return warmup.router.context.profiler  # type: ignore[attr-defined]


def profiler_modes(profiler: object) -> dict[str, str]:
    """Workflow type -> the profiler's mode for it (proactive, shadow, ...)."""
    return {w.workflow: w.mode.mode for w in profiler.snapshot().workflows}  # type: ignore[attr-defined]


def make_bundle(
    name: str, profiler: object | None, *, seed: int = 0, block_size: int = 64, graphs: Sequence[WorkflowGraph] = ()
) -> PolicyBundle:
    """A fresh bundle; Pythia's starts from a private copy of the trained profiler (and keeps learning)."""
    trained = copy.deepcopy(profiler) if learns(name) and profiler is not None else None
    return make_policy(name, seed=seed, block_size=block_size, graphs=graphs, profiler=trained)
