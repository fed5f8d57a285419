"""The held-out split: test sessions never copies of training ones; bundles get private profilers."""

from __future__ import annotations

import pytest

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.replay.arrivals import PoissonArrivals, apply_arrivals
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.heldout import (
    held_out_split,
    learns,
    make_bundle,
    profiler_modes,
    train_profiler,
)
from pythia_server.replay.runner import ReplayConfig
from pythia_server.replay.workload import session_key, session_keys


def test_split_in_file_order_and_resized_sides_stay_disjoint() -> None:
    requests = generate_deep_research(10, seed=1)
    keys = session_keys(requests)
    train, test = held_out_split(requests, 0.5, train_sessions=3, test_sessions=12)
    assert session_keys(train) == keys[:3]
    assert len(session_keys(test)) == 12
    originals = {k.split("~")[0] for k in session_keys(test)}
    assert originals == set(keys[5:])  # replicated from the held-out half only
    private_train = {h for r in train for h in r.hash_ids} - {h for r in requests if session_key(r) in keys[5:]
                                                               for h in r.hash_ids}
    assert private_train.isdisjoint(h for r in test for h in r.hash_ids)


def test_bad_fractions_and_an_empty_test_side_are_refused() -> None:
    requests = generate_deep_research(1, seed=1)
    with pytest.raises(ValueError, match="within"):
        held_out_split(requests, 1.0)
    with pytest.raises(ValueError, match="empty"):
        held_out_split(requests, 0.5)


def test_trained_profiler_is_copied_into_each_pythia_bundle_only() -> None:
    train, _ = held_out_split(generate_deep_research(24, seed=2), 0.5)
    profiler = train_profiler(apply_arrivals(train, PoissonArrivals(0.5, 0)), ReplayConfig(replicas=1),
                              StepTimeModel.load())
    assert profiler_modes(profiler) == {"deep_research": "proactive"}
    a, b = make_bundle("pythia", profiler), make_bundle("pythia-no-warm", profiler)
    pa, pb = a.router.context.profiler, b.router.context.profiler  # type: ignore[attr-defined]
    assert pa is not profiler and pb is not profiler and pa is not pb
    assert profiler_modes(pa) == profiler_modes(profiler)
    assert learns("pythia-weighted") and not learns("sglang")
    assert make_bundle("sglang", profiler).name == "sglang"
