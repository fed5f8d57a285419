#!/usr/bin/env bash
# Build (or reuse) the SGLang contract-test environment, then optionally run the contract tests.
#
#   bash .ci/sglang-contract-env.sh            # build if missing or stale; print the venv path
#   bash .ci/sglang-contract-env.sh --test     # ... then run tests/pythia_server/sglang_backend/test_contract_sglang.py
#
# A separate venv: SGLang pins CUDA torch and openai 2.8, which must never sit beside the
# gateway. Here: CPU torch 2.13.0 (a wheel on this machine's disk, else PyPI's CPU index is
# not reachable, so the script fails clearly), sglang --no-deps, and only the light
# dependencies its server_args / openai protocol / io_struct / kv_events modules import,
# all installed under a torch==2.13.0 constraint. About 2.6 GB; ~2-3 min to build here.
#
# Cache-friendly: the venv is reused when its stamp (this script's hash + versions) matches.
# Env: PYTHIA_SGLANG_VENV (default ~/.cache/pythia/sglang-contract-venv),
#      PYTHIA_TORCH_WHEEL (default /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl).
set -euo pipefail
cd "$(dirname "$0")/.."

SGLANG_VERSION="0.5.23"
TORCH_VERSION="2.13.0"
VENV="${PYTHIA_SGLANG_VENV:-$HOME/.cache/pythia/sglang-contract-venv}"
TORCH_WHEEL="${PYTHIA_TORCH_WHEEL:-/opt/wheels/torch-${TORCH_VERSION}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}"
PY=$(command -v python3.11 || command -v python3)

# What SGLang's modules import at module level, found by importing them (see docs/gpu.md).
LIGHT_DEPS=(
    fastapi uvicorn pydantic orjson msgspec pyzmq msgpack numpy requests aiohttp psutil
    packaging pybase64 setproctitle uvloop python-multipart partial_json_parser regex einops
    pillow prometheus-client tqdm interegular xxhash zstandard dill jsonschema ipython gguf
    "transformers==5.19.0" "xgrammar==0.2.7" "compressed-tensors==0.18.0" "apache-tvm-ffi==0.1.11"
    "soundfile==0.13.1" "sentencepiece==0.2.1" "openai==2.8.0" triton
    pytest pytest-asyncio pytest-timeout
)

stamp() {
    { cat "$0"; echo "$SGLANG_VERSION $TORCH_VERSION $TORCH_WHEEL"; } | sha256sum | cut -c1-16
}
want=$(stamp)

if [ -f "$VENV/.pythia-stamp" ] && [ "$(cat "$VENV/.pythia-stamp")" = "$want" ]; then
    echo "sglang contract venv up to date: $VENV" >&2
else
    start=$(date +%s)
    echo "building sglang contract venv in $VENV ..." >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
    if [ -f "$TORCH_WHEEL" ]; then
        pip install "$TORCH_WHEEL"
    else
        echo "no local torch wheel at $TORCH_WHEEL; trying PyPI torch==$TORCH_VERSION" >&2
        pip install "torch==$TORCH_VERSION"
    fi
    constraints="$VENV/constraints.txt"
    echo "torch==$TORCH_VERSION" > "$constraints"
    pip install --no-deps "sglang==$SGLANG_VERSION"
    # sglang's own pins (CUDA torch 2.14, flashinfer, ...) are skipped on purpose: pip will
    # print that sglang "requires torch==2.14.1"; that is expected here.
    if ! pip install -c "$constraints" "${LIGHT_DEPS[@]}" > "$VENV/deps.log" 2>&1; then
        cat "$VENV/deps.log" >&2
        exit 1
    fi
    "$VENV/bin/python" -c "import torch, sglang; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__; print('sglang', sglang.__version__, 'torch', torch.__version__)"
    echo "$want" > "$VENV/.pythia-stamp"
    echo "built in $(( $(date +%s) - start ))s; size $(du -sh "$VENV" | cut -f1)" >&2
fi

if [ "${1:-}" = "--test" ]; then
    # The project's own code runs from the work tree (PYTHONPATH), not installed: its
    # dependencies that SGLang's venv lacks are not needed by the modules under test.
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
        "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
        -o asyncio_mode=auto tests/pythia_server/sglang_backend/test_contract_sglang.py
else
    echo "$VENV"
fi
