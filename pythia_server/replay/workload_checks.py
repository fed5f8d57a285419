"""What Dynamo's agentic loader accepts, checked before a workload is replayed or written.

Split from ``replay/workload.py`` (the format, loading and saving), which re-exports
both names: the error every workload problem raises, and the whole-list checks (ids,
dependencies, cycles, hash ids, block size) that no single row can make alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pythia_server.replay.workload import WorkloadRequest

__all__ = ["WorkloadError", "validate_workload"]

_MAX_HASH_ID = 2**32 - 1  # Dynamo casts hash ids to u32 token ids


class WorkloadError(ValueError):
    """A workload file or request list that cannot be replayed; names file and line."""


def validate_workload(
    requests: Sequence[WorkloadRequest],
    *,
    source: str = "<workload>",
    lines: Sequence[int] | None = None,
) -> None:
    """Raise :class:`WorkloadError` unless Dynamo's agentic loader would accept the list.

    Checks unique ids, known and acyclic ``wait_for``, one block size, 32-bit hash ids,
    enough hash ids for ``input_length``, and no delay on roots.
    """

    def where(index: int) -> str:
        line = lines[index] if lines is not None else index + 1
        return f"{source}:{line}" if lines is not None else f"{source}: request {line}"

    if not requests:
        raise WorkloadError(f"{source}: no requests")
    index_by_id: dict[str, int] = {}
    block_size = requests[0].block_size
    for index, request in enumerate(requests):
        if request.request_id in index_by_id:
            raise WorkloadError(
                f"{where(index)}: duplicate request_id {request.request_id!r}"
            )
        index_by_id[request.request_id] = index
        if request.block_size != block_size:
            raise WorkloadError(
                f"{where(index)}: block_size {request.block_size} differs from {block_size}"
            )
        if any(h < 0 or h > _MAX_HASH_ID for h in request.hash_ids):
            raise WorkloadError(f"{where(index)}: hash_ids must be in [0, 2**32)")
        capacity = len(request.hash_ids) * request.block_size
        if request.input_length > capacity:
            raise WorkloadError(
                f"{where(index)}: input_length {request.input_length} exceeds {len(request.hash_ids)}"
                f" hash_ids x block_size {request.block_size} = {capacity}"
            )
        if request.is_root and request.dependency_delay_ms > 0:
            raise WorkloadError(
                f"{where(index)}: delay/tool_wait_ms on a request without wait_for would be ignored;"
                " use timestamp"
            )
    for index, request in enumerate(requests):
        for dependency in request.wait_for:
            if dependency == request.request_id:
                raise WorkloadError(
                    f"{where(index)}: request {request.request_id!r} waits for itself"
                )
            if dependency not in index_by_id:
                raise WorkloadError(
                    f"{where(index)}: waits for unknown request_id {dependency!r}"
                )
    _check_acyclic(requests, index_by_id, where)


def _check_acyclic(
    requests: Sequence[WorkloadRequest], index_by_id: dict[str, int], where: Callable[[int], str]
) -> None:
    state = [0] * len(requests)  # 0 new, 1 on the stack, 2 done
    for start in range(len(requests)):
        if state[start]:
            continue
        stack = [(start, iter(requests[start].wait_for))]
        state[start] = 1
        while stack:
            index, deps = stack[-1]
            for dependency in deps:
                nxt = index_by_id[dependency]
                if state[nxt] == 1:
                    raise WorkloadError(
                        f"{where(nxt)}: dependency cycle through {dependency!r}"
                    )
                if state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(requests[nxt].wait_for)))
                    break
            else:
                state[index] = 2
                stack.pop()
