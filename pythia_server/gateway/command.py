"""``pythia-server serve``: the gateway in front of simulated replicas or running SGLang servers.

``--backend sim --replicas N`` spawns N ``pythia-server sim`` processes through the
:class:`~pythia_server.sglang_backend.launcher.ReplicaSupervisor` (readiness, restart
with backoff, graceful stop); ``--backend-url URL ...`` attaches to servers someone else
runs. SIGINT / SIGTERM stop the gateway (the store is flushed by its lifespan) and then
the replicas. One line with the URL is printed when the gateway is ready.

``--policy NAME`` picks the bundle the gateway drives (``make_policy``); spawned simulated
replicas get the launch flags it expects (``EngineSettings``: priority scheduling,
schedule and eviction policy), ``--page-size`` equal to the gateway's block size and their
own KV-event publisher (``--kv-events-config`` on free ports), so the gateway's prefix
index follows them.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "replica_specs", "sim_policy_args"]

DEFAULT_PORT = 8000


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "serve", help="run the gateway (OpenAI API) in front of SGLang or simulated replicas",
        description="Serve the OpenAI API and SGLang's /generate in front of replicas, recording every "
                    "call per workflow, session and agent.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--db", default=None, help="SQLite store file (default pythia.db, or $PYTHIA_DB_PATH)")
    parser.add_argument("--backend", choices=("sim", "sglang"), default="sim",
                        help="what to spawn when no --backend-url is given: simulated engines (default) or "
                             "real SGLang replicas, one per GPU group (see docs/gpu.md)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas to spawn (default 1)")
    parser.add_argument("--backend-url", nargs="+", metavar="URL", default=None,
                        help="attach to running SGLang-API servers instead of spawning replicas")
    parser.add_argument("--speedup", type=float, default=None,
                        help="simulated engines run this many times faster than real time")
    parser.add_argument("--sim-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for each `pythia-server sim` (repeatable), "
                             "e.g. --sim-arg=--kv-tokens=65536")
    sglang = parser.add_argument_group("SGLang backend (--backend sglang)")
    sglang.add_argument("--model-path", default=None, help="model to serve (Hugging Face id or local path)")
    sglang.add_argument("--tp", type=int, default=1, help="GPUs per replica (tensor parallel, default 1)")
    sglang.add_argument("--sglang-python", default="python3", metavar="PYTHON",
                        help="the Python of SGLang's own venv (default python3)")
    sglang.add_argument("--sglang-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for each SGLang replica (repeatable), "
                             "e.g. --sglang-arg=--mem-fraction-static=0.85")
    scaling = parser.add_argument_group("autoscaling (--backend sim; docs/server.md)")
    scaling.add_argument("--autoscale", choices=("reactive", "phase-adaptive"), default=None,
                         help="add and release simulated replicas with this autoscaler: reactive (KPA/HPA "
                              "thresholds) or phase-adaptive (Pythia's forecast; needs a pythia policy)")
    scaling.add_argument("--min-replicas", type=int, default=None, metavar="N",
                         help="fewest replicas the autoscaler keeps (default: --replicas)")
    scaling.add_argument("--max-replicas", type=int, default=None, metavar="N",
                         help="most replicas the autoscaler runs (default: 4 x --replicas)")
    scaling.add_argument("--cold-start-s", type=float, default=30.0, metavar="SECONDS",
                         help="a new replica's model load in engine seconds (default 30; divided by --speedup)")
    scaling.add_argument("--scale-target-calls", type=float, default=16.0, metavar="N",
                         help="calls (running + queued) per replica the autoscaler aims at (default 16)")
    parser.add_argument("--dry-run", action="store_true", help="print the replica launch commands and exit")
    parser.add_argument("--block-size", type=int, default=None, help="tokens per prefix block hash (default 64)")
    parser.add_argument("--policy", default=None,
                        help="policy bundle to drive: pythia (default), sglang (round robin, FCFS, LRU), sglang-router, "
                             "autellix, kvflow, continuum, dynamo-kv, ... (see docs/policies.md)")
    parser.add_argument("--router", default=None, help="override the policy's router by name (e.g. round_robin)")
    parser.add_argument("--session-idle-timeout", type=float, default=None, metavar="SECONDS",
                        help="end a session after this long without calls (default 600)")
    parser.add_argument("--max-body-mb", type=float, default=None, help="request body limit in MiB (default 32)")
    parser.add_argument("--no-profiler", action="store_true", default=None,
                        help="do not learn workflow types (no profiler, no /pythia/api/workflows data)")
    parser.add_argument("--profiler-quantile", type=float, default=None, metavar="Q",
                        help="output-length bound quantile (default 0.9)")
    parser.add_argument("--profiler-confidence", type=float, default=None, metavar="C",
                        help="confidence of the output-length bound (default 0.9)")
    parser.add_argument("--profiler-min-sessions", type=int, default=None, metavar="N",
                        help="sessions judged before a workflow type may turn proactive (default 8)")
    parser.add_argument("--profiler-promote-top1", type=float, default=None, metavar="X",
                        help="next-agent top-1 accuracy needed to turn proactive (default 0.7)")
    parser.add_argument("--profiler-promote-coverage", type=float, default=None, metavar="X",
                        help="output-bound coverage needed to turn proactive (default 0.85)")
    parser.add_argument("--no-assemble", action="store_true", default=None,
                        help="forward non-streaming calls as they are (their TTFT is then unknown)")
    parser.add_argument("--log-dir", default=None, help="where spawned replicas write their logs (default: a temp dir)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run)


def sim_policy_args(engine: Any, block_size: int, kv_ports: tuple[int, int] | None,
                    sessions: bool = False) -> list[str]:
    """``pythia-server sim`` flags for a bundle's ``EngineSettings``, the block size and KV events.

    ``sessions``: the bundle manages cache retention (cache hints), so the engines keep a
    session's KV until the gateway closes it (SGLang's session radix cache), as the
    ``--backend sglang`` launch plan does.

    The simulated engine has no flags for ``priority_preemption`` off or low values first;
    those settings are not passed (the sim preempts as SGLang does by default).
    """
    import json

    argv = ["--page-size", str(block_size), "--schedule-policy", engine.schedule_policy,
            "--radix-eviction-policy", engine.radix_eviction_policy]
    if engine.enable_priority_scheduling:
        argv.append("--enable-priority-scheduling")
    if getattr(engine, "max_running_requests", None) is not None:
        argv += ["--max-running-requests", str(engine.max_running_requests)]
    if getattr(engine, "enable_mixed_chunk", False):
        argv.append("--enable-mixed-chunk")
    if sessions:
        argv.append("--enable-session-radix-cache")
    if kv_ports is not None:
        config = {"publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{kv_ports[0]}",
                  "replay_endpoint": f"tcp://127.0.0.1:{kv_ports[1]}", "topic": ""}
        argv += ["--kv-events-config", json.dumps(config, separators=(",", ":"))]
    return argv


def replica_specs(args: argparse.Namespace, log_dir: str | None, config: Any = None) -> list[Any]:
    """The replicas to run: attached URLs, or spawned simulated engines (with the policy's flags)."""
    from pythia_server.cli import CliError
    from pythia_server.sglang_backend.launcher import attached_replica_specs

    if args.backend_url:
        try:
            return attached_replica_specs(args.backend_url)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if args.replicas < 1:
        raise CliError("--replicas must be at least 1")
    if args.backend == "sglang":
        from pythia_server.sglang_backend.flags import plan_from_args

        try:
            return list(plan_from_args(args, log_dir).specs)  # asks SGLang which flags it has
        except ValueError as exc:
            raise CliError(str(exc)) from None
    make = sim_spec_factory(args, log_dir, config)
    return [make(f"sim-{i}") for i in range(args.replicas)]


def sim_spec_factory(args: argparse.Namespace, log_dir: str | None, config: Any = None,
                     cold_start_s: float = 0.0) -> Any:
    """A function replica id -> spec of one simulated engine with the policy's flags.

    ``serve`` makes the initial pool with it and the autoscaler each replica it launches
    (``cold_start_s``: the launched engine's modelled model load).
    """
    from dataclasses import replace

    from pythia_server.cli import CliError
    from pythia_server.sglang_backend.replica_specs import free_ports, sim_replica_specs

    extra = list(args.sim_arg)
    if args.speedup is not None:
        if args.speedup <= 0:
            raise CliError("--speedup must be positive")
        extra += ["--speedup", str(args.speedup)]
    if cold_start_s > 0:
        extra += ["--cold-start-s", f"{cold_start_s:g}"]
    engine = sessions = None
    if config is not None:
        from pythia_server.policy.baselines.registry import make_policy

        bundle = make_policy(config.policy, block_size=config.block_size)
        engine, sessions = bundle.engine, bundle.cache_hints is not None

    handed_out: set[int] = set()  # not bound until the engines start: never hand one out twice

    def fresh_ports(n: int) -> list[int]:
        while True:
            ports = free_ports(n)
            if len(set(ports)) == n and not handed_out.intersection(ports):
                handed_out.update(ports)
                return ports

    def make(replica_id: str) -> Any:
        index = int(replica_id.rpartition("-")[2])
        ports = fresh_ports(3)
        spec = sim_replica_specs(1, host="127.0.0.1", ports=ports[:1], extra_args=extra, log_dir=log_dir,
                                 first=index)[0]
        if engine is None:
            return spec
        head, user = spec.argv[:len(spec.argv) - len(extra)], spec.argv[len(spec.argv) - len(extra):]
        ours = sim_policy_args(engine, config.block_size, (ports[1], ports[2]), sessions=bool(sessions))
        return replace(spec, argv=(*head, *ours, *user))  # the user's --sim-arg come last and win

    return make


def _config(args: argparse.Namespace) -> Any:
    from pythia_server.cli import CliError
    from pythia_server.config import GatewayConfig
    from pythia_server.policy.baselines.registry import make_policy
    from pythia_server.policy.routing import make_router

    overrides: dict[str, Any] = {
        "host": args.host, "port": args.port, "db_path": args.db, "block_size": args.block_size,
        "policy": args.policy, "router": args.router, "session_idle_timeout_s": args.session_idle_timeout,
        "max_body_bytes": int(args.max_body_mb * 1024 * 1024) if args.max_body_mb else None,
        "profiler_enabled": False if args.no_profiler else None,
        "profiler_quantile": args.profiler_quantile, "profiler_confidence": args.profiler_confidence,
        "profiler_min_sessions": args.profiler_min_sessions,
        "profiler_promote_top1": args.profiler_promote_top1,
        "profiler_promote_coverage": args.profiler_promote_coverage,
        "assemble_from_stream": False if args.no_assemble else None,
    }
    try:
        config = GatewayConfig.from_env(**overrides)
        if config.router:
            make_router(config.router)
        make_policy(config.policy, block_size=config.block_size)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return config


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import tempfile

    if args.dry_run:
        return _dry_run(args)
    config = _config(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_dir = args.log_dir
    if log_dir is None and not args.backend_url:
        log_dir = tempfile.mkdtemp(prefix="pythia-replicas-")
    from pythia_server.gateway.autoscaling import setup_from_args

    specs = replica_specs(args, log_dir, config)
    return asyncio.run(_serve(config, specs, log_dir, setup_from_args(args, config, log_dir)))


def _dry_run(args: argparse.Namespace) -> int:
    """Print the exact replica commands (SGLang: with every policy flag) without starting anything."""
    from pythia_server.cli import CliError
    from pythia_server.sglang_backend.flags import describe_launch, shell_line

    if args.backend == "sglang" and not args.backend_url:
        try:
            lines = describe_launch(args)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    else:
        specs = replica_specs(args, args.log_dir, _config(args))
        lines = [f"# attach {s.url}" if s.attached else shell_line(s) for s in specs]
    print("\n".join(lines), flush=True)
    return 0


async def _serve(config: Any, specs: list[Any], log_dir: str | None, autoscale: Any = None) -> int:
    import asyncio
    import signal

    import uvicorn

    from pythia_server.cli import CliError
    from pythia_server.gateway.app import build_app
    from pythia_server.sglang_backend.launcher import (
        ReplicaStartError,
        ReplicaState,
        ReplicaSupervisor,
        SupervisorConfig,
    )

    _check_store(config.db_path)
    app = build_app(config, [(s.replica_id, s.url) for s in specs])
    gateway = app.state.gateway

    def on_state_change(event: Any) -> None:
        if gateway.pool is not None and event.state is not ReplicaState.STOPPED:
            gateway.pool.set_health(event.replica_id, event.state is ReplicaState.READY, event.reason)

    attached = bool(specs) and specs[0].attached
    simulated = bool(specs) and all("sim" in spec.argv for spec in specs)
    # Attached servers are up or not; simulated engines start in seconds; SGLang loads weights.
    ready_timeout_s = 30.0 if attached else 120.0 if simulated else SupervisorConfig().ready_timeout_s
    supervisor = ReplicaSupervisor(specs, on_state_change=on_state_change,
                                   config=SupervisorConfig(ready_timeout_s=ready_timeout_s))
    server = _make_server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                                lifespan="on", timeout_graceful_shutdown=10))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        starting = asyncio.create_task(supervisor.start())
        stop_wait = asyncio.create_task(stopping.wait())
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            return 0
        stop_wait.cancel()
        try:
            starting.result()
        except ReplicaStartError as exc:
            where = f" (logs in {log_dir})" if log_dir else ""
            raise CliError(f"replicas did not start: {exc}{where}") from None
        if stopping.is_set():
            return 0
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if serving.done() and not server.started:
            raise CliError(f"could not listen on {config.host}:{config.port}")
        if stopping.is_set():
            await serving
            return 0
        host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
        sockets = [sock for s in server.servers for sock in s.sockets]
        port = sockets[0].getsockname()[1] if sockets else config.port
        if autoscale is not None:
            gateway.autoscaler = autoscale(gateway, supervisor)
            gateway.autoscaler.start()
        kind = "attached" if attached else "simulated" if simulated else "spawned"
        print(f"pythia-server: serving on http://{host}:{port} with {len(specs)} {kind} replica(s); "
              f"store {config.db_path}" + (f"; replica logs in {log_dir}" if log_dir else ""), flush=True)
        await serving
        return 0
    finally:
        if gateway.autoscaler is not None:
            await gateway.autoscaler.stop()
        await supervisor.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _check_store(db_path: str) -> None:
    """Fail before spawning anything if the store cannot be opened."""
    import sqlite3

    from pythia_server.cli import CliError
    from pythia_server.store.sqlite import Store

    try:
        Store(db_path).close()
    except (sqlite3.Error, OSError, ValueError) as exc:
        raise CliError(f"cannot open the store {db_path}: {exc}") from None


def _make_server(config: Any) -> Any:
    """A uvicorn server that leaves signals to ``serve`` (which must stop the replicas too).

    uvicorn's own handlers re-raise the signal after shutdown, which would kill the
    process before the replicas are stopped.
    """
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def,override]
            yield

    return Server(config)
