"""Pythia as a ``PolicyBundle``, and the ablation variants the bench compares.

One ``PythiaContext`` (the profiler and the live sessions) is shared by the router, the
priority policy, the cache manager and the scaler of a bundle; each mechanism has a
switch in ``PythiaConfig`` and a registered variant with it off.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from pythia_server.engine.step_time import DEFAULT_CALIBRATION, StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy.pythia.autoscale import (
    PhaseAdaptiveAutoscaler,
    PhaseConfig,
    ReactiveConfig,
)
from pythia_server.policy.pythia.cache_manager import SpeculativeCacheManager
from pythia_server.policy.pythia.capacity import (
    DEFAULT_CONTEXT_TOKENS,
    derive_running_cap,
    learned_context_tokens,
)
from pythia_server.policy.pythia.config import PythiaConfig
from pythia_server.policy.pythia.context import PythiaContext
from pythia_server.policy.pythia.placement import LookaheadRouter
from pythia_server.policy.pythia.priority import LookaheadPriority
from pythia_server.policy.types import (
    EngineSettings,
    PolicyBundle,
    ScaleDecision,
    ScaleTick,
)
from pythia_server.profiler.profiler import WorkflowProfiler

__all__ = ["PYTHIA_VARIANTS", "ContextScaler", "make_pythia_bundle"]

#: Registered names -> the switches they turn off (or the knob they change).
PYTHIA_VARIANTS: dict[str, dict[str, object]] = {
    "pythia": {},
    "pythia-weighted": {"affinity": "weighted"},
    "pythia-no-warm": {"warm": False},
    "pythia-no-retention": {"retention": False},
    "pythia-no-priority": {"priority": False},
    "pythia-no-lookahead": {"lookahead": False},
    "pythia-preempt": {"priority_preemption": True},
    "pythia-no-cap": {"running_cap": False},
    "pythia-critical-path": {"priority_order": "critical-path"},
    "pythia-no-mixed": {"mixed_chunk": False},
    # shortest predicted remaining work first, aged: 100 tokens of remaining work weigh one second of waiting
    "pythia-srpt": {"srpt_s_per_token": 0.01},
}


class ContextScaler:
    """The phase-adaptive autoscaler fed the bundle's own live-session predictions.

    A driver sends ticks with replicas only; predictions and session placements are
    filled in from the shared context (a tick that carries predictions is used as is).
    """

    name = "phase-adaptive"

    def __init__(self, context: PythiaContext, scaler: PhaseAdaptiveAutoscaler) -> None:
        self.context = context
        self.scaler = scaler

    def decide(self, tick: ScaleTick) -> ScaleDecision:
        if not tick.predictions:
            ctx = self.context
            predictions = tuple(  # sessions with a call running are in the observed load
                ctx.profiler.predict(state.workflow, session, None, tick.now_s)
                for session, state in ctx.sessions.items() if not state.in_flight
            )
            placements = tuple((s, st.last_replica) for s, st in ctx.sessions.items() if st.last_replica)
            tick = replace(tick, predictions=predictions, session_replicas=placements)
        return self.scaler.decide(tick)


@lru_cache(maxsize=16)
def _derived_cap(calibration: str, kv_tokens: int, context_tokens: int, kv_share: float, knee_gain: float) -> int:
    step_time = StepTimeModel.load(calibration)
    return derive_running_cap(step_time, kv_tokens, context_tokens, kv_share, knee_gain).max_running_requests


def running_cap(
    config: PythiaConfig,
    profiler: WorkflowProfiler | None = None,
    calibration: str | None = None,
    kv_tokens: int | None = None,
) -> int | None:
    """``--max-running-requests`` for the bundle's replicas: None when the cap is off.

    Derived from the calibration table (``capacity.py``) for the default replica (one H100
    at SGLang's memory fraction) and the calls ``profiler`` has learned, unless
    ``config.max_running_requests`` sets it.
    """
    if not (config.running_cap and config.priority):  # a cap without an order only queues
        return None
    if config.max_running_requests is not None:
        return config.max_running_requests
    context = config.cap_context_tokens
    if context is None and profiler is not None:
        context = learned_context_tokens(profiler.snapshot(), config.block_size)
    name = calibration or DEFAULT_CALIBRATION
    kv = kv_tokens if kv_tokens is not None else EngineConfig.from_gpu(name).max_total_num_tokens
    return _derived_cap(name, kv, context or DEFAULT_CONTEXT_TOKENS, config.cap_kv_share, config.cap_knee_gain)


def make_pythia_bundle(
    name: str = "pythia",
    config: PythiaConfig | None = None,
    profiler: WorkflowProfiler | None = None,
    feed_profiler: bool = True,
    phase: PhaseConfig | None = None,
    reactive: ReactiveConfig | None = None,
    autoscale: bool = False,
) -> PolicyBundle:
    """A fresh Pythia bundle. ``profiler``: share a (possibly pre-trained) one; with
    ``feed_profiler`` False the driver feeds it and the bundle only reads it.

    ``autoscale`` puts the phase-adaptive scaler in the bundle's ``scaler`` slot; off by
    default, so the registered bundles run on a fixed replica count like the baselines
    they are compared with (the autoscaler is compared with the reactive one on its own).
    """
    cfg = config or PythiaConfig()
    context = PythiaContext(cfg, profiler, feed_profiler)
    priority = LookaheadPriority(context) if cfg.priority else None
    switches = [n for n, on in (("retention", cfg.retention), ("warm", cfg.warm), ("lookahead", cfg.lookahead),
                                ("priority", cfg.priority), ("running cap", cfg.running_cap),
                                ("mixed chunk", cfg.mixed_chunk)) if not on]
    cap = running_cap(cfg, context.profiler)
    description = (
        f"Pythia: lookahead placement ({cfg.affinity} affinity), {cfg.priority_order} priority"
        + (f" under a running cap of {cap}" if cap else "") + ", "
        "speculative retention and warming, phase-adaptive scaling"
        + (f"; off: {', '.join(switches)}" if switches else "")
    )
    return PolicyBundle(
        name,
        LookaheadRouter(context),
        priority=priority,
        cache_hints=SpeculativeCacheManager(context),
        scaler=ContextScaler(context, PhaseAdaptiveAutoscaler(phase, reactive)) if autoscale else None,
        engine=EngineSettings(enable_priority_scheduling=cfg.priority, priority_preemption=cfg.priority_preemption,
                              max_running_requests=cap, enable_mixed_chunk=cfg.mixed_chunk),
        description=description,
    )


def make_variant(name: str, block_size: int = 64, profiler: WorkflowProfiler | None = None) -> PolicyBundle:
    """A registered variant by name (``PYTHIA_VARIANTS``)."""
    try:
        changes = PYTHIA_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown Pythia variant {name!r}; known: {', '.join(PYTHIA_VARIANTS)}") from None
    config = PythiaConfig(block_size=block_size, **changes)  # type: ignore[arg-type]
    return make_pythia_bundle(name, config, profiler)
