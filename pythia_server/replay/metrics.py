"""Per-run figures of a replay, and the ideal JCT every result is read against.

JCT (job completion time) of a session = its last call's finish minus its first call's
ready time. The *ideal* JCT of a session is its critical path with every call alone on
an idle replica with a perfect cache, timed by the same ``StepTimeModel`` the engine
uses: no policy on any number of replicas can beat it. Concretely, walking the
session's calls in ready order with Dynamo's readiness rule (roots at their offsets from
the session's first root, others ``delay + tool_wait_ms`` after their last dependency):

- a call's cached prefix is the longest run of leading blocks that a perfect cache would
  hold: blocks that another session also uses (role prompts, tool schemas: some run has
  computed them) or that a call of this session finished before this one was ready;
  never the whole prompt (SGLang always recomputes the last token);
- its time is the engine's: prefill of the uncached part in ``chunked_prefill_size``
  chunks (each attending over what precedes it), which yields the first token, then
  ``output_length - 1`` decode steps at batch size one (decode cost is affine in the
  context, so the mid-point context gives the exact sum); per-step overhead included.

Everything else (throughput, hit rate, TTFT, e2e, replica-seconds) comes from the
``ReplayResult`` alone.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.replay.runner import ReplayResult
from pythia_server.replay.scaling import replica_seconds
from pythia_server.replay.workload import WorkloadRequest, session_key

__all__ = ["RunMetrics", "call_solo_s", "ideal_jct_s", "percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def call_solo_s(
    input_length: int, output_length: int, cached_tokens: int, step_time: StepTimeModel, chunk_tokens: int = 8192
) -> tuple[float, float]:
    """(TTFT, end-to-end) of one call alone on an idle replica with ``cached_tokens`` cached."""
    cached = max(0, min(cached_tokens, input_length - 1))
    prefill_s, done = 0.0, cached
    chunk = chunk_tokens if chunk_tokens > 0 else input_length
    while done < input_length:
        take = min(chunk, input_length - done)
        prefill_s += step_time.prefill_s([take], [done])
        done += take
    if output_length <= 1:
        return prefill_s, prefill_s
    steps = output_length - 1
    mid_context = input_length + 1 + (steps - 1) / 2
    return prefill_s, prefill_s + steps * step_time.decode_s(1, mid_context)


def ideal_jct_s(
    requests: Sequence[WorkloadRequest], step_time: StepTimeModel, engine: EngineConfig | None = None
) -> dict[str, float]:
    """Ideal JCT per session key (see the module docstring)."""
    engine = engine or EngineConfig()
    chunk = engine.chunked_prefill_size
    first_owner: dict[int, str] = {}
    shared: set[int] = set()
    by_session: dict[str, list[WorkloadRequest]] = defaultdict(list)
    for r in requests:
        key = session_key(r)
        by_session[key].append(r)
    # A block is identified by its whole prefix: chain the ids (equal chains = equal prefixes).
    chains: dict[str, list[int]] = {}
    for r in requests:
        chain, parent = [], 0
        for h in r.hash_ids:
            parent = hash((parent, h))
            chain.append(parent)
        chains[r.request_id] = chain
        key = session_key(r)
        for c in chain:
            owner = first_owner.setdefault(c, key)
            if owner != key:
                shared.add(c)
    out: dict[str, float] = {}
    for key, calls in by_session.items():
        out[key] = _session_ideal(calls, chains, shared, step_time, chunk)
    return out


def _session_ideal(
    calls: list[WorkloadRequest], chains: dict[str, list[int]], shared: set[int], step_time: StepTimeModel, chunk: int
) -> float:
    by_id = {r.request_id: r for r in calls}
    roots = [r for r in calls if r.is_root]
    origin = min((r.timestamp_ms or 0.0) for r in roots) if roots else 0.0
    remaining = {r.request_id: len(r.wait_for) for r in calls}
    dependents: dict[str, list[str]] = defaultdict(list)
    for r in calls:
        for d in r.wait_for:
            if d in by_id:
                dependents[d].append(r.request_id)
            else:  # a dependency outside the session (never in our converters): treat as met
                remaining[r.request_id] -= 1
    latest: dict[str, float] = {}
    heap: list[tuple[float, int, str]] = []
    seq = 0
    for r in calls:
        if remaining[r.request_id] == 0:
            ready = ((r.timestamp_ms or 0.0) - origin) / 1000.0 if r.is_root else r.dependency_delay_ms / 1000.0
            heap.append((ready, seq, r.request_id))
            seq += 1
    heapq.heapify(heap)
    finished: list[tuple[float, str]] = []  # (finish, request id), pushed as computed
    known: set[int] = set()
    end_s = 0.0
    while heap:
        ready, _, rid = heapq.heappop(heap)
        # prefixes of this session's calls finished by now join the perfect cache
        still: list[tuple[float, str]] = []
        for finish, done_id in finished:
            if finish <= ready:
                known.update(chains[done_id])
            else:
                still.append((finish, done_id))
        finished = still
        r = by_id[rid]
        blocks = 0
        for c in chains[rid]:
            if c in shared or c in known:
                blocks += 1
            else:
                break
        _, solo = call_solo_s(r.input_length, r.output_length, blocks * r.block_size, step_time, chunk)
        finish = ready + solo
        end_s = max(end_s, finish)
        finished.append((finish, rid))
        for dep in dependents.get(rid, ()):
            latest[dep] = max(latest.get(dep, finish), finish)
            remaining[dep] -= 1
            if remaining[dep] == 0:
                heapq.heappush(heap, (latest[dep] + by_id[dep].dependency_delay_ms / 1000.0, seq, dep))
                seq += 1
    return end_s


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """One policy's run, as ``bench`` prints and writes it."""

    policy: str
    replicas: int
    sessions: int
    requests: int
    jct_mean_s: float
    jct_p50_s: float
    jct_p95_s: float
    ideal_jct_mean_s: float
    jct_over_ideal: float  # mean JCT / mean ideal JCT (>= 1)
    ttft_mean_s: float
    ttft_p95_s: float
    e2e_mean_s: float
    e2e_p95_s: float
    throughput_tok_s: float  # output tokens per second of the run (first arrival to last finish)
    sessions_per_s: float
    cache_hit_rate: float  # cached prompt tokens / prompt tokens, workload calls only
    preemptions: int  # retractions + priority preemptions
    retractions: int
    priority_preemptions: int
    replica_s: float  # each replica's launch to removal inside the run (a fixed pool: replicas x run length)
    busy_replica_s: float  # time replicas spent stepping
    makespan_s: float
    prefetches_sent: int
    prefetches_dropped: int
    rejected: int  # calls the engine refused (counted in JCT as instant failures)
    peak_replicas: int = 0  # most replicas up at once (= replicas without a scaler)

    def as_dict(self) -> dict[str, object]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(result: ReplayResult, ideal: dict[str, float]) -> RunMetrics:
    """The figures of one run; ``ideal`` from :func:`ideal_jct_s` over the same requests."""
    jcts = [s.jct_s for s in result.sessions]
    ideals = [ideal.get(s.session, 0.0) for s in result.sessions]
    ttfts = [r.ttft_s for r in result.requests if r.ttft_s is not None and r.output_tokens > 0]
    served = [r for r in result.requests if r.finish_reason != "rejected"]
    e2es = [r.e2e_s for r in served]
    start = min((r.ready_s for r in result.requests), default=0.0)
    end = max((r.finish_s for r in result.requests), default=0.0)
    span = max(end - start, 1e-9)
    prompt = sum(r.prompt_tokens for r in result.requests)
    cached = sum(r.cached_tokens for r in result.requests)
    output = sum(r.output_tokens for r in result.requests)
    ideal_mean = _mean(ideals)
    jct_mean = _mean(jcts)
    return RunMetrics(
        policy=result.policy,
        replicas=result.replicas,
        sessions=len(result.sessions),
        requests=len(result.requests),
        jct_mean_s=jct_mean,
        jct_p50_s=percentile(jcts, 50),
        jct_p95_s=percentile(jcts, 95),
        ideal_jct_mean_s=ideal_mean,
        jct_over_ideal=jct_mean / ideal_mean if ideal_mean > 0 else 0.0,
        ttft_mean_s=_mean(ttfts),
        ttft_p95_s=percentile(ttfts, 95),
        e2e_mean_s=_mean(e2es),
        e2e_p95_s=percentile(e2es, 95),
        throughput_tok_s=output / span,
        sessions_per_s=len(result.sessions) / span,
        cache_hit_rate=cached / prompt if prompt else 0.0,
        preemptions=result.retractions + result.preemptions,
        retractions=result.retractions,
        priority_preemptions=result.preemptions,
        replica_s=replica_seconds(result.replica_spans, start, end) if result.replica_spans else result.replicas * span,
        busy_replica_s=sum(result.busy_s.values()),
        makespan_s=span,
        prefetches_sent=result.prefetches_sent,
        prefetches_dropped=result.prefetches_dropped,
        rejected=len(result.rejected),
        peak_replicas=max(result.peak_replicas, result.replicas),
    )

