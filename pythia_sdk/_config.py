"""SDK settings, read once when :func:`pythia_sdk.instrument` runs (never on the hot path).

Precedence for where traces go: ``instrument(endpoint=...)``, then the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, then the
gateway itself (the instrumented openai client's base URL host + ``/v1/traces``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pythia_sdk import _semconv as sc

_FALSE = frozenset({"0", "false", "no", "off", "none", ""})

#: Sentinel endpoint meaning "the gateway the openai client talks to".
GATEWAY_ENDPOINT = "gateway"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the SDK does besides tagging: export spans, and whether content is captured."""

    capture_content: bool = False
    export_traces: bool = True
    #: A full OTLP/HTTP traces URL, or :data:`GATEWAY_ENDPOINT`.
    traces_endpoint: str = GATEWAY_ENDPOINT


def _truthy(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() not in _FALSE


def load_settings(
    *,
    endpoint: str | None = None,
    capture_content: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from arguments first, then the environment."""
    env = os.environ if environ is None else environ
    if capture_content is None:
        capture_content = _truthy(env.get(sc.ENV_CAPTURE_CONTENT), False)
    export = not _truthy(env.get(sc.ENV_SDK_DISABLED), False)
    export = export and _truthy(env.get(sc.ENV_PYTHIA_TRACES), True)
    exporter_name = env.get(sc.ENV_TRACES_EXPORTER)
    if exporter_name is not None and exporter_name.strip().lower() == "none":
        export = False
    if endpoint is None:
        endpoint = env.get(sc.ENV_OTLP_TRACES_ENDPOINT) or None
    if endpoint is None and env.get(sc.ENV_OTLP_ENDPOINT):
        endpoint = env[sc.ENV_OTLP_ENDPOINT].rstrip("/") + "/v1/traces"
    return Settings(
        capture_content=capture_content,
        export_traces=export,
        traces_endpoint=endpoint or GATEWAY_ENDPOINT,
    )


def gateway_traces_url(base_url: str) -> str:
    """``http://host:port/v1`` (an openai base URL) -> ``http://host:port/v1/traces``."""
    from urllib.parse import urlsplit

    parts = urlsplit(str(base_url))
    return f"{parts.scheme or 'http'}://{parts.netloc}/v1/traces"
