"""Replica processes at the OS level: spawn into their own process group, stop the whole group.

SGLang's launcher forks scheduler and detokenizer processes (one per TP rank), so signals
go to the process group, not the pid. Each child also asks the kernel for SIGTERM when
its parent dies (Linux `PR_SET_PDEATHSIG`), so a gateway killed with SIGKILL leaves no
replica holding GPUs. Output goes to one log file per replica, appended across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 15


async def spawn_process_group(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path | None, label: str
) -> asyncio.subprocess.Process:
    """Start `argv` in a new session with `env` added to ours; output appended to `log_path`."""
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        out.write(f"=== pythia: {label} at {stamp}: {' '.join(argv)}\n".encode())
        out.flush()
    else:
        out = open(os.devnull, "wb")  # noqa: SIM115
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: we signal SGLang's children too
            preexec_fn=_DEATH_SIGNAL,
        )
    finally:
        out.close()


async def terminate_process_group(process: asyncio.subprocess.Process, grace_s: float, name: str) -> int | None:
    """SIGTERM the group, SIGKILL after `grace_s`, reap; returns the exit code."""
    if process.returncode is not None:
        return process.returncode
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except asyncio.TimeoutError:
        log.warning("replica %s ignored SIGTERM for %.0fs; killing", name, grace_s)
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
    _signal_group(process.pid, signal.SIGKILL)  # stragglers left in the group
    return process.returncode


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _death_signal_setter() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when the gateway dies (no orphaned GPUs).

    libc is loaded here, in the parent: the child, forked from a process with threads,
    must not import or allocate before exec, only call prctl(PR_SET_PDEATHSIG).
    """
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigterm = int(signal.SIGTERM)

    def set_death_signal() -> None:
        prctl(1, sigterm)  # PR_SET_PDEATHSIG

    return set_death_signal


_DEATH_SIGNAL = _death_signal_setter()


def log_tail(path: Path | None) -> str:
    """The last lines of a replica's log on one line, for an error message."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - 4096, 0))
        lines = f.read().decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    return " | ".join(line.strip() for line in lines if line.strip() and not line.startswith("=== pythia"))
