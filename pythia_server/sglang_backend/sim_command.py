"""``pythia-server sim``: one simulated SGLang replica on HTTP (uvicorn, quiet logs).

The gateway spawns replicas with exactly this command line (see
``sglang_backend/launcher.py``), so its flags are a stable interface.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run one simulated SGLang engine replica (SGLang's HTTP API, no GPU)",
        description="Serve SGLang 0.5's HTTP API from the simulated engine.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct", help="served model name")
    parser.add_argument("--speedup", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kv-tokens", type=int, default=None, help="KV cache capacity in tokens "
                        "(SGLang's max_total_num_tokens; default 400000)")
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--max-running-requests", type=int, default=None)
    parser.add_argument("--chunked-prefill-size", type=int, default=None)
    parser.add_argument("--max-prefill-tokens", type=int, default=None)
    parser.add_argument("--schedule-policy", choices=("fcfs", "lpm", "lof"), default=None)
    parser.add_argument("--radix-eviction-policy", choices=("lru", "lfu", "priority"), default=None)
    parser.add_argument("--enable-priority-scheduling", action="store_true")
    parser.add_argument("--enable-mixed-chunk", action="store_true")
    parser.add_argument("--disable-radix-cache", action="store_true")
    parser.add_argument("--enable-session-radix-cache", action="store_true",
                        help="keep a finished request's KV for its session_id until /close_session")
    parser.add_argument("--calibration", default=None, help="timing table: Meta-Llama-3.1-8B (default), "
                        "Qwen3-8B, or a JSON file path")
    parser.add_argument("--step-overhead-ms", type=float, default=None)
    parser.add_argument("--kv-events-config", default=None, help="SGLang's KV events JSON, e.g. "
                        '\'{"publisher":"zmq","endpoint":"tcp://127.0.0.1:5557","replay_endpoint":'
                        '"tcp://127.0.0.1:5558","topic":""}\'')
    parser.add_argument("--strict-model-name", action="store_true",
                        help="reject OpenAI requests whose model is not --model (newer SGLang's check)")
    parser.add_argument("--cold-start-s", type=float, default=0.0, metavar="SECONDS",
                        help="model load to model: listen only after this many engine seconds "
                             "(divided by --speedup), as SGLang does while loading weights (default 0)")
    parser.add_argument("--log-level", default="warning")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """SimServerConfig from parsed flags; bad values become a CliError."""
    from dataclasses import replace

    from pythia_server.cli import CliError
    from pythia_server.engine.step_time import DEFAULT_CALIBRATION, StepTimeModel
    from pythia_server.engine.types import EngineConfig
    from pythia_server.sglang_backend.sim_server import SimServerConfig

    overrides = {
        "max_total_num_tokens": args.kv_tokens,
        "page_size": args.page_size,
        "max_running_requests": args.max_running_requests,
        "chunked_prefill_size": args.chunked_prefill_size,
        "max_prefill_tokens": args.max_prefill_tokens,
        "schedule_policy": args.schedule_policy,
        "radix_eviction_policy": args.radix_eviction_policy,
    }
    flags = {
        "enable_priority_scheduling": args.enable_priority_scheduling,
        "enable_mixed_chunk": args.enable_mixed_chunk,
        "disable_radix_cache": args.disable_radix_cache,
        "enable_session_radix_cache": args.enable_session_radix_cache,
    }
    if args.kv_events_config is not None:
        import json

        try:
            options = json.loads(args.kv_events_config)
        except ValueError as exc:
            raise CliError(f"--kv-events-config is not valid JSON: {exc}") from exc
        if not isinstance(options, dict) or not isinstance(options.get("endpoint"), str):
            raise CliError("--kv-events-config needs an \"endpoint\" string")
    if args.speedup <= 0:
        raise CliError("--speedup must be positive")
    if args.cold_start_s < 0:
        raise CliError("--cold-start-s must not be negative")
    for name in ("kv_tokens", "page_size", "max_running_requests", "max_prefill_tokens"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise CliError(f"--{name.replace('_', '-')} must be positive")
    try:
        engine = replace(
            EngineConfig(),
            **{k: v for k, v in overrides.items() if v is not None},
            **{k: v for k, v in flags.items() if v},
        )
        calibration = args.calibration or DEFAULT_CALIBRATION
        overhead = args.step_overhead_ms if args.step_overhead_ms is not None else 1.0
        StepTimeModel.load(calibration, overhead)  # fail here, not inside uvicorn
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return SimServerConfig(model=args.model, speedup=args.speedup, seed=args.seed, engine=engine,
                           calibration=calibration, step_overhead_ms=overhead,
                           kv_events_config=args.kv_events_config, strict_model_name=args.strict_model_name)


def run(args: argparse.Namespace) -> int:
    import time

    import uvicorn

    from pythia_server.sglang_backend.sim_server import build_app

    config = config_from_args(args)
    try:
        app = build_app(config)
    except Exception as exc:  # a KV-event socket that cannot bind (zmq.ZMQError), a bad table
        from pythia_server.cli import CliError

        raise CliError(f"cannot start the simulated engine: {exc}") from exc
    if args.cold_start_s > 0:  # not listening yet: the supervisor sees a replica still loading
        time.sleep(args.cold_start_s / config.speedup)
    print(f"pythia-server sim: serving {config.model} (simulated, speedup {config.speedup:g}) "
          f"on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
