"""SGLang launch commands with the flags Pythia's policies need, and what a running server supports.

Two halves:

* Before launch: `build_launch_plan(SGLangLaunchConfig)` turns a model, a replica count
  and a tensor-parallel width into one `ReplicaSpec` per replica (one GPU group each via
  `CUDA_VISIBLE_DEVICES`, its own HTTP and KV-event ports). Optional flags the installed
  SGLang does not have (known from `python -m sglang.launch_server --help`, see
  `probe_sglang_install`) are left out and recorded as degradations, never guessed.
* After launch: `features.FeatureSet.from_server_info(info)` reads `/server_info` and says,
  feature by feature, what the policies can count on and why not.

The gateway never imports sglang; the contract tests parse every command built here with
SGLang's own `prepare_server_args` and validation.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pythia_server.sglang_backend.features import Feature, FeatureSet, parse_version
from pythia_server.sglang_backend.launcher import ReplicaSpec

__all__ = [
    "CHECKED_SGLANG_VERSION",
    "Feature",
    "FeatureSet",
    "LaunchPlan",
    "PolicyFlag",
    "SGLangInstall",
    "SGLangLaunchConfig",
    "build_launch_plan",
    "describe_launch",
    "kv_events_config_json",
    "launch_config_from_args",
    "parse_version",
    "plan_from_args",
    "policy_flags",
    "probe_sglang_install",
    "sglang_replica_specs",
    "shell_line",
]

log = logging.getLogger(__name__)

DEFAULT_SGLANG_PORT = 30000
DEFAULT_KV_EVENTS_PORT = 5557
# Version the flags below were checked against (contract tests run it).
CHECKED_SGLANG_VERSION = "0.5.23"


@dataclass(frozen=True, slots=True)
class PolicyFlag:
    """One launch flag a policy relies on; `feature` names what is lost without it."""

    feature: str
    args: tuple[str, ...]
    why: str
    required: bool = False  # required: launching without it would be wrong, not just slower


@dataclass(frozen=True, slots=True)
class SGLangLaunchConfig:
    model_path: str
    replicas: int = 1
    tp: int = 1
    python: str = "python3"  # the interpreter of SGLang's own venv
    host: str = "127.0.0.1"
    base_port: int = DEFAULT_SGLANG_PORT
    gpus: tuple[str, ...] | None = None  # visible GPU ids to split; None: 0..replicas*tp-1
    page_size: int = 64  # = the KV-event block size = the gateway's prefix block size
    kv_events: bool = True
    kv_events_base_port: int = DEFAULT_KV_EVENTS_PORT
    session_radix_cache: bool = True
    served_model_name: str | None = None
    extra_args: tuple[str, ...] = ()
    log_dir: Path | None = None
    supported_flags: frozenset[str] | None = None  # from `--help`; None: not checked
    max_running_requests: int | None = None  # the policy's running cap (EngineSettings); None: SGLang's own
    mixed_chunk: bool = False  # the policy asks for --enable-mixed-chunk (EngineSettings)

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("an SGLang backend needs --model-path")
        if self.replicas < 1 or self.tp < 1:
            raise ValueError(f"replicas and tp must be >= 1 (got {self.replicas}, {self.tp})")
        if self.page_size < 1:
            raise ValueError(f"page_size must be >= 1 (got {self.page_size})")
        gpus = self.gpus if self.gpus is not None else tuple(str(i) for i in range(self.replicas * self.tp))
        if len(gpus) < self.replicas * self.tp:
            raise ValueError(
                f"{self.replicas} replicas x tp {self.tp} need {self.replicas * self.tp} GPUs, "
                f"only {len(gpus)} visible ({','.join(gpus) or 'none'})"
            )
        object.__setattr__(self, "gpus", tuple(gpus))


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    specs: tuple[ReplicaSpec, ...]
    kv_event_endpoints: tuple[tuple[str, str], ...]  # (pub, replay) per replica; empty if off
    degraded: tuple[Feature, ...]  # flags left out, with why


def policy_flags(config: SGLangLaunchConfig, kv_pub_port: int, kv_replay_port: int) -> list[PolicyFlag]:
    """The flags, in order. Priority needs fcfs (SGLang refuses priority with lpm)."""
    flags = [
        PolicyFlag("metrics", ("--enable-metrics",), "Prometheus /metrics feeds load when /v1/loads is missing"),
        PolicyFlag("cache_report", ("--enable-cache-report",), "usage.prompt_tokens_details.cached_tokens"),
        PolicyFlag(
            "priority_scheduling", ("--schedule-policy", "fcfs"), "priority scheduling requires fcfs or lof", True
        ),
        PolicyFlag("priority_scheduling", ("--enable-priority-scheduling",), "requests carry the scheduler's priority"),
        PolicyFlag("priority_default", ("--default-priority-value", "0"), "untagged requests sit at 0, not None"),
        PolicyFlag(
            "priority_retraction",
            ("--retraction-policy", "priority"),
            "under memory pressure retract low priority first",
        ),
        PolicyFlag("priority_eviction", ("--radix-eviction-policy", "priority"), "evict low-priority prefixes first"),
        PolicyFlag(
            "page_size", ("--page-size", str(config.page_size)), "KV-event block size = the gateway's block size"
        ),
    ]
    if config.max_running_requests is not None:
        flags.append(
            PolicyFlag(
                "running_cap",
                ("--max-running-requests", str(config.max_running_requests)),
                "a waiting queue for priority to order (policy/pythia/capacity.py)",
            )
        )
    if config.mixed_chunk:
        flags.append(
            PolicyFlag("mixed_chunk", ("--enable-mixed-chunk",), "running requests decode while new ones prefill")
        )
    if config.session_radix_cache:
        flags.append(
            PolicyFlag(
                "session_radix_cache",
                ("--enable-session-radix-cache",),
                "session_id pins a session's KV until /close_session",
            )
        )
    if config.kv_events:
        flags.append(
            PolicyFlag(
                "kv_events",
                ("--kv-events-config", kv_events_config_json(config.host, kv_pub_port, kv_replay_port)),
                "exact per-replica prefix index",
            )
        )
    return flags


def kv_events_config_json(host: str, pub_port: int, replay_port: int) -> str:
    """`--kv-events-config` value: ZMQ PUB plus a ROUTER replay socket, bound on loopback when local."""
    local = host in ("127.0.0.1", "localhost", "::1")
    bind_host = "127.0.0.1" if local else "*"
    config: dict[str, object] = {
        "publisher": "zmq",
        "endpoint": f"tcp://{bind_host}:{pub_port}",
        "replay_endpoint": f"tcp://{bind_host}:{replay_port}",
        "topic": "",
    }
    if local:
        config["bind"] = True  # a concrete host connects unless told to bind
    return json.dumps(config, separators=(",", ":"))


def build_launch_plan(config: SGLangLaunchConfig) -> LaunchPlan:
    """One ReplicaSpec per replica, flags the installed SGLang lacks left out and recorded."""
    specs: list[ReplicaSpec] = []
    endpoints: list[tuple[str, str]] = []
    degraded: dict[str, Feature] = {}
    assert config.gpus is not None
    for i in range(config.replicas):
        port = config.base_port + i
        pub_port = config.kv_events_base_port + 2 * i
        replay_port = pub_port + 1
        argv = [
            config.python,
            "-m",
            "sglang.launch_server",
            "--model-path",
            config.model_path,
            "--host",
            config.host,
            "--port",
            str(port),
            "--tp-size",
            str(config.tp),
        ]
        if config.served_model_name:
            argv += ["--served-model-name", config.served_model_name]
        flags = policy_flags(config, pub_port, replay_port)
        lost = {
            f.feature for f in flags if config.supported_flags is not None and f.args[0] not in config.supported_flags
        }
        for flag in flags:
            if flag.feature in lost:
                if flag.args[0] not in (config.supported_flags or ()):
                    reason = f"{flag.args[0]} not in this SGLang's --help ({flag.why})"
                    degraded.setdefault(flag.feature, Feature(flag.feature, False, reason))
                if not flag.required or flag.args[0] not in (config.supported_flags or ()):
                    continue
            argv += flag.args
        argv += config.extra_args
        gpus = config.gpus[i * config.tp : (i + 1) * config.tp]
        specs.append(
            ReplicaSpec(
                replica_id=f"sglang-{i}",
                argv=tuple(argv),
                env={"CUDA_VISIBLE_DEVICES": ",".join(gpus)},
                host=config.host,
                port=port,
                log_path=config.log_dir / f"sglang-{i}.log" if config.log_dir else None,
            )
        )
        if config.kv_events and "kv_events" not in lost:
            host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
            endpoints.append((f"tcp://{host}:{pub_port}", f"tcp://{host}:{replay_port}"))
    return LaunchPlan(tuple(specs), tuple(endpoints), tuple(degraded.values()))


def describe_launch(args: object) -> list[str]:
    """The exact launch commands for `serve --backend sglang --dry-run`, one line per replica.

    `args` is the serve command's argparse namespace (model_path, replicas, tp,
    sglang_python, host...); missing attributes take the defaults above.
    """
    config = launch_config_from_args(args)
    plan = build_launch_plan(config)
    lines = [shell_line(spec) for spec in plan.specs]
    if plan.kv_event_endpoints:
        lines.append("# KV events (ZMQ SUB, replay): " + "  ".join(f"{p} {r}" for p, r in plan.kv_event_endpoints))
    for feature in plan.degraded:
        lines.append(f"# degraded: {feature.name}: {feature.reason}")
    if config.supported_flags is None:
        lines.append(f"# flags not checked against the installed SGLang (checked against {CHECKED_SGLANG_VERSION})")
    return lines


def shell_line(spec: ReplicaSpec) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(spec.env.items()))
    return (env + " " if env else "") + shlex.join(spec.argv)


def launch_config_from_args(
    args: object, supported_flags: frozenset[str] | None = None, log_dir: str | Path | None = None
) -> SGLangLaunchConfig:
    """Build the config from the serve namespace; CUDA_VISIBLE_DEVICES (if set) lists usable GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = tuple(g.strip() for g in visible.split(",") if g.strip()) if visible else None
    log_dir = log_dir or getattr(args, "log_dir", None)
    engine = _policy_engine(args)
    return SGLangLaunchConfig(
        model_path=getattr(args, "model_path", None) or "",
        replicas=int(getattr(args, "replicas", 1) or 1),
        tp=int(getattr(args, "tp", 1) or 1),
        python=getattr(args, "sglang_python", None) or "python3",
        host=getattr(args, "sglang_host", None) or "127.0.0.1",
        base_port=int(getattr(args, "sglang_base_port", None) or DEFAULT_SGLANG_PORT),
        gpus=gpus,
        page_size=int(getattr(args, "block_size", None) or 64),
        extra_args=tuple(getattr(args, "sglang_arg", None) or ()),
        log_dir=Path(log_dir) if log_dir else None,
        max_running_requests=_running_cap(args, engine),
        mixed_chunk=bool(engine is not None and engine.enable_mixed_chunk),
        supported_flags=supported_flags,
    )


