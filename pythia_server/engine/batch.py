"""The running (decoding) batch, with the aggregates the scheduler asks for every step.

SGLang's ``ScheduleBatch`` recomputes sums over its requests on the GPU side for free;
in Python a loop per question per step would dominate the offline replay. The batch
keeps context and reservation sums current and a heap of when each request reaches its
last token (all members advance together, so the order never changes), so a step asks
O(1) or O(log n) questions and only ``advance`` touches every request.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from pythia_server.engine.request import Req

__all__ = ["RunningBatch"]


class RunningBatch:
    def __init__(self, clip_max_new_tokens: int) -> None:
        self._clip = clip_max_new_tokens
        self.reqs: list[Req] = []
        self.context_sum = 0  # sum of prompt + output tokens
        self._out_sum = 0
        self._max_new_sum = 0
        self._over_clip = 0  # members whose max_new_tokens exceeds the clip (sums need a loop then)
        self._clock = 0  # decode steps advanced so far
        self._ends: list[tuple[int, int, Req]] = []  # (clock at the request's last token, token, req)
        self._token = 0

    def __len__(self) -> int:
        return len(self.reqs)

    def __bool__(self) -> bool:
        return bool(self.reqs)

    def __iter__(self) -> Iterator[Req]:
        return iter(self.reqs)

    def __contains__(self, req: Req) -> bool:
        return req.batch_token > 0

    def add(self, req: Req) -> None:
        self.reqs.append(req)
        self._account(req, 1)
        self._token += 1
        req.batch_token = self._token
        heapq.heappush(self._ends, (self._clock + req.target_len - req.out, self._token, req))

    def remove(self, req: Req) -> None:
        self.reqs.remove(req)
        self._account(req, -1)
        req.batch_token = 0

    def _account(self, req: Req, sign: int) -> None:
        self.context_sum += sign * (len(req.input_ids) + req.out)
        self._out_sum += sign * req.out
        self._max_new_sum += sign * req.max_new_tokens
        if req.max_new_tokens > self._clip:
            self._over_clip += sign

    @property
    def mean_context(self) -> float:
        return self.context_sum / len(self.reqs)

    def reserved_tokens(self, ratio: float) -> float:
        """SGLang's decode reservation: sum of min(max_new - out, clip) times the ratio."""
        if not self._over_clip:
            return ratio * (self._max_new_sum - self._out_sum)
        clip = self._clip
        return ratio * sum(min(r.max_new_tokens - r.out, clip) for r in self.reqs)

    def steps_to_next_finish(self) -> int:
        ends = self._ends
        while ends and ends[0][2].batch_token != ends[0][1]:
            heapq.heappop(ends)  # left the batch (finished, aborted, retracted)
        return ends[0][0] - self._clock if ends else 0

    def advance(self, steps: int) -> None:
        """Every member decodes ``steps`` tokens (and holds that much more KV)."""
        for req in self.reqs:
            req.out += steps
            req.private += steps
        n = len(self.reqs) * steps
        self.context_sum += n
        self._out_sum += n
        self._clock += steps

    def pop_finished(self) -> list[Req]:
        """Members that reached their last token, removed from the batch."""
        done: list[Req] = []
        ends = self._ends
        while ends and (ends[0][0] <= self._clock or ends[0][2].batch_token != ends[0][1]):
            _, token, req = heapq.heappop(ends)
            if req.batch_token == token:
                done.append(req)
                self._account(req, -1)
                req.batch_token = 0
        if done:
            gone = set(map(id, done))
            self.reqs = [r for r in self.reqs if id(r) not in gone]
        return done
