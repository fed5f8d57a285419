"""Distribution-free upper bounds on output length, from order statistics.

If X_(1) <= ... <= X_(n) are n exchangeable samples and x_q is the q-quantile, then
P(X_(k) >= x_q) = P(Binomial(n, q) <= k - 1). The bound is X_(k) for the smallest k
with that probability >= c. No normal approximation: it holds for any continuous
distribution, and is conservative for discrete ones. With n too small (q**n > 1 - c)
no order statistic qualifies and we say so (None) instead of guessing.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from functools import lru_cache

from pythia_server.profiler.types import OutputBound


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space so n in the thousands is exact enough."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    log_n_fact = math.lgamma(n + 1)
    for i in range(k + 1):
        log_term = log_n_fact - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        total += math.exp(log_term)
    return min(1.0, total)


@lru_cache(maxsize=8192)
def order_statistic_rank(n: int, quantile: float, confidence: float) -> int | None:
    """Smallest 1-based rank k with P(X_(k) >= x_quantile) >= confidence; None if none.

    One pass over the binomial pmf (log-space recurrence, so q**n never underflows);
    cached, since windows have a bounded number of sizes.
    """
    if n <= 0 or not 0.0 < quantile < 1.0:
        return None
    log_ratio = math.log(quantile) - math.log1p(-quantile)
    log_pmf = n * math.log1p(-quantile)  # P(Binomial = 0)
    cdf = 0.0
    for i in range(n):  # cdf after adding pmf(i) is P(Binomial <= i); rank k = i + 1
        cdf += math.exp(log_pmf)
        if cdf >= confidence:
            return i + 1
        log_pmf += math.log((n - i) / (i + 1)) + log_ratio
    return None


def min_samples_for_bound(quantile: float, confidence: float) -> int:
    """Fewest samples for which the maximum already bounds the quantile."""
    return math.ceil(math.log(1.0 - confidence) / math.log(quantile))


class OutputSamples:
    """The latest ``capacity`` output lengths of one agent, kept sorted.

    A sliding window (not all history) so the bound follows a workflow that changes.
    Insert and expire are O(capacity) memmoves; reading the bound is O(1).
    """

    __slots__ = ("_capacity", "_order", "_sorted", "_sum")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._order: deque[int] = deque()
        self._sorted: list[int] = []
        self._sum = 0

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, tokens: int) -> None:
        tokens = max(tokens, 0)
        order, ordered = self._order, self._sorted
        if len(order) >= self._capacity:
            old = order.popleft()
            del ordered[bisect.bisect_left(ordered, old)]
            self._sum -= old
        order.append(tokens)
        bisect.insort(ordered, tokens)
        self._sum += tokens

    def extend(self, values: list[int]) -> None:
        """:meth:`add` for several values (one session's), with the loop kept local."""
        order, ordered, capacity = self._order, self._sorted, self._capacity
        left, insort = bisect.bisect_left, bisect.insort
        total = self._sum
        for tokens in values:
            if tokens < 0:  # noqa: PLR1730 - no builtin call per value
                tokens = 0
            if len(order) >= capacity:
                old = order.popleft()
                del ordered[left(ordered, old)]
                total -= old
            order.append(tokens)
            insort(ordered, tokens)
            total += tokens
        self._sum = total

    def bound(self, quantile: float, confidence: float) -> int | None:
        rank = order_statistic_rank(len(self._sorted), quantile, confidence)
        return None if rank is None else self._sorted[rank - 1]

    def summary(self, quantile: float, confidence: float) -> OutputBound:
        n = len(self._sorted)
        if n == 0:
            return OutputBound(0, 0.0, 0.0, None, quantile, confidence)
        mid = n // 2
        median = float(self._sorted[mid]) if n % 2 else (self._sorted[mid - 1] + self._sorted[mid]) / 2.0
        return OutputBound(n, self._sum / n, median, self.bound(quantile, confidence), quantile, confidence)

    def quantile_value(self, q: float) -> float:
        """Empirical q-quantile (nearest rank); 0.0 when empty. For delay summaries."""
        if not self._sorted:
            return 0.0
        index = min(len(self._sorted) - 1, max(0, math.ceil(q * len(self._sorted)) - 1))
        return float(self._sorted[index])
