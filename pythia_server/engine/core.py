"""The simulated SGLang scheduler: continuous batching over a radix cache, no clock.

One ``step(now_s)`` is one iteration of SGLang's ``Scheduler.event_loop_normal``
(``python/sglang/srt/managers/scheduler.py``): if a prefill batch can be formed it runs
(``get_new_batch_prefill``: the chunked request first, then waiting requests in policy
order through ``PrefillAdder`` in ``managers/schedule_policy.py``, limited by the
running-request cap, ``chunked_prefill_size``, ``max_prefill_tokens`` and the KV tokens
left after reserving decode room for running requests), otherwise every running request
decodes one token (``update_running_batch``, retracting requests when the KV pool cannot
hold one more token each, as ``ScheduleBatch.retract_decode`` does). With
``enable_mixed_chunk`` the running requests decode inside the prefill step.

KV accounting (``engine/kv_ledger.py``) follows ``mem_cache/radix_cache.py``'s
``cache_unfinished_req`` / ``cache_finished_req``: prefilled pages go into the tree
(locked while the request runs), generated tokens are the request's own until it
finishes, then prompt and output are inserted and unlocked, so a follow-up turn that
repeats them hits the cache. Memory is counted in tokens (SGLang allocates whole pages;
the difference is under a page per request). The driver owns time: it passes ``now_s``
in and advances by the returned ``duration_s``.
"""

from __future__ import annotations

import random
from typing import Any

from pythia_server.engine.batch import RunningBatch
from pythia_server.engine.events import KvEventListener
from pythia_server.engine.kv_ledger import KvLedger
from pythia_server.engine.radix_cache import EvictionKey, RadixCache
from pythia_server.engine.request import Req, check_request, effective_priority
from pythia_server.engine.schedule_policy import (
    order_waiting,
    preemption_victims,
    retraction_victim,
)
from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import (
    DecodeRun,
    EngineConfig,
    EngineError,
    EngineLoad,
    FinishedRequest,
    GenerateRequest,
    StepResult,
    TokenDelta,
)

__all__ = ["Engine"]

_RETRACT_DECODE_STEPS = 20  # SGLang's global_config.retract_decode_steps


