from __future__ import annotations

from pythia_server.sglang_backend.prometheus_load import parse_load_metrics

SGLANG_TEXT = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{engine_type="unified",model_name="m",tp_rank="0"} 3.0
sglang:num_running_reqs{engine_type="unified",model_name="m",tp_rank="1"} 2.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m",tp_rank="0"} 7.0
sglang:num_used_tokens{model_name="m",tp_rank="0"} 1024.0
sglang:max_total_num_tokens{model_name="m",tp_rank="0"} 450000.0
sglang:token_usage{model_name="m",tp_rank="0"} 0.02
sglang:prompt_tokens_total{model_name="m"} 99.0
"""


def test_gauges_are_summed_over_ranks() -> None:
    assert parse_load_metrics(SGLANG_TEXT) == {
        "num_running_reqs": 5,
        "num_waiting_reqs": 7,
        "num_used_tokens": 1024,
        "max_total_num_tokens": 450000,
    }


def test_unlabelled_and_malformed_lines() -> None:
    text = "sglang:num_queue_reqs 4\nsglang:num_used_tokens{a=\"b\"} notanumber\nsglang:num_running_reqs{x=\"y\"}\nsglang:max_total_num_tokens NaN\n"
    assert parse_load_metrics(text) == {"num_waiting_reqs": 4}


def test_the_simulated_engine_exports_what_the_parser_reads() -> None:
    from pythia_server.engine.types import EngineConfig
    from pythia_server.sglang_backend.sim_server import SimServerConfig, build_app
    from starlette.testclient import TestClient

    with TestClient(build_app(SimServerConfig())) as client:
        text = client.get("/metrics").text
    load = parse_load_metrics(text)
    assert load["max_total_num_tokens"] == EngineConfig().max_total_num_tokens
    assert load["num_waiting_reqs"] == 0 and load["num_running_reqs"] == 0
