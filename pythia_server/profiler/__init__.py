"""The workflow profiler: learns each workflow type from its calls and predicts live sessions.

Pure (no I/O, no clock reads) and bounded; the gateway and the replay drive the same
:class:`WorkflowProfiler`. See docs/profiler.md.
"""

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import (
    END,
    START,
    CallObservation,
    ModeState,
    OutputBound,
    Prediction,
    PrefixPrediction,
    ProfilerConfig,
    ProfilerSnapshot,
    WorkflowSnapshot,
)

__all__ = [
    "END",
    "START",
    "CallObservation",
    "ModeState",
    "OutputBound",
    "Prediction",
    "PrefixPrediction",
    "ProfilerConfig",
    "ProfilerSnapshot",
    "WorkflowProfiler",
    "WorkflowSnapshot",
]
