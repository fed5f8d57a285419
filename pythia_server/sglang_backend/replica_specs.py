"""What a replica is to the supervisor: a command line and the URL it will serve; builders for them.

`sim_replica_specs` builds simulated engines (`pythia-server sim`), `attached_replica_specs`
servers someone else runs; `flags.build_launch_plan` builds real SGLang replicas.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """One replica: how to run it and where it will listen. `env` is added to ours."""

    replica_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        if self.log_path is not None:
            object.__setattr__(self, "log_path", Path(self.log_path))
        if not self.replica_id:
            raise ValueError("replica_id must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"replica {self.replica_id}: port {self.port} out of range")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{self.port}"

    @property
    def attached(self) -> bool:
        return not self.argv


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports free right now (the OS picks; a small race with other programs remains)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def sim_replica_specs(
    n: int,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    extra_args: Sequence[str] = (),
    log_dir: Path | str | None = None,
    first: int = 0,
) -> list[ReplicaSpec]:
    """Specs for n simulated engines (`pythia-server sim`), ids sim-{first}..; free ports if none."""
    ports = list(ports) if ports is not None else free_ports(n, host)
    if len(ports) != n:
        raise ValueError(f"{n} replicas need {n} ports, got {len(ports)}")
    return [
        ReplicaSpec(
            replica_id=f"sim-{first + i}",
            argv=(sys.executable, "-m", "pythia_server.cli", "sim", "--host", host, "--port", str(port), *extra_args),
            host=host,
            port=port,
            log_path=Path(log_dir) / f"sim-{first + i}.log" if log_dir is not None else None,
        )
        for i, port in enumerate(ports)
    ]


def attached_replica_specs(urls: Sequence[str]) -> list[ReplicaSpec]:
    """Specs for servers already running at `urls` (attach mode): probed, never spawned."""
    from urllib.parse import urlsplit

    specs = []
    for i, url in enumerate(urls):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname or not parts.port:
            raise ValueError(f"backend URL {url!r} needs a host and a port, e.g. http://127.0.0.1:30000")
        specs.append(ReplicaSpec(replica_id=f"backend-{i}", argv=(), host=parts.hostname, port=parts.port))
    return specs
