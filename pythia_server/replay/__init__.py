"""Offline replay inputs: the workload format, converters, generators and arrivals.

- ``workload.py``: :class:`WorkloadRequest`, :func:`load_workload`, :func:`save_workload`
  (NVIDIA Dynamo's agentic Mooncake JSONL plus Pythia's tags; docs/workloads.md).
- ``converters/``: recorded traces (ChatDev, Claude Code, Mooncake) to that format.
- ``generators/``: seeded synthetic workflows (coding agent, deep research, writer/reviewer).
- ``arrivals.py``: when sessions start (recorded, trace, Poisson, bursty, closed loop);
  ``dependencies.py``: when each call is ready once its dependencies complete.
- ``transforms.py``: keep the first sessions, replicate sessions to scale up.
- ``stats.py`` and ``command.py``: ``pythia-server workload convert|generate|stats``.
- ``runner.py``: the offline replay driver (workload + arrivals + policy bundle + simulated
  replicas on a virtual clock), with ``prompts.py`` and ``results.py``; ``metrics.py``: JCT,
  ideal JCT and the rest; ``bench.py`` and ``bench_command.py``: ``pythia-server bench``.
"""

from pythia_server.replay.workload import (
    WorkloadError,
    WorkloadRequest,
    load_workload,
    save_workload,
)

__all__ = ["WorkloadError", "WorkloadRequest", "load_workload", "save_workload"]
