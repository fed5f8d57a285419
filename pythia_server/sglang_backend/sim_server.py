"""The simulated SGLang server: SGLang 0.5's HTTP API over the simulated engine.

Routes follow ``python/sglang/srt/entrypoints/http_server.py``: ``/generate`` (native,
SSE ``data: {...}`` chunks with cumulative text, ending ``data: [DONE]``),
``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` (OpenAI shapes, usage with
``prompt_tokens_details.cached_tokens`` as ``--enable-cache-report`` gives), ``/health``,
``/health_generate``, ``/server_info`` (``/get_server_info``), ``/model_info``
(``/get_model_info``), ``/v1/loads``, ``/metrics``, ``/flush_cache``, ``/abort_request``,
``/open_session``, ``/close_session``.
The model name in OpenAI requests is echoed and not checked by default (what gateways and
clients pointed at "any" model rely on); ``strict_model_name`` reproduces newer SGLang's
check (400 "The model `X` does not exist", ``base:adapter`` names pass on the base). A
client that disconnects frees its request on the engine, streaming or not.

``build_app(SimServerConfig(...))`` is the in-process entry point; ``pythia-server sim``
runs the same app under uvicorn.

KV events, one seam: ``SimServerConfig.kv_event_listener`` is a factory called once at
start-up; its listener receives the engine's :mod:`pythia_server.engine.events` (if it
has ``close()``, that is called at shutdown). ``kv_events_config`` (SGLang's
``--kv-events-config`` JSON: ``endpoint``, ``replay_endpoint``, ``topic``) is the
shortcut that plugs in ``sglang_backend.kv_events.KvEventPublisher``; ``/server_info``
then carries SGLang's ``kv_events`` descriptor with the bound ports and the block size
(= ``page_size``, the block size of the hashes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Route

from pythia_server.engine.core import Engine
from pythia_server.engine.events import KvEventListener
from pythia_server.engine.live import LiveEngine, RequestStream
from pythia_server.engine.step_time import DEFAULT_CALIBRATION, StepTimeModel
from pythia_server.engine.types import (
    EngineConfig,
    EngineError,
    FinishedRequest,
    GenerateRequest,
)
from pythia_server.sglang_backend import sim_schema as schema
from pythia_server.sglang_backend.sim_metrics import (
    SGLANG_VERSION,
    SimMetrics,
    loads_body,
)
from pythia_server.sglang_backend.sim_schema import (
    BadRequest,
    ParsedRequest,
    error_body,
)
from pythia_server.sglang_backend.sim_streams import (
    SSEResponse,
    generate_events,
    openai_events,
    wait_for_disconnect,
)

__all__ = ["SimServerConfig", "build_app"]

_KV_BYTES_PER_TOKEN = 131_072  # Llama-3.1-8B: 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes
_WEIGHT_GB = 16.06
_ACCELERATOR = "NVIDIA H100 80GB HBM3"  # what SGLang's /v1/loads names the calibrated GPU (H100 SXM)
# EngineConfig fields SGLang keeps as scheduler constants, not server arguments: not in /server_info.
_SCHEDULER_CONSTANTS = frozenset({
    "output_length", "clip_max_new_tokens", "init_new_token_ratio", "min_new_token_ratio_factor",
    "new_token_ratio_decay_steps", "eos_token_id",
})


@dataclass(frozen=True, slots=True)
class SimServerConfig:
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    speedup: float = 1.0
    seed: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)
    calibration: str = DEFAULT_CALIBRATION  # table name (Meta-Llama-3.1-8B, Qwen3-8B) or JSON path
    step_overhead_ms: float = 1.0
    kv_event_listener: Callable[[], KvEventListener] | None = None
    kv_events_config: str | None = None  # SGLang's --kv-events-config JSON
    strict_model_name: bool = False  # reject OpenAI requests naming another model, as newer SGLang does
    max_body_bytes: int = 32 * 1024 * 1024


class SimServer:
    def __init__(self, config: SimServerConfig) -> None:
        self.config = config
        self.engine_config = replace(config.engine, seed=config.seed)
        self.step_time = StepTimeModel.load(config.calibration, config.step_overhead_ms)
        self._listener = self._make_listener(config)
        engine = Engine(self.engine_config, self.step_time, self._listener)
        self.metrics = SimMetrics(config.model, engine.load)
        self.live = LiveEngine(engine, config.speedup, on_step=self.metrics.on_step)
        self._started = False

    def _make_listener(self, config: SimServerConfig) -> KvEventListener | None:
        if config.kv_event_listener is not None:
            return config.kv_event_listener()
        if not config.kv_events_config:
            return None
        from pythia_server.sglang_backend.kv_events import KvEventPublisher

        try:
            options = json.loads(config.kv_events_config)
            endpoint = str(options["endpoint"]).replace("tcp://*:", "tcp://0.0.0.0:")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"kv_events_config must be JSON with an endpoint: {exc}") from exc
        replay = options.get("replay_endpoint")
        replay = str(replay).replace("tcp://*:", "tcp://0.0.0.0:") if replay else None
        return KvEventPublisher(endpoint, replay, topic=str(options.get("topic") or ""))

    def kv_events_descriptor(self) -> dict[str, Any] | None:
        """SGLang's /server_info ``kv_events`` entry: where to subscribe, and the block size."""
        endpoint = getattr(self._listener, "endpoint", None)
        if not isinstance(endpoint, str):
            return None
        host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
        replay = getattr(self._listener, "replay_endpoint", None)
        options = json.loads(self.config.kv_events_config) if self.config.kv_events_config else {}
        return {
            "endpoint_host": host,
            "endpoint_port_base": int(port),
            "replay_endpoint_port_base": int(replay.rpartition(":")[2]) if isinstance(replay, str) else None,
            "topic": str(options.get("topic") or ""),
            "dp_size": 1,
            "block_size": self.engine_config.page_size,
        }

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.live.start()

    async def stop(self) -> None:
        await self.live.stop()
        close = getattr(self._listener, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ helpers
    async def _json_body(self, request: Request) -> Any:
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            raise BadRequest(f"the request body exceeds {self.config.max_body_bytes} bytes", status=413)
        if not body:
            raise BadRequest("the request body is empty; expected a JSON object")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from exc

    async def _submit(self, request: GenerateRequest) -> RequestStream:
        await self.start()
        try:
            return self.live.submit(request)
        except EngineError as exc:
            raise BadRequest(str(exc)) from exc

    async def _wait(self, request: Request, stream: RequestStream) -> FinishedRequest | None:
        """The finished request, or None (and the request aborted) if the client left."""
        result = asyncio.ensure_future(stream.result())
        gone = asyncio.ensure_future(wait_for_disconnect(request))
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        if result in done:
            gone.cancel()
            return result.result()
        result.cancel()
        self.live.abort(stream.rid)
        return None

    # ------------------------------------------------------------------ routes
    async def generate(self, request: Request) -> Response:
        parsed = schema.parse_generate(await self._json_body(request))
        start = time.monotonic()
        stream = await self._submit(parsed.request)
        rid, prompt_tokens = parsed.request.rid, len(parsed.request.input_ids)
        if parsed.stream:
            return SSEResponse(generate_events(stream, rid, prompt_tokens, start, self.live.abort),
                               media_type="text/event-stream")
        finished = await self._wait(request, stream)
        if finished is None:
            return Response(status_code=499)
        return JSONResponse({
            "text": finished.text,
            "output_ids": finished.output_ids,
            "meta_info": schema.meta_info(rid, finished, prompt_tokens, finished.completion_tokens,
                                          finished.cached_tokens, time.monotonic() - start),
        })

    async def chat_completions(self, request: Request) -> Response:
        parsed = schema.parse_chat(await self._json_body(request), self.engine_config.context_length)
        return await self._openai(request, parsed, chat=True)

    async def completions(self, request: Request) -> Response:
        parsed = schema.parse_completion(await self._json_body(request), self.engine_config.context_length)
        return await self._openai(request, parsed, chat=False)

    async def _openai(self, request: Request, parsed: ParsedRequest, chat: bool) -> Response:
        if self.config.strict_model_name and parsed.model.split(":", 1)[0] != self.config.model:
            raise BadRequest(f"The model `{parsed.model}` does not exist. The served model name is "
                             f"`{self.config.model}`.", "model")
        stream = await self._submit(parsed.request)
        created = schema.now_unix()
        if parsed.stream:
            return SSEResponse(openai_events(stream, parsed, created, chat, self.live.abort),
                               media_type="text/event-stream")
        finished = await self._wait(request, stream)
        if finished is None:
            return Response(status_code=499)
        if finished.finish_reason.get("type") == "abort":
            return JSONResponse(error_body("the request was aborted", status=503, kind="aborted"), status_code=503)
        reason, matched = schema.openai_finish_reason(finished)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": finished.text,
                                               "reasoning_content": None, "tool_calls": None}}
        else:
            choice = {"index": 0, "text": finished.text}
        choice.update({"logprobs": None, "finish_reason": reason, "matched_stop": matched})
        return JSONResponse({
            "id": parsed.request.rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": parsed.model,
            "choices": [choice],
            "usage": schema.usage(finished),
        })

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.config.model, "object": "model", "created": schema.now_unix(), "owned_by": "sglang",
            "root": self.config.model, "max_model_len": self.engine_config.context_length,
        }]})

    async def health(self, request: Request) -> Response:
        await self.start()
        return Response(status_code=200)

    async def health_generate(self, request: Request) -> Response:
        probe = GenerateRequest(rid=f"HEALTH_CHECK_{time.monotonic_ns()}", input_ids=[128000], max_new_tokens=1,
                                ignore_eos=True)
        finished = await (await self._submit(probe)).result()
        return Response(status_code=200 if finished.completion_tokens == 1 else 503)

    async def server_info(self, request: Request) -> Response:
        cfg = self.engine_config
        # SGLang's names: `--disable-priority-preemption` is our enable flag negated, `seed` is `random_seed`.
        info_args = {k: v for k, v in asdict(cfg).items() if k not in _SCHEDULER_CONSTANTS}
        info_args["disable_priority_preemption"] = not info_args.pop("enable_priority_preemption")
        info_args["random_seed"] = info_args.pop("seed")
        info: dict[str, Any] = {
            "model_path": self.config.model,
            "tokenizer_path": self.config.model,
            "served_model_name": self.config.model,
            **info_args,
            "max_running_requests": cfg.running_request_cap,
            "enable_metrics": True,
            "enable_cache_report": True,
            "kv_events_config": self.config.kv_events_config,
            "kv_events": self.kv_events_descriptor(),
            "version": SGLANG_VERSION,
            # The one key real SGLang lacks: what the simulator is, for a human reading this.
            "pythia_sim": {
                "speedup": self.config.speedup,
                "calibration": self.step_time.name,
                "step_overhead_ms": self.step_time.overhead_ms,
            },
            "internal_states": [{"max_total_num_tokens": cfg.max_total_num_tokens,
                                 "last_gen_throughput": self.metrics.gen_throughput(self.live.now_s)}],
        }
        return JSONResponse(info)

    async def model_info(self, request: Request) -> Response:
        return JSONResponse({
            "model_path": self.config.model, "tokenizer_path": self.config.model, "is_generation": True,
            "preferred_sampling_params": None, "weight_version": "default", "has_image_understanding": False,
            "has_audio_understanding": False, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        })

    async def loads(self, request: Request) -> Response:
        load = self.live.load()
        kv_gb = round(load.max_total_num_tokens * _KV_BYTES_PER_TOKEN / 1e9, 2)
        return JSONResponse(loads_body(load, self.metrics.gen_throughput(self.live.now_s), kv_gb, _WEIGHT_GB, _ACCELERATOR))

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def flush_cache(self, request: Request) -> Response:
        ok = self.live.flush_cache()
        message = ("Cache flushed.\nPlease check backend logs for more details. (When there are running or "
                   "waiting requests, the operation will not be performed.)\n")
        return PlainTextResponse(message, status_code=200 if ok else 400)

    async def open_session(self, request: Request) -> Response:
        """SGLang's /open_session: returns the session id (given, or a new one)."""
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        session_id = body.get("session_id") or uuid.uuid4().hex
        if not isinstance(session_id, str):
            raise BadRequest("session_id must be a string", "session_id")
        return JSONResponse(session_id)

    async def close_session(self, request: Request) -> Response:
        """SGLang's /close_session: the session's KV stops being preferred in the cache."""
        body = await self._json_body(request)
        session_id = body.get("session_id") if isinstance(body, dict) else None
        if not isinstance(session_id, str) or not session_id:
            raise BadRequest("session_id must be a non-empty string", "session_id")
        self.live.close_session(session_id)
        return Response(status_code=200)

    async def abort_request(self, request: Request) -> Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if body.get("abort_all"):
            for rid in self.live.active_rids():
                self.live.abort(rid)
            return Response(status_code=200)
        rid = body.get("rid")
        if not isinstance(rid, str) or not rid:
            raise BadRequest("rid must be a non-empty string", "rid")
        self.live.abort(rid)
        return Response(status_code=200)


