#!/usr/bin/env bash
# The SDK's openai tests against openai 2.x (the main suite runs openai 3.x, on httpx2):
# a small venv with openai 2.8.0 (SGLang's pin) on httpx, the OpenTelemetry SDK and the
# recording server's deps, and this project installed --no-deps.
#
#   bash .ci/openai2-sdk-tests.sh
#
# Env: PYTHIA_OPENAI2_VENV (default: a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=$(command -v python3.11 || command -v python3)
VENV="${PYTHIA_OPENAI2_VENV:-$(mktemp -d)/venv}"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "openai==2.8.0" opentelemetry-sdk \
    opentelemetry-exporter-otlp-proto-http pytest pytest-asyncio pytest-timeout starlette uvicorn
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -c "import openai, httpx; print('openai', openai.__version__, 'httpx', httpx.__version__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/pythia_sdk/integrations/test_openai.py tests/pythia_sdk/integrations/test_openai_headers.py \
    tests/pythia_sdk/test_deferred.py tests/pythia_sdk/test_spans.py
