"""Gateway cost per request: a fast fake OpenAI upstream, direct vs through ``pythia-server serve``.

Run: ``python benchmarks/gateway_overhead.py [--requests 2000] [--concurrency 16] [--json OUT]``.
Prints a table (requests/s, client-side latency p50/p99, and the gateway process's CPU
per request read from /proc) and writes JSON. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHUNK = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "bench",
          "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}
_USAGE = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28,
          "prompt_tokens_details": {"cached_tokens": 0}}


def upstream_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": "bench",
                                 "choices": [{"index": 0, "finish_reason": "length",
                                              "message": {"role": "assistant", "content": " tok" * 8}}],
                                 "usage": _USAGE})

        async def events():  # type: ignore[no-untyped-def]
            line = b"data: " + json.dumps(_CHUNK).encode() + b"\n\n"
            for _ in range(8):
                yield line
            yield b"data: " + json.dumps({**_CHUNK, "choices": [], "usage": _USAGE}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    async def health(request: Request) -> Response:
        return Response(b"")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models), Route("/health", health)])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(url: str, requests: int, concurrency: int, stream: bool) -> dict[str, float]:
    import aiohttp

    body = {"model": "bench", "messages": [{"role": "system", "content": "You are a benchmark. " * 20},
                                           {"role": "user", "content": "go"}], "max_tokens": 8, "stream": stream}
    headers = _tag_headers()
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                start = time.perf_counter()
                async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"rps": requests / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}


def _tag_headers() -> dict[str, str]:
    from pythia_sdk.protocol import AgentTags, encode_headers

    return encode_headers(AgentTags(workflow="bench", session="s", agent="a"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", default="gateway_overhead.json")
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream_port:
        import uvicorn

        uvicorn.run(upstream_app(), host="127.0.0.1", port=args.upstream_port, log_level="warning")
        return 0

    from pythia_server.sglang_backend.launcher import free_ports

    up_port, gw_port = free_ports(2)
    tmp = tempfile.mkdtemp(prefix="pythia-bench-")
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream-port", str(up_port)])
    gateway = subprocess.Popen([sys.executable, "-m", "pythia_server.cli", "serve", "--backend-url",
                                f"http://127.0.0.1:{up_port}", "--port", str(gw_port), "--db", f"{tmp}/bench.db"],
                               stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        line = gateway.stdout.readline() if gateway.stdout else ""
        if not re.search("serving on", line):
            raise SystemExit(f"gateway did not start: {line!r}")
        direct, through = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{gw_port}"
        for stream in (False, True):
            asyncio.run(drive(through, 200, args.concurrency, stream))  # warm up
            base = asyncio.run(drive(direct, args.requests, args.concurrency, stream))
            cpu0 = cpu_seconds(gateway.pid)
            via = asyncio.run(drive(through, args.requests, args.concurrency, stream))
            cpu_us = 1e6 * (cpu_seconds(gateway.pid) - cpu0) / args.requests
            rows.append({"mode": "stream" if stream else "whole", "direct_rps": base["rps"],
                         "gateway_rps": via["rps"], "direct_p50_ms": base["p50_ms"],
                         "gateway_p50_ms": via["p50_ms"], "gateway_p99_ms": via["p99_ms"],
                         "gateway_cpu_us_per_request": cpu_us})
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(30)
        upstream.wait(30)
    print(f"{args.requests} requests, concurrency {args.concurrency}, 8 output tokens, ~120 prompt tokens")
    header = ["mode", "direct req/s", "gateway req/s", "direct p50 ms", "gateway p50 ms", "gateway p99 ms",
              "gateway CPU us/req"]
    print("  ".join(f"{h:>14}" for h in header))
    for r in rows:
        print("  ".join(f"{v:>14}" if isinstance(v, str) else f"{v:>14.1f}" for v in r.values()))
    Path(args.json).write_text(json.dumps({"requests": args.requests, "concurrency": args.concurrency,
                                           "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
