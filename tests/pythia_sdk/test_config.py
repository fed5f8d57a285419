from __future__ import annotations

from pythia_sdk import _semconv as sc
from pythia_sdk._config import GATEWAY_ENDPOINT, gateway_traces_url, load_settings


def test_defaults_export_to_the_gateway_without_content() -> None:
    settings = load_settings(environ={})
    assert settings.capture_content is False
    assert settings.export_traces is True
    assert settings.traces_endpoint == GATEWAY_ENDPOINT


def test_standard_variables() -> None:
    env = {sc.ENV_CAPTURE_CONTENT: "true", sc.ENV_OTLP_ENDPOINT: "http://collector:4318/"}
    settings = load_settings(environ=env)
    assert settings.capture_content is True
    assert settings.traces_endpoint == "http://collector:4318/v1/traces"
    env[sc.ENV_OTLP_TRACES_ENDPOINT] = "http://traces:1/x"
    assert load_settings(environ=env).traces_endpoint == "http://traces:1/x"
    assert load_settings(endpoint="http://arg/v1/traces", environ=env).traces_endpoint == \
        "http://arg/v1/traces"
    assert load_settings(environ={sc.ENV_SDK_DISABLED: "true"}).export_traces is False
    assert load_settings(environ={sc.ENV_TRACES_EXPORTER: "none"}).export_traces is False
    assert load_settings(environ={sc.ENV_PYTHIA_TRACES: "0"}).export_traces is False


def test_gateway_url_from_base_url() -> None:
    assert gateway_traces_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1/traces"
    assert gateway_traces_url("https://gw.example/v1/") == "https://gw.example/v1/traces"