def _handle(method: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            return await method(request)
        except BadRequest as exc:
            return JSONResponse(error_body(str(exc), exc.param, exc.status), status_code=exc.status)

    return endpoint


def build_app(config: SimServerConfig | None = None) -> Starlette:
    """The simulated server as an ASGI app; the engine starts with the app's lifespan."""
    server = SimServer(config or SimServerConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    routes = [
        Route("/generate", _handle(server.generate), methods=["POST"]),
        Route("/v1/chat/completions", _handle(server.chat_completions), methods=["POST"]),
        Route("/v1/completions", _handle(server.completions), methods=["POST"]),
        Route("/v1/models", _handle(server.models), methods=["GET"]),
        Route("/health", _handle(server.health), methods=["GET"]),
        Route("/health_generate", _handle(server.health_generate), methods=["GET"]),
        Route("/server_info", _handle(server.server_info), methods=["GET"]),
        Route("/get_server_info", _handle(server.server_info), methods=["GET"]),
        Route("/model_info", _handle(server.model_info), methods=["GET"]),
        Route("/get_model_info", _handle(server.model_info), methods=["GET"]),
        Route("/v1/loads", _handle(server.loads), methods=["GET"]),
        Route("/metrics", _handle(server.prometheus), methods=["GET"]),
        Route("/flush_cache", _handle(server.flush_cache), methods=["GET", "POST"]),
        Route("/abort_request", _handle(server.abort_request), methods=["POST"]),
        Route("/open_session", _handle(server.open_session), methods=["POST"]),
        Route("/close_session", _handle(server.close_session), methods=["POST"]),
    ]
    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse(error_body(str(detail), status=status), status_code=status)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.sim = server
    return app
