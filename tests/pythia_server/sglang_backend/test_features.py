"""FeatureSet: what a running SGLang replica supports, from its /server_info, with reasons."""

from __future__ import annotations

import json

from pythia_server.sglang_backend.features import FeatureSet, parse_version

FULL_INFO = {
    "version": "0.5.23",
    "enable_metrics": True,
    "enable_cache_report": True,
    "schedule_policy": "fcfs",
    "enable_priority_scheduling": True,
    "radix_eviction_policy": "priority",
    "retraction_policy": "priority",
    "enable_session_radix_cache": True,
    "kv_events_config": '{"publisher":"zmq"}',
    "kv_events": {
        "publisher": "zmq",
        "endpoint_host": "127.0.0.1",
        "endpoint_port_base": 5557,
        "block_size": 64,
        "dp_size": 1,
    },
}


def test_feature_set_all_on() -> None:
    features = FeatureSet.from_server_info(FULL_INFO, loads_endpoint=True)
    assert features.version == "0.5.23" and features.degraded() == []
    assert features.enabled("kv_events") and features.enabled("v1_loads")
    assert json.loads(json.dumps(features.as_dict()))["features"]["priority_scheduling"]["enabled"] is True


def test_feature_set_explains_what_is_missing() -> None:
    info = {
        **FULL_INFO,
        "schedule_policy": "lpm",
        "enable_cache_report": False,
        "kv_events": None,
        "kv_events_config": None,
    }
    del info["enable_session_radix_cache"]
    features = FeatureSet.from_server_info(info, loads_endpoint=False)
    reasons = {f.name: f.reason for f in features.degraded()}
    assert set(reasons) == {"priority_scheduling", "cache_report", "kv_events", "session_radix_cache", "v1_loads"}
    assert "lpm" in reasons["priority_scheduling"] and "older version" in reasons["session_radix_cache"]


def test_feature_set_old_version() -> None:
    features = FeatureSet.from_server_info({"version": "0.3.6"})
    assert not features.enabled("prefill_only_warm") and not features.enabled("metrics")
    assert parse_version("0.5.23rc1") == (0, 5, 23) and parse_version("dev") is None