def _policy_engine(args: object) -> Any:
    """The serving policy's `EngineSettings` (None without a policy name)."""
    policy = getattr(args, "policy", None)
    if not isinstance(policy, str) or not policy:
        return None
    from pythia_server.policy.baselines.registry import (
        make_policy,  # heavy: only when planning
    )

    return make_policy(policy).engine


def _running_cap(args: object, engine: Any) -> int | None:
    """`--max-running-requests` if given, else the serving policy's cap (`EngineSettings`)."""
    explicit = getattr(args, "max_running_requests", None)
    if explicit is not None:
        return int(explicit)
    return engine.max_running_requests if engine is not None else None


def plan_from_args(args: object, log_dir: str | Path | None = None) -> LaunchPlan:
    """For a real launch: ask the installed SGLang which flags it has, plan, log what is lost.

    Raises ValueError (bad options, or SGLang not runnable with `--sglang-python`).
    """
    python = getattr(args, "sglang_python", None) or "python3"
    try:
        install = probe_sglang_install(python)
    except RuntimeError as exc:
        raise ValueError(f"{exc} (is SGLang installed there? see docs/gpu.md)") from None
    plan = build_launch_plan(launch_config_from_args(args, install.flags, log_dir))
    log.info("SGLang %s at %s", install.version or "(unknown version)", python)
    for feature in plan.degraded:
        log.warning("SGLang %s: %s off: %s", install.version or "?", feature.name, feature.reason)
    return plan


