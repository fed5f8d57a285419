"""Plain Mooncake traces (``mooncake_synthetic_trace.jsonl``) to the workload format.

Assumptions, each also in docs/workloads.md:

1. A row is one independent call: no ``session_id`` means no session (the call is its own
   session for statistics and arrivals) and no dependencies. Rows that do carry a
   ``session_id`` are chained in file order, as Dynamo's ``Trace::from_mooncake`` does
   (see :mod:`pythia_server.replay.workload`).
2. ``timestamp`` is the arrival in ms and is kept (recorded arrivals); ``hash_ids`` are
   kept as they are, with Mooncake's 512-token blocks (``block_size`` 512 unless told).
3. ``workflow_type`` is ``"mooncake"`` and ``agent`` is empty: the trace has no tags, so
   it exercises Pythia's reactive path only.

The converter is a thin wrapper: :func:`~pythia_server.replay.workload.load_workload`
reads plain rows directly; converting only adds request ids and the workflow type.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pythia_server.replay.workload import (
    MOONCAKE_BLOCK_SIZE,
    WorkloadRequest,
    load_workload,
)

__all__ = ["convert_mooncake"]

WORKFLOW_TYPE = "mooncake"


def convert_mooncake(
    path: str | Path,
    *,
    block_size: int = MOONCAKE_BLOCK_SIZE,
    workflow_type: str = WORKFLOW_TYPE,
) -> list[WorkloadRequest]:
    requests = load_workload(path, block_size=block_size)
    renamed = {r.request_id: f"mooncake-{i}" for i, r in enumerate(requests)}
    return [
        replace(
            r,
            request_id=renamed[r.request_id],
            wait_for=tuple(renamed[d] for d in r.wait_for),
            workflow_type=r.workflow_type or workflow_type,
        )
        for r in requests
    ]
