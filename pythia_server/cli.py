"""``pythia-server``: one entry point; each subcommand lives beside the code it drives.

A command module exposes ``register(subparsers)`` and keeps heavy imports inside the
function it sets as ``func``, so ``pythia-server --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module registers one or more subcommands.
_COMMAND_MODULES: tuple[str, ...] = (
    "pythia_server.gateway.command",  # serve
    "pythia_server.reports.command",  # report
    "pythia_server.profiler.command",  # profile
    "pythia_server.sglang_backend.sim_command",  # sim
    "pythia_server.replay.command",  # workload
    "pythia_server.replay.bench_command",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pythia-server",
        description="Agent-native LLM serving in front of SGLang (or its simulated engine).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `pythia-server report | head`
        sys.stderr.close()
        return 0
    except CliError as exc:
        print(f"pythia-server {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2, no traceback."""


if __name__ == "__main__":
    # Run the imported module's main so CliError raised by subcommands is the same class.
    from pythia_server.cli import main as _main

    raise SystemExit(_main())
