"""Instructions the SDK adds to a ``chat.completions.create``, counted by callgrind.

    /work/venv/bin/python benchmarks/sdk_instructions.py [--json out.json]

Why: timings of a few microseconds in an 800 us call move with each process's memory
layout and the machine's load (see ``sdk_overhead.py``); instruction counts do not. Each
row runs its calls under ``valgrind --tool=callgrind`` twice, 20 and 120 calls after the
same 20 warm-up calls, and the difference over 100 is one call's count on the calling
thread (the span worker and the exporter run on their own threads, counted apart:
``--separate-threads``). Rows as in ``sdk_overhead.py``, plus the plain client sending the
same four headers through ``extra_headers``. Needs valgrind; slow (about 2 minutes a row
on one core; rows run two at a time). The exporters post to a closed port: only the
calling thread is counted.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROWS = ("plain", "plain + 4 headers in extra_headers", "pythia tags only",
        "pythia (tags + span + metrics)", "otel openai-v2")
LOW, HIGH = 20, 120

CHILD = r"""
import os, sys
sys.path.insert(0, {bench_dir!r})
import sdk_overhead as b
import pythia_sdk as pythia
from opentelemetry.trace import NoOpTracerProvider
from pythia_sdk._config import Settings
from pythia_sdk._spans import Telemetry
from pythia_sdk.integrations.openai import instrument_client
row, calls = sys.argv[1], int(sys.argv[2])
client, extra = b.make_client(), {{}}
if row == "plain + 4 headers in extra_headers":
    from pythia_sdk.protocol import AgentTags, encode_headers
    extra = {{"extra_headers": {{**encode_headers(AgentTags("bench", "bench-1", "planner")),
                               "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}}}}
elif row == "pythia tags only":
    instrument_client(client, Telemetry(Settings(export_traces=False), NoOpTracerProvider()))
elif row.startswith("pythia ("):
    tracer_provider, meter_provider = b._telemetry_providers("http://127.0.0.1:9/v1/traces")
    instrument_client(client, Telemetry(Settings(), tracer_provider, meter_provider))
elif row == "otel openai-v2":
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    tracer_provider, meter_provider = b._telemetry_providers("http://127.0.0.1:9/v1/traces")
    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider,
                                    meter_provider=meter_provider)
with pythia.workflow("bench", session="bench-1"), pythia.agent("planner"):
    for _ in range(20 + calls):
        client.chat.completions.create(model="m", messages=b.MESSAGES, **extra)
os._exit(0)  # no exit-time flush in the count
"""


def count(script: str, row: str, calls: int, workdir: str) -> int:
    """Instructions on the calling thread for ``calls`` calls after the warm-up."""
    out = os.path.join(workdir, f"cg.{abs(hash((row, calls)))}")
    subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                    f"--callgrind-out-file={out}.%p", sys.executable, script, row, str(calls)],
                   check=True, capture_output=True)
    (main_thread,) = glob.glob(out + ".*-01")
    for line in open(main_thread):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {main_thread}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("sdk_instructions: valgrind is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        script = os.path.join(workdir, "child.py")
        with open(script, "w") as fh:
            fh.write(CHILD.format(bench_dir=os.path.dirname(os.path.abspath(__file__))))
        jobs = [(row, n) for row in ROWS for n in (LOW, HIGH)]
        with ThreadPoolExecutor(2) as pool:
            counts = dict(zip(jobs, pool.map(lambda job: count(script, *job, workdir), jobs)))
    per_call = {row: (counts[row, HIGH] - counts[row, LOW]) / (HIGH - LOW) for row in ROWS}
    base = per_call["plain"]
    print(f"{'configuration':40} {'instructions':>13} {'added':>9} {'added %':>8}")
    for row, value in per_call.items():
        print(f"{row:40} {value:13.0f} {value - base:9.0f} {100 * (value - base) / base:8.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"instructions_per_call": per_call}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