class Engine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        step_time: StepTimeModel | None = None,
        kv_listener: KvEventListener | None = None,
        stream_tokens: bool = True,
        eviction_key: EvictionKey | None = None,
    ) -> None:
        """``stream_tokens`` False (offline replay): no text, no per-token deltas.

        ``eviction_key`` replaces the radix eviction policy's order (cache-hint policies,
        see ``policy/baselines/retention.py``): it sees each leaf's owners (the
        ``GenerateRequest.owner`` values that touched it), its last access and the time.
        """
        self.config = config or EngineConfig()
        self._stream = stream_tokens
        self._now_s = 0.0
        self.step_time = step_time or StepTimeModel.load()
        self.cache = RadixCache(self.config.page_size, self.config.radix_eviction_policy, kv_listener, eviction_key)
        self._rng = random.Random(self.config.seed)
        self._reqs: dict[str, Req] = {}
        self._waiting: list[Req] = []
        self._running = RunningBatch(self.config.clip_max_new_tokens)
        self._chunked: Req | None = None
        self.kv = KvLedger(self.cache, self.config.max_total_num_tokens, self.config.page_size,
                           not self.config.disable_radix_cache)
        self._seq = 0
        cfg = self.config
        self._min_ratio = min(cfg.init_new_token_ratio * cfg.min_new_token_ratio_factor, 1.0)
        self._ratio_decay = (cfg.init_new_token_ratio - self._min_ratio) / max(cfg.new_token_ratio_decay_steps, 1)
        self.new_token_ratio = cfg.init_new_token_ratio
        self._prompt_total = self._cached_total = self._generated_total = 0
        self._requests_total = self._retractions_total = self._preemptions_total = 0

    # ------------------------------------------------------------------ intake
    def submit(self, request: GenerateRequest, now_s: float) -> None:
        """Queue a request; raises EngineError for one SGLang would reject."""
        cfg = self.config
        self._now_s = now_s
        if request.rid in self._reqs:
            raise EngineError(f"duplicate request id {request.rid!r}")
        check_request(request, cfg)
        target = cfg.output_length.draw(request.input_ids, request.max_new_tokens, request.ignore_eos, self._rng)
        self._seq += 1
        priority = effective_priority(request.priority, cfg)
        req = Req.plan(request, target, now_s, self._seq, cfg.seed, cfg.eos_token_id, self._stream, priority)
        self._reqs[req.rid] = req
        self._waiting.append(req)
        self._requests_total += 1

    def abort(self, rid: str, now_s: float) -> FinishedRequest | None:
        """Drop a request wherever it is and free its KV; None if unknown or finished."""
        req = self._reqs.get(rid)
        if req is None:
            return None
        if req in self._waiting:
            self._waiting.remove(req)
        elif req is self._chunked:
            self._chunked = None
            self.kv.release(req)
        elif req in self._running:
            self._running.remove(req)
            self.kv.release(req)
        del self._reqs[rid]
        return req.finished(now_s, {"type": "abort", "message": "Abort by request"})

    def set_priority(self, rid: str, priority: int | None, now_s: float) -> bool:
        """Re-prioritise a request that is still waiting; False if it is running, done or unknown.

        SGLang fixes a request's priority at submission (see docs/engine.md); the simulated
        engine can change it for a queued request, so a driver can age waiting calls. The
        next scheduling iteration sorts the queue by the new value and may preempt for it.
        ``None`` means the least urgent value, as at submission.
        """
        req = self._reqs.get(rid)
        if req is None or req is self._chunked or req in self._running:
            return False
        self._now_s = now_s
        req.priority = effective_priority(priority, self.config)
        return True

    def waiting_rids(self) -> list[str]:
        """Ids of the queued requests (not yet admitted, or preempted / retracted), arrival order."""
        return [r.rid for r in self._waiting]

    def close_session(self, session_id: str) -> bool:
        """SGLang's /close_session: the session's cached KV becomes ordinary cache."""
        return self.cache.close_session(session_id)

    def flush_cache(self) -> bool:
        """Empty the radix cache; like SGLang, refused (False) while requests are in flight."""
        if self._reqs:
            return False
        self.cache.reset()
        return True

    # ------------------------------------------------------------------ state
    @property
    def has_work(self) -> bool:
        return bool(self._waiting or self._running or self._chunked)

    @property
    def num_waiting(self) -> int:
        """Queued requests (SGLang's ``num_waiting_reqs``), O(1) unlike ``load()``."""
        return len(self._waiting)

    def load(self) -> EngineLoad:
        cfg = self.config
        cache = self.cache
        free = self.kv.free_tokens
        return EngineLoad(
            num_running_reqs=len(self._running) + (1 if self._chunked else 0),
            num_waiting_reqs=len(self._waiting),
            num_used_tokens=cache.protected_size + self.kv.private_total,
            cached_tokens=cache.total_size,
            evictable_tokens=cache.evictable_size,
            free_tokens=free,
            max_total_num_tokens=cfg.max_total_num_tokens,
            max_running_requests=cfg.running_request_cap,
            waiting_tokens=sum(len(r.input_ids) for r in self._waiting),
            prompt_tokens_total=self._prompt_total,
            cached_tokens_total=self._cached_total,
            generation_tokens_total=self._generated_total,
            requests_total=self._requests_total,
            retractions_total=self._retractions_total,
            preemptions_total=self._preemptions_total,
        )

    @property
    def free_tokens(self) -> int:
        return self.kv.free_tokens

    def reclaimable_tokens(self, now_s: float | None = None) -> int:
        """Cached tokens eviction could free now: evictable cache less what a policy pins.

        Pinned tokens (``eviction_key`` None) are no headroom: admission and decode-run
        reservations count only these. ``load().evictable_tokens`` stays SGLang's
        ``evictable_size`` (pins included), which is cheap to read.
        """
        return self.cache.reclaimable_size(self._now_s if now_s is None else now_s)

    # ------------------------------------------------------------------ stepping
    def step(self, now_s: float) -> StepResult | None:
        """Run one scheduler iteration starting at ``now_s``; None when there is nothing to do."""
        self._now_s = now_s
        if not self.has_work:
            self.new_token_ratio = self.config.init_new_token_ratio
            return None
        batch = self._schedule_prefill()
        if batch:
            decoding: list[Req] = []
            if self.config.enable_mixed_chunk and self._running:
                decoding, retracted = self._prepare_decode()
            else:
                retracted = []
            return self._run_prefill(batch, decoding, retracted, now_s)
        if self._running:
            decoding, retracted = self._prepare_decode()
            return self._run_decode(decoding, retracted, now_s)
        return None  # waiting requests that cannot be admitted yet (nothing running to free KV)

    # --- prefill
    def _schedule_prefill(self) -> list[tuple[Req, int, int]]:
        cfg = self.config
        cap = cfg.running_request_cap
        chunk_budget = cfg.chunked_prefill_size if cfg.chunked_prefill_size > 0 else None
        input_budget = cfg.max_prefill_tokens
        batch: list[tuple[Req, int, int]] = []
        if self._chunked is not None:
            req = self._chunked
            take = self._chunk_take(req.fill_len - req.prefilled, chunk_budget)
            if not self._alloc(take, force=not self._running):
                return []
            req.private += take
            batch.append((req, take, req.prefilled))
            if chunk_budget is not None:
                chunk_budget -= take
            input_budget -= take
            if req.prefilled + take < req.fill_len:
                return batch
            self._chunked = None
        preempting = cfg.enable_priority_scheduling and cfg.enable_priority_preemption
        if not self._waiting or (len(self._running) >= cap and not preempting):
            return batch
        room = self.free_tokens + self.cache.evictable_size - self._running.reserved_tokens(self.new_token_ratio)
        pins_counted = self.cache.eviction_key is None  # pinned cache left in ``room`` so far
        for req in self._ordered_waiting():
            if input_budget <= 0 or (chunk_budget is not None and chunk_budget <= 0):
                break
            full = len(self._running) + len(batch) >= cap
            if full and not (preempting and self._preempt_for(req, 0, need_slot=True)):
                break
            fill = req.fill_ids()
            prefix_len, node = 0, self.cache.root
            if not cfg.disable_radix_cache:
                match = self.cache.match_prefix(fill, len(fill) - 1, req.owner)
                prefix_len, node = match.prefix_len, match.last_node
            extend = len(fill) - prefix_len
            decode_room = min(req.max_new_tokens - req.out, cfg.clip_max_new_tokens)
            if not pins_counted and extend + decode_room <= room:
                # room counts pinned cache, which is no room; finding it walks the tree, so
                # only once a request would need more than the unpinned leaves hold
                if not self.cache.can_reclaim(extend + decode_room - self._free_room(batch), self._now_s):
                    room -= self.cache.evictable_size - self.reclaimable_tokens()
                    pins_counted = True
            if extend + decode_room > room and (batch or self._running):
                short = extend + decode_room - room
                if not (preempting and self._preempt_for(req, short, need_slot=False)):
                    break
                room = (
                    self.free_tokens + self.reclaimable_tokens() - self._running.reserved_tokens(self.new_token_ratio)
                    - sum(take + min(r.max_new_tokens - r.out, cfg.clip_max_new_tokens) for r, take, _ in batch)
                )
                pins_counted = True
            if extend > input_budget and batch:
                break
            take = extend if chunk_budget is None or extend <= chunk_budget else self._chunk_take(extend, chunk_budget)
            if take <= 0:
                break
            self.cache.inc_lock_ref(node)
            # nothing else holds KV that will be freed: pins must yield, or nothing runs again
            if not self._alloc(take, force=not batch and not self._running):
                self.cache.dec_lock_ref(node)
                break
            self._waiting.remove(req)
            req.start_prefill(node, prefix_len, len(fill))
            req.private += take
            batch.append((req, take, prefix_len))
            room -= extend + decode_room
            input_budget -= take
            if chunk_budget is not None:
                chunk_budget -= take
            if take < extend:
                self._chunked = req
                break
        return batch

    def _free_room(self, batch: list[tuple[Req, int, int]]) -> int:
        """Free KV less the decode reservations of the running requests and of ``batch``.

        What a request needs beyond it must come from cache that pins leave evictable.
        """
        clip = self.config.clip_max_new_tokens
        return (self.free_tokens - self._running.reserved_tokens(self.new_token_ratio)
                - sum(min(r.max_new_tokens - r.out, clip) for r, _, _ in batch))

    def _preempt_for(self, req: Req, tokens: float, need_slot: bool) -> bool:
        """Displace less urgent running requests so ``req`` fits; they return to the queue."""
        victims = preemption_victims(req, self._running, tokens, need_slot, self.config, self.new_token_ratio)
        for victim in victims:
            self._running.remove(victim)
            self.kv.release(victim)
            victim.retract()
            self._waiting.append(victim)
            self._preemptions_total += 1
        return bool(victims)

    def _chunk_take(self, remaining: int, budget: int | None) -> int:
        if budget is None or remaining <= budget:
            return remaining
        page = self.config.page_size
        return budget // page * page

    def _ordered_waiting(self) -> list[Req]:
        return order_waiting(self._waiting, self.config, lambda r: self.cache.match_prefix(r.fill_ids()).prefix_len)

    def _run_prefill(
        self, batch: list[tuple[Req, int, int]], decoding: list[Req], retracted: list[str], now_s: float
    ) -> StepResult:
        extends = [take for _, take, _ in batch]
        prefixes = [prefix for _, _, prefix in batch]
        if decoding:
            duration = self.step_time.mixed_s(extends, prefixes, len(decoding), self._running.mean_context)
        else:
            duration = self.step_time.prefill_s(extends, prefixes)
        end_s = now_s + duration
        deltas: list[TokenDelta] = []
        finished: list[FinishedRequest] = []
        if decoding:  # mixed: the running requests decode in this same pass
            finished.extend(self._decode_tokens(decoding, 1, end_s, deltas))
        for req, take, _ in batch:
            req.prefilled += take
            self.kv.commit(req, req.prefilled)
            if req.prefilled < req.fill_len:
                continue  # a chunk of a longer prompt: SGLang's cache_unfinished_req
            if req.first_prefill_done is False:
                req.first_prefill_done = True
                self._prompt_total += len(req.input_ids)
                self._cached_total += req.cached_tokens
            if req.target_len == 0:
                finished.append(self._finish(req, end_s))
                continue
            self._emit(req, end_s, deltas)
            if req.out >= req.target_len:
                finished.append(self._finish(req, end_s))
            else:
                self._running.add(req)
        return StepResult(
            "mixed" if decoding else "prefill", now_s, duration, len(batch) + len(decoding), sum(extends),
            deltas, finished, retracted,
        )

    # --- decode
    def _prepare_decode(self) -> tuple[list[Req], list[str]]:
        """Make room for one more token per running request, retracting if needed."""
        retracted: list[str] = []
        # the last running request is never retracted for pinned cache (SGLang keeps it too)
        while self._running and not self._alloc(len(self._running), force=len(self._running) == 1):
            victim = retraction_victim(self._running)
            self._running.remove(victim)
            self.kv.release(victim)
            victim.retract()
            self._waiting.insert(0, victim)
            self._retractions_total += 1
            retracted.append(victim.rid)
        if retracted:
            remaining = self._running.reqs
            total_new = sum(r.max_new_tokens for r in remaining) or 1
            decoded = sum(r.out for r in remaining)
            self.new_token_ratio = min(1.0, (decoded + _RETRACT_DECODE_STEPS * len(remaining)) / total_new)
        else:
            self.new_token_ratio = max(self.new_token_ratio - self._ratio_decay, self._min_ratio)
        return self._running.reqs, retracted

    def _run_decode(self, decoding: list[Req], retracted: list[str], now_s: float) -> StepResult | None:
        if not decoding:
            return StepResult("decode", now_s, 0.0, 0, 0, [], [], retracted) if retracted else None
        duration = self.step_time.decode_s(len(decoding), self._running.mean_context)
        end_s = now_s + duration
        deltas: list[TokenDelta] = []
        finished = self._decode_tokens(decoding, 1, end_s, deltas)
        return StepResult("decode", now_s, duration, len(decoding), 0, deltas, finished, retracted)

    def _decode_tokens(self, decoding: list[Req], steps: int, end_s: float, deltas: list[TokenDelta]
                       ) -> list[FinishedRequest]:
        """The running batch writes ``steps`` tokens each (KV already allocated); who finished."""
        self._running.advance(steps)
        self._generated_total += steps * len(decoding)
        if self._stream and steps:
            for req in decoding:
                start = req.out - steps
                deltas.append(TokenDelta(req.rid, req.output_ids[start : req.out], "".join(req.pieces[start : req.out]),
                                         req.cached_tokens))
        return [self._finish(req, end_s) for req in self._running.pop_finished()]

    # --- multi-step decode (offline replay)
    def next_step(self, now_s: float, max_decode_steps: int) -> StepResult | DecodeRun | None:
        """Like ``step``, but a decode phase comes back as a run of up to ``max_decode_steps``.

        The run is uncommitted: the driver ends it with ``finish_decode_run`` after as many
        steps as happened before something changed (a new arrival, an abort). A run never
        passes a request's last token nor the KV it can reserve up front, so the batch is
        the same at every step of it and only the end can finish requests.
        """
        if max_decode_steps <= 1 or not self.has_work:
            return self.step(now_s)
        self._now_s = now_s
        batch = self._schedule_prefill()
        if batch:
            decoding, retracted = self._prepare_decode() if self.config.enable_mixed_chunk and self._running else ([], [])
            return self._run_prefill(batch, decoding, retracted, now_s)
        if not self._running:
            return None
        size = len(self._running)
        steps = min(max_decode_steps, self._running.steps_to_next_finish())
        free = self.free_tokens
        if not self.cache.can_reclaim(size * steps - free, now_s):  # pinned cache is no headroom
            steps = min(steps, (free + self.reclaimable_tokens(now_s)) // size)
        if steps < 2:
            decoding, retracted = self._prepare_decode()
            return self._run_decode(decoding, retracted, now_s)
        if not self._alloc(size * steps):  # the requests' own KV grows as the run is committed
            raise RuntimeError("KV reservation for a decode run failed")  # bounded above, exactly
        mid_context = self._running.mean_context + (steps - 1) / 2
        return DecodeRun(now_s, self.step_time.decode_s(size, mid_context), steps, self._running.reqs)

    def finish_decode_run(self, run: DecodeRun, steps: int) -> StepResult:
        """Commit the first ``steps`` steps of ``run`` (all of them unless cut short)."""
        steps = max(0, min(steps, run.steps))
        self.kv.unreserve((run.steps - steps) * len(run.reqs))  # reserved, never written
        end_s = run.start_s + steps * run.step_s
        self.new_token_ratio = max(self.new_token_ratio - steps * self._ratio_decay, self._min_ratio)
        deltas: list[TokenDelta] = []
        finished = self._decode_tokens(run.reqs, steps, end_s, deltas)
        return StepResult("decode", run.start_s, steps * run.step_s, len(run.reqs), 0, deltas, finished, [], steps)

    # --- KV bookkeeping (engine/kv_ledger.py)
    def _alloc(self, tokens: int, force: bool = False) -> bool:
        return self.kv.alloc(tokens, self._now_s, force)

    def _emit(self, req: Req, at_s: float, deltas: list[TokenDelta]) -> None:
        index = req.out
        req.out += 1
        self._generated_total += 1
        if req.first_token_s is None:
            req.first_token_s = at_s
        if self._stream:
            deltas.append(TokenDelta(req.rid, [req.output_ids[index]], req.pieces[index], req.cached_tokens))

    def _finish(self, req: Req, at_s: float) -> FinishedRequest:
        self.kv.commit(req, len(req.input_ids) + max(req.out - 1, 0) if req.out else len(req.input_ids))
        if self.config.enable_session_radix_cache and req.session_id is not None:
            self.cache.add_session_ref(req.session_id, req.last_node)
        self.kv.release(req)
        del self._reqs[req.rid]
        return req.finished(at_s, req.finish_reason)

    def debug_state(self) -> dict[str, Any]:
        """Counts for invariant checks in tests."""
        return {
            "private": self.kv.private_total,
            "private_sum": sum(r.private for r in self._reqs.values()),
            "tree": self.cache.total_size,
            "waiting": len(self._waiting),
            "running": len(self._running),
            "chunked": self._chunked is not None,
        }
