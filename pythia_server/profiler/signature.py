"""What a finished step itself says about what comes next: its prompt and its output.

Two signals a gateway holds when a step ends, before the next call arrives, that the
agent sequence alone does not carry:

- **recall**: the step's prompt, past its agent's role prefix (the blocks shared across
  sessions, learned by ``composition.py``), starts like the prompt of an earlier step of
  the same session: the same phase or task prompt again, or the agent's own growing
  history. The agent that followed that earlier step is then a strong hint (a chat
  chain's phase that recurs is followed as it was before). The prompt's *key* is its
  first block after the role prefix; chained hashes make equal keys equal prefixes.
- **output bucket**: the step's output length, in log2 buckets (a short "done" reply
  often ends a phase or a loop).

Both go into one small int per step, the *signature*, which the ``sig-k`` context models
(``automaton.py``) add to their state. Computing it costs one dict lookup per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pythia_server.profiler.steps import Step
from pythia_server.profiler.types import CallObservation

OUTPUT_BUCKETS = 16  # 0, 1, 2-3, 4-7, ..., >= 16384 tokens


def output_bucket(tokens: int) -> int:
    return min(tokens.bit_length(), OUTPUT_BUCKETS - 1) if tokens > 0 else 0


def signature_of(recall_id: int, output_tokens: int) -> int:
    """One step's signature: the recalled agent's id (0: none) and its output bucket.
    Always >= 16, so the automaton's signature keys never equal its other keys."""
    return ((recall_id + 1) << 4) | output_bucket(output_tokens)


def prompt_key(call: CallObservation, role_blocks: int) -> int | None:
    """The first block hash after the role prefix (None: the prompt ends within it)."""
    hashes = call.block_hashes
    return hashes[role_blocks] if len(hashes) > role_blocks else None


class RecallTracker:
    """The recall of each step of one session, kept up to date call by call.

    ``recalls[i]`` is the agent that followed the latest earlier step whose prompt key
    equals step i's first call's, or None. A step's recall is fixed by its first call,
    so a fan-out that grows later does not change it. Memory: one entry per distinct
    prompt key of the session (at most one per call).
    """

    __slots__ = ("_calls_done", "_latest_step", "recalls")

    def __init__(self) -> None:
        self.recalls: list[str | None] = []
        self._latest_step: dict[int, int] = {}  # prompt key -> latest step index with it
        self._calls_done = 0

    def reset(self) -> None:
        """Forget everything (the session's steps were regrouped)."""
        self.recalls.clear()
        self._latest_step.clear()
        self._calls_done = 0

    def update(
        self,
        calls: Sequence[CallObservation],
        step_of: Sequence[int],
        steps: Sequence[Step],
        role_blocks: Callable[[str], int],
    ) -> None:
        """Take in the calls added since the last update (calls in start order)."""
        recalls, latest = self.recalls, self._latest_step
        for index in range(self._calls_done, len(calls)):
            step = step_of[index]
            key = prompt_key(calls[index], role_blocks(steps[step].agent))
            if step == len(recalls):
                found = latest.get(key) if key is not None else None
                recalls.append(steps[found + 1].agent if found is not None else None)
            if key is not None:
                latest[key] = step
        self._calls_done = len(calls)


def session_recalls(
    calls: Sequence[CallObservation], steps: Sequence[Step], role_blocks: Callable[[str], int]
) -> list[str | None]:
    """Each step's recall for a whole session (calls in start order, grouped into
    ``steps``): what :class:`RecallTracker` gives, in one pass."""
    recalls: list[str | None] = []
    latest: dict[int, int] = {}
    roles: dict[str, int] = {}
    index = 0
    for number, step in enumerate(steps):
        agent = step.agent
        role = roles.get(agent)
        if role is None:
            role = roles[agent] = role_blocks(agent)
        hashes = calls[index].block_hashes
        if len(hashes) > role:
            key = hashes[role]
            found = latest.get(key)
            recalls.append(steps[found + 1].agent if found is not None else None)
            latest[key] = number
        else:
            recalls.append(None)
        width = step.width
        if width > 1:  # the other calls of a fan-out: their keys only
            for call in calls[index + 1 : index + width]:
                hashes = call.block_hashes
                if len(hashes) > role:
                    latest[hashes[role]] = number
        index += width
    return recalls
