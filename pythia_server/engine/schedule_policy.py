"""Which waiting request goes next, and whom to displace: SGLang's ``schedule_policy.py``.

Pure functions over the engine's request lists; the engine applies what they choose.
Queue order (``SchedulePolicy.calc_priority``): ``fcfs`` keeps arrival order; ``lpm``
sorts by longest cached prefix, falling back to FCFS above 128 waiting requests (prefix
matching each of them would cost more than it saves); ``lof`` puts the longest remaining
output first; with priority scheduling the queue is sorted by priority (larger more
urgent unless ``schedule_low_priority_values_first``), arrival order among equals.
Preemption follows ``PrefillAdder.preempt_to_schedule``; retraction follows
``ScheduleBatch.retract_decode`` (``schedule_batch.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from pythia_server.engine.request import Req
from pythia_server.engine.types import EngineConfig

__all__ = ["LPM_FALLBACK_QUEUE", "order_waiting", "preemption_victims", "retraction_victim"]

LPM_FALLBACK_QUEUE = 128


def order_waiting(queue: Sequence[Req], config: EngineConfig, cached_len: Callable[[Req], int]) -> list[Req]:
    """The waiting queue in the order admission tries it (a new list; ``queue`` untouched)."""
    ordered = list(queue)
    if config.enable_priority_scheduling:
        sign = 1 if config.schedule_low_priority_values_first else -1
        ordered.sort(key=lambda r: (sign * r.priority, r.seq))
    elif config.schedule_policy == "lpm" and len(ordered) <= LPM_FALLBACK_QUEUE and not config.disable_radix_cache:
        ordered.sort(key=lambda r: (-cached_len(r), r.seq))
    elif config.schedule_policy == "lof":
        ordered.sort(key=lambda r: (-(r.max_new_tokens - r.out), r.seq))
    return ordered


def preemption_victims(
    req: Req, running: Iterable[Req], tokens: float, need_slot: bool, config: EngineConfig, new_token_ratio: float
) -> list[Req]:
    """Running requests to displace so ``req`` fits, or [] if that is not possible.

    A running request is preemptible when ``req`` is more urgent by more than
    ``priority_scheduling_preemption_threshold``; the least urgent (latest arrived among
    equals) go first until ``tokens`` KV tokens (their own KV plus their decode
    reservations) and, if asked, one running slot are freed. All or nothing.
    """
    sign = -1 if config.schedule_low_priority_values_first else 1  # +: larger is more urgent
    threshold = config.priority_scheduling_preemption_threshold
    clip = config.clip_max_new_tokens
    candidates = sorted(
        (r for r in running if (req.priority - r.priority) * sign > threshold),
        key=lambda r: (sign * r.priority, -r.seq),
    )
    chosen: list[Req] = []
    freed = 0.0
    for victim in candidates:
        if freed >= tokens and (chosen or not need_slot):
            break
        chosen.append(victim)
        freed += victim.private + min(victim.max_new_tokens - victim.out, clip) * new_token_ratio
    if not chosen or freed < tokens:
        return []
    return chosen


def retraction_victim(running: Iterable[Req]) -> Req:
    """The request to retract under decode memory pressure: fewest outputs, then longest prompt."""
    return min(running, key=lambda r: (r.out, -len(r.input_ids)))
