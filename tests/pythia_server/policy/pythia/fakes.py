"""Test doubles for Pythia's policies: a scripted profiler, calls, outcomes, and a real
profiler trained on a synthetic fan-out workflow until it is proactive."""

from __future__ import annotations

from dataclasses import dataclass, field

from pythia_sdk.protocol import AgentTags
from pythia_server.policy.pythia.config import PythiaConfig
from pythia_server.policy.pythia.context import PythiaContext
from pythia_server.policy.types import CallInfo, CallOutcome, ReplicaView
from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import (
    END,
    CallObservation,
    Prediction,
    PrefixPrediction,
)

WORKFLOW = "research"
ROLE = tuple(range(1000, 1010))  # 10 blocks of a role prompt


@dataclass
class ScriptedProfiler:
    """Answers what the test says; records what it is fed."""

    modes: dict[str, str] = field(default_factory=dict)
    calls: dict[tuple[str | None, str | None], Prediction] = field(default_factory=dict)  # (session, agent)
    nexts: dict[str | None, Prediction] = field(default_factory=dict)  # session -> what follows
    observed: list[CallObservation] = field(default_factory=list)
    ended: list[tuple[str | None, str | None, float]] = field(default_factory=list)

    def mode(self, workflow: str | None) -> str:
        return self.modes.get(workflow or "", "unknown")

    def predict(self, workflow: str | None, session: str | None, agent: str | None = None, now_s: float = 0.0) -> Prediction:
        mode = self.mode(workflow)
        table = self.calls.get((session, agent)) if agent is not None else self.nexts.get(session)
        if table is None:
            return Prediction(workflow, session, agent, mode="unknown")
        return Prediction(**{**_fields(table), "mode": mode})

    def observe(self, call: CallObservation) -> None:
        self.observed.append(call)

    def end_session(self, workflow: str | None, session: str | None, now_s: float) -> None:
        self.ended.append((workflow, session, now_s))


def _fields(p: Prediction) -> dict[str, object]:
    return {name: getattr(p, name) for name in Prediction.__slots__}  # type: ignore[attr-defined]


def prediction(
    *,
    next_agents: tuple[tuple[str, float], ...] = (),
    work: float | None = None,
    bound: int | None = None,
    arrival_s: float | None = None,
    fanout: float = 1.0,
    prefix_tokens: int = 0,
    steps: float | None = None,
    session: str = "s1",
) -> Prediction:
    blocks = ROLE[: prefix_tokens // 64] if prefix_tokens else ()
    return Prediction(
        WORKFLOW, session, None, mode="proactive", next_agents=next_agents,
        expected_remaining_steps=steps, expected_remaining_work_tokens=work, output_bound_tokens=bound,
        next_arrival_s=arrival_s, expected_fanout=fanout,
        prefix=PrefixPrediction("history" if blocks else "none", blocks, prefix_tokens, 1.0 if blocks else 0.0),
    )


def context(profiler: object, **config: object) -> PythiaContext:
    return PythiaContext(PythiaConfig(**config), profiler)  # type: ignore[arg-type]


def call(
    call_id: str, session: str | None = "s1", agent: str | None = "writer", *, prompt: int = 640,
    blocks: tuple[int, ...] = (), max_tokens: int | None = None, arrival_s: float = 1.0,
    workflow: str | None = WORKFLOW,
) -> CallInfo:
    return CallInfo(call_id, AgentTags(workflow, session, agent), prompt, blocks, max_tokens, arrival_s=arrival_s)


def outcome(info: CallInfo, replica_id: str = "r0", *, finished_s: float = 2.0, output: int = 100,
            cached: int = 0) -> CallOutcome:
    return CallOutcome(info, replica_id, info.prompt_tokens, cached, output, 0.0, 1.0, finished_s)


def view(replica_id: str, *, free: int = 100_000, total: int = 100_000, running: int = 0, queued: int = 0) -> ReplicaView:
    return ReplicaView(replica_id, running_requests=running, queued_requests=queued,
                       free_kv_tokens=free, total_kv_tokens=total)


def trained_profiler(sessions: int = 30) -> WorkflowProfiler:
    """A real profiler fed ``sessions`` runs of planner -> searcher x3 -> writer -> end."""
    profiler = WorkflowProfiler()
    for i in range(sessions):
        feed_session(profiler, f"train-{i}", start_s=i * 100.0)
    return profiler


def feed_session(profiler: WorkflowProfiler, session: str, start_s: float, upto: int | None = None) -> None:
    """One run: calls observed in order (``upto`` calls only, session left live)."""
    calls = [("planner", 0.0, 1.0, 200), ("searcher", 2.0, 4.0, 300), ("searcher", 2.0, 4.5, 320),
             ("searcher", 2.0, 4.2, 310), ("writer", 6.0, 9.0, 800)]
    history = ROLE
    for n, (agent, start, end, output) in enumerate(calls[:upto]):
        history = (*history, hash((session, n)))
        profiler.observe(CallObservation(
            WORKFLOW, session, agent, start_s + start, start_s + end, prompt_tokens=64 * len(history),
            output_tokens=output, parent="planner" if agent == "searcher" else None, call_id=f"{session}-{n}",
            block_hashes=history if agent != "searcher" else (*ROLE, 7000 + n), block_size=64,
        ))
    if upto is None:
        profiler.end_session(WORKFLOW, session, start_s + 10.0)


__all__ = ["END", "ROLE", "WORKFLOW", "ScriptedProfiler", "call", "context", "feed_session", "outcome",
           "prediction", "trained_profiler", "view"]