# ---- what the installed SGLang has (before launch) --------------------------------------


@dataclass(frozen=True, slots=True)
class SGLangInstall:
    python: str
    version: str | None
    flags: frozenset[str] = field(default_factory=frozenset)


def probe_sglang_install(python: str, timeout_s: float = 120.0) -> SGLangInstall:
    """Ask SGLang's interpreter for its version and `launch_server --help` flags (slow: imports sglang)."""
    try:
        version = (
            subprocess.run(
                [python, "-c", "import sglang; print(sglang.__version__)"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=True,
            ).stdout.strip()
            or None
        )
        help_text = subprocess.run(
            [python, "-m", "sglang.launch_server", "--help"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run SGLang with {python}: {exc}") from exc
    return SGLangInstall(python, version, frozenset(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", help_text)))


def sglang_replica_specs(
    model_path: str,
    replicas: int = 1,
    *,
    tp: int = 1,
    python: str = "python3",
    host: str = "127.0.0.1",
    base_port: int = DEFAULT_SGLANG_PORT,
    gpus: Sequence[str] | None = None,
    log_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    supported_flags: frozenset[str] | None = None,
) -> list[ReplicaSpec]:
    """Shortcut: the ReplicaSpecs for `replicas` SGLang servers of `model_path`."""
    config = SGLangLaunchConfig(
        model_path=model_path,
        replicas=replicas,
        tp=tp,
        python=python,
        host=host,
        base_port=base_port,
        gpus=tuple(gpus) if gpus is not None else None,
        log_dir=log_dir,
        extra_args=tuple(extra_args),
        supported_flags=supported_flags,
    )
    return list(build_launch_plan(config).specs)
