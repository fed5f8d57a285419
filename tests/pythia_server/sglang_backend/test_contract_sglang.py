"""Contract tests against the real `sglang` package: they fail when SGLang changes incompatibly.

They run inside the separate SGLang venv (`bash .ci/sglang-contract-env.sh --test`) and
skip, saying so, anywhere sglang is not importable (the gateway's own venv never has it).
What they prove without a GPU:

* every launch command `flags.py` builds parses with SGLang's own `prepare_server_args`,
  resolves, and passes `check_server_args`, with our intent intact in the resolved values
  (resolution needs an accelerator, so `--device cpu` is appended, last one wins);
* `FeatureSet` reads a `/server_info` built by SGLang's own code;
* every payload the gateway's client builds validates against SGLang's request models;
* SGLang's own ZMQ KV-event publisher feeds our subscriber, replay included, and SGLang's
  decoder reads what our publisher sends.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

if importlib.util.find_spec("sglang") is None:
    pytest.skip(
        "sglang is not installed in this environment; run `bash .ci/sglang-contract-env.sh --test`",
        allow_module_level=True,
    )


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """torchvision's PyPI build does not load beside CPU torch 2.13; SGLang only needs names from it."""

    class Module(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            child = _TorchvisionStub.Module(f"{self.__name__}.{name}")
            setattr(self, name, child)
            return child

        def __call__(self, *args: object, **kwargs: object) -> None:
            return None

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = self.Module(spec.name)
        module.__path__ = []
        module.__version__ = "0.28.0"  # transformers parses it
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


try:
    import torchvision  # noqa: F401
except Exception:
    sys.modules.pop("torchvision", None)
    sys.meta_path.insert(0, _TorchvisionStub())

import msgspec  # noqa: E402
import pydantic  # noqa: E402
import sglang  # noqa: E402
from sglang.srt.disaggregation import kv_events as sgl_kv  # noqa: E402
from sglang.srt.entrypoints.api_contract import generate_contract_error  # noqa: E402
from sglang.srt.entrypoints.openai.protocol import (  # noqa: E402
    ChatCompletionRequest,
    CompletionRequest,
)
from sglang.srt.managers.io_struct import (  # noqa: E402
    AbortReq,
    CloseSessionReqInput,
    GenerateReqInput,
)
from sglang.srt.runtime_context import describe_kv_events_publisher  # noqa: E402
from sglang.srt.server_args import ServerArgs, prepare_server_args  # noqa: E402

from pythia_server.engine.events import AllBlocksCleared, BlockRemoved, BlockStored  # noqa: E402
from pythia_server.sglang_backend import client  # noqa: E402
from pythia_server.sglang_backend.flags import (  # noqa: E402
    CHECKED_SGLANG_VERSION,
    FeatureSet,
    SGLangLaunchConfig,
    build_launch_plan,
    kv_events_config_json,
    policy_flags,
    probe_sglang_install,
)
from pythia_server.sglang_backend.kv_events import KvEventPublisher, encode_batch  # noqa: E402
from pythia_server.sglang_backend.kv_index import KvEventHub  # noqa: E402
from pythia_server.sglang_backend.launcher import free_ports  # noqa: E402
from pythia_server.tokens import block_hashes  # noqa: E402

# Llama-3.1-8B's config.json: resolution reads the architecture, never weights.
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "hidden_act": "silu",
    "torch_dtype": "bfloat16",
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "tie_word_embeddings": False,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama-3.1-8b")
    (path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    return path


def sglang_argv(argv: tuple[str, ...]) -> list[str]:
    """The part after `python -m sglang.launch_server`."""
    assert argv[1:3] == ("-m", "sglang.launch_server"), argv
    return list(argv[3:])


def resolve(argv: list[str]) -> ServerArgs:
    """Parse, resolve (on CPU: needs no accelerator) and validate, as `launch_server` does."""
    server_args = prepare_server_args([*argv, "--device", "cpu"])
    server_args.resolve_once()
    server_args.check_server_args()
    return server_args


def test_installed_version_is_the_one_checked() -> None:
    assert sglang.__version__ == CHECKED_SGLANG_VERSION


# ---- launch commands -----------------------------------------------------------------------

LAUNCH_CASES: dict[str, Callable[[Path], SGLangLaunchConfig]] = {
    "one replica": lambda m: SGLangLaunchConfig(str(m)),
    "four replicas": lambda m: SGLangLaunchConfig(str(m), replicas=4),
    "tp 2": lambda m: SGLangLaunchConfig(str(m), replicas=2, tp=2),
    "public host, named": lambda m: SGLangLaunchConfig(str(m), host="0.0.0.0", served_model_name="llama-8b"),
    "no kv events, no sessions": lambda m: SGLangLaunchConfig(str(m), kv_events=False, session_radix_cache=False),
    "page 16 + extra args": lambda m: SGLangLaunchConfig(
        str(m), page_size=16, extra_args=("--mem-fraction-static", "0.85", "--max-running-requests", "128")
    ),
}


@pytest.mark.parametrize("case", list(LAUNCH_CASES))
def test_every_launch_command_parses_resolves_and_validates(case: str, model_dir: Path) -> None:
    config = LAUNCH_CASES[case](model_dir)
    plan = build_launch_plan(config)
    assert len(plan.specs) == config.replicas
    for spec in plan.specs:
        resolved = resolve(sglang_argv(spec.argv)).resolved_dict()
        assert resolved["port"] == spec.port and resolved["host"] == config.host
        assert resolved["tp_size"] == config.tp
        assert resolved["enable_metrics"] and resolved["enable_cache_report"]
        assert resolved["schedule_policy"] == "fcfs" and resolved["enable_priority_scheduling"]
        assert resolved["default_priority_value"] == 0 and resolved["retraction_policy"] == "priority"
        assert resolved["radix_eviction_policy"] == "priority" and not resolved["disable_radix_cache"]
        assert resolved["page_size"] == config.page_size
        assert resolved["enable_session_radix_cache"] == config.session_radix_cache
        if config.served_model_name:
            assert resolved["served_model_name"] == config.served_model_name
        if config.kv_events:
            kv = sgl_kv.KVEventsConfig.from_cli(resolved["kv_events_config"])
            assert kv.publisher == "zmq" and kv.replay_endpoint
        else:
            assert not resolved["kv_events_config"]


def test_validation_is_real_priority_with_lpm_is_refused(model_dir: Path) -> None:
    (spec,) = build_launch_plan(SGLangLaunchConfig(str(model_dir))).specs
    with pytest.raises(AssertionError, match="priority scheduling"):
        resolve([*sglang_argv(spec.argv), "--schedule-policy", "lpm"])


def test_every_policy_flag_is_a_real_sglang_option() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    for flag in policy_flags(SGLangLaunchConfig("m"), 5557, 5558):
        assert flag.args[0] in parser._option_string_actions, flag


def test_probe_reads_version_and_flags_from_the_install() -> None:
    install = probe_sglang_install(sys.executable)
    assert install.version == sglang.__version__
    needed = {f.args[0] for f in policy_flags(SGLangLaunchConfig("m"), 5557, 5558)}
    assert needed <= install.flags
    plan = build_launch_plan(SGLangLaunchConfig("m", supported_flags=install.flags))
    assert plan.degraded == ()


def test_feature_set_reads_sglang_server_info(model_dir: Path) -> None:
    (spec,) = build_launch_plan(SGLangLaunchConfig(str(model_dir))).specs
    server_args = resolve(sglang_argv(spec.argv))
    info = {
        **server_args.resolved_dict(),
        "kv_events": describe_kv_events_publisher(server_args),
        "version": sglang.__version__,
    }
    info = json.loads(json.dumps(msgspec.to_builtins(info), default=str))  # as it crosses HTTP
    features = FeatureSet.from_server_info(info, loads_endpoint=True)
    assert features.version == sglang.__version__
    assert features.degraded() == [], features.degraded()
    assert info["kv_events"]["block_size"] == 64 and info["kv_events"]["replay_endpoint_port_base"] == 5558

    plain = resolve(["--model-path", str(model_dir)])
    plain_info = {
        **plain.resolved_dict(),
        "kv_events": describe_kv_events_publisher(plain),
        "version": sglang.__version__,
    }
    off = {
        f.name
        for f in FeatureSet.from_server_info(
            json.loads(json.dumps(msgspec.to_builtins(plain_info), default=str))
        ).degraded()
    }
    assert off == {
        "metrics",
        "cache_report",
        "priority_scheduling",
        "priority_eviction",
        "priority_retraction",
        "session_radix_cache",
        "kv_events",
    }


# ---- payloads the gateway sends ------------------------------------------------------------

CHAT_BODIES = [
    {"model": "llama", "messages": [{"role": "user", "content": "hi"}]},
    {
        "model": "llama",
        "messages": [{"role": "system", "content": "You are a planner."}, {"role": "user", "content": "plan"}],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "stream": True,
        "user": "u1",
    },
    {
        "model": "llama",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "multi"}]}],
        "stream": True,
        "stream_options": {"include_usage": False},
        "max_completion_tokens": 16,
        "seed": 7,
        "n": 1,
    },
    {
        "model": "llama",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "search",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "auto",
        "nvext": {"agent_hints": {"priority": 3}},
    },
]
COMPLETION_BODIES = [
    {"model": "llama", "prompt": "Once upon"},
    {"model": "llama", "prompt": ["a", "b"], "max_tokens": 8, "stream": True, "temperature": 0, "echo": False},
]
GENERATE_BODIES = [
    {"text": "hello", "sampling_params": {"max_new_tokens": 16, "temperature": 0.7}},
    {"input_ids": [1, 2, 3, 4], "sampling_params": {"max_new_tokens": 0}},  # prefill-only warm request
    {"text": "hi", "sampling_params": {"max_new_tokens": 8, "ignore_eos": True, "stop": ["."]}, "stream": True},
    {"text": "session turn", "session_id": "sess-1", "sampling_params": {"max_new_tokens": 4}},
]


@pytest.mark.parametrize("body", CHAT_BODIES)
@pytest.mark.parametrize("priority", [None, -5, 10])
def test_chat_payloads_validate(body: dict, priority: int | None) -> None:
    payload = client.build_openai_payload(body, rid="req-1", include_usage=True, priority=priority)
    request = ChatCompletionRequest.model_validate(payload)
    assert request.rid == "req-1" and request.priority == priority and "nvext" not in payload
    if body.get("stream"):
        assert request.stream_options is not None and request.stream_options.include_usage


@pytest.mark.parametrize("body", COMPLETION_BODIES)
def test_completion_payloads_validate(body: dict) -> None:
    payload = client.build_openai_payload(body, rid="req-2", include_usage=True, priority=1)
    request = CompletionRequest.model_validate(payload)
    assert request.rid == "req-2" and request.priority == 1


@pytest.mark.parametrize("body", GENERATE_BODIES)
def test_generate_payloads_validate(body: dict) -> None:
    payload = client.build_generate_payload(body, rid="req-3", priority=2)
    assert generate_contract_error(payload) is None
    request = pydantic.TypeAdapter(GenerateReqInput).validate_python(payload)
    assert request.rid == "req-3" and request.priority == 2
    assert request.session_id == body.get("session_id")


SESSION = "wf-session-7"


@pytest.mark.parametrize("body", CHAT_BODIES)
def test_chat_payloads_with_session_id_validate(body: dict) -> None:
    payload = client.build_openai_payload(body, rid="req-5", include_usage=True, priority=1, session_id=SESSION)
    request = ChatCompletionRequest.model_validate(payload)
    assert request.session_id == SESSION and request.session_params is None


@pytest.mark.parametrize("body", COMPLETION_BODIES)
def test_completion_payloads_with_session_id_validate(body: dict) -> None:
    payload = client.build_openai_payload(body, rid="req-6", include_usage=True, session_id=SESSION)
    assert CompletionRequest.model_validate(payload).session_id == SESSION


@pytest.mark.parametrize("body", [b for b in GENERATE_BODIES if "session_id" not in b])
def test_generate_and_warm_payloads_with_session_id_validate(body: dict) -> None:
    for payload in (client.build_generate_payload(body, rid="req-7", priority=2, session_id=SESSION),
                    client.build_warm_payload([1, 2, 3, 4], rid="warm-7", session_id=SESSION)):
        assert generate_contract_error(payload) is None
        request = pydantic.TypeAdapter(GenerateReqInput).validate_python(payload)
        request.normalize_batch_and_arguments()  # SGLang's own checks (session_id with session_params fails)
        assert request.session_id == SESSION and request.session_params is None


def test_session_id_never_joins_a_callers_session_params() -> None:
    body = {"text": "turn", "session_params": {"id": "theirs", "rid": None}}
    both = pydantic.TypeAdapter(GenerateReqInput).validate_python({**body, "session_id": SESSION})
    with pytest.raises(ValueError, match="session_id and session_params"):
        both.normalize_batch_and_arguments()
    payload = client.build_generate_payload(body, rid="req-8", session_id=SESSION)
    request = pydantic.TypeAdapter(GenerateReqInput).validate_python(payload)
    request.normalize_batch_and_arguments()
    assert request.session_id is None and request.session_params == body["session_params"]


def _sglang_source(relative: str) -> str:
    return (Path(sglang.__file__).parent / relative).read_text()


def test_top_level_session_id_is_the_radix_native_session() -> None:
    """What the gateway relies on, read from the installed source (no GPU to run a scheduler):
    the OpenAI routes pass ``session_id`` into ``GenerateReqInput``, and the scheduler serves a
    request with a top-level ``session_id`` as a normal request (prompt untouched), tagging its
    KV with the session only under ``--enable-session-radix-cache``; ``/close_session`` releases it."""
    for serving in ("srt/entrypoints/openai/serving_chat.py", "srt/entrypoints/openai/serving_completions.py"):
        assert "session_id=request.session_id" in _sglang_source(serving), serving
    scheduler = _sglang_source("srt/managers/scheduler.py")
    assert "recv_req.session_id is not None and self.enable_session_radix_cache" in scheduler
    assert "if session_id is None or radix_native_session:" in scheduler
    assert "self.tree_cache.release_radix_session(recv_req.session_id)" in scheduler


def test_generate_contract_is_strict() -> None:
    assert generate_contract_error({"text": "x", "sampling_params": {"max_new_tokens": 1, "bogus": 1}}) is not None
    with pytest.raises(pydantic.ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": "not a list"})


def test_abort_and_close_session_payloads_validate() -> None:
    abort = pydantic.TypeAdapter(AbortReq).validate_python(client.build_abort_payload("req-4"))
    assert abort.rid == "req-4" and not abort.abort_all
    close = pydantic.TypeAdapter(CloseSessionReqInput).validate_python(client.build_close_session_payload("sess-1"))
    assert close.session_id == "sess-1"


# ---- KV events -----------------------------------------------------------------------------


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def sglang_event_hashes(tokens: list[int], parent: str | None = None) -> tuple[list[str], list[int]]:
    """SGLang's own block hashes for events: a SHA-256 chain, published as its first 64 bits."""
    from sglang.srt.mem_cache.utils import get_hash_str, hash_str_to_int64

    chain = get_hash_str(tokens, parent, page_size=64)
    return chain, [hash_str_to_int64(h) for h in chain]


async def test_sglang_publisher_feeds_our_subscriber_with_replay() -> None:
    """SGLang's publisher and SGLang's hashes in; the index answers in the gateway's hashes."""
    pub_port, replay_port = free_ports(2)
    publisher = sgl_kv.EventPublisherFactory.create(kv_events_config_json("127.0.0.1", pub_port, replay_port))
    hub = KvEventHub()
    tokens, more = list(range(128)), list(range(500, 564))
    ours = block_hashes(tokens + more, 64)  # what the gateway computes for a call
    chain, theirs = sglang_event_hashes(tokens)
    _, theirs_more = sglang_event_hashes(more, chain[-1])
    assert not set(theirs) & set(ours)  # different hash functions: only rehashing can match them
    try:
        stored = sgl_kv.BlockStored(
            block_hashes=theirs, parent_block_hash=None, token_ids=tokens, block_size=64, lora_id=None
        )
        publisher.publish(sgl_kv.KVEventBatch(ts=1.0, events=[stored]))
        await asyncio.sleep(0.3)  # published before we join: only the replay socket has it
        await hub.attach("r0", f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}")
        assert hub.index.matched_blocks("r0", ours) == 2
        child = sgl_kv.BlockStored(
            block_hashes=theirs_more, parent_block_hash=theirs[-1], token_ids=more, block_size=64, lora_id=None
        )
        publisher.publish(sgl_kv.KVEventBatch(ts=2.0, events=[child]))
        await _until(lambda: hub.index.matched_blocks("r0", ours) == 3)
        removed = sgl_kv.BlockRemoved(block_hashes=[theirs_more[0]], medium="GPU")
        publisher.publish(sgl_kv.KVEventBatch(ts=3.0, events=[removed]))
        await _until(lambda: hub.index.matched_blocks("r0", ours) == 2)
        publisher.publish(sgl_kv.KVEventBatch(ts=4.0, events=[sgl_kv.AllBlocksCleared()]))
        await _until(lambda: hub.index.block_count("r0") == 0)
        assert hub.stats()["r0"].replayed_batches == 1 and hub.stats()["r0"].decode_errors == 0
    finally:
        await hub.close()
        publisher.shutdown()
        atexit.unregister(publisher.shutdown)  # SGLang registers it; once is enough


def test_sglang_decodes_what_our_publisher_sends() -> None:
    events = [
        BlockStored(block_hashes=[1, 2**63 - 1], parent_block_hash=None, token_ids=list(range(8)), block_size=4),
        BlockRemoved(block_hashes=[1]),
        AllBlocksCleared(),
    ]
    batch = msgspec.msgpack.Decoder(sgl_kv.KVEventBatch).decode(encode_batch(events, ts=5.0, dp_rank=0))
    assert batch.ts == 5.0 and batch.attn_dp_rank == 0
    first, second, third = batch.events
    assert isinstance(first, sgl_kv.BlockStored) and first.block_hashes == [1, 2**63 - 1] and first.block_size == 4
    assert isinstance(second, sgl_kv.BlockRemoved) and second.block_hashes == [1]
    assert isinstance(third, sgl_kv.AllBlocksCleared)


async def test_our_publisher_replay_speaks_sglang_protocol() -> None:
    """A raw DEALER, as SGLang's consumers use it, against our publisher's ROUTER."""
    import zmq
    import zmq.asyncio

    pub_port, replay_port = free_ports(2)
    publisher = KvEventPublisher(f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}")
    ctx = zmq.asyncio.Context()
    dealer = ctx.socket(zmq.DEALER)
    try:
        publisher(BlockStored(block_hashes=[7], parent_block_hash=None, token_ids=[1, 2, 3, 4], block_size=4))
        await _until(lambda: publisher.published_batches == 1)
        dealer.connect(f"tcp://127.0.0.1:{replay_port}")
        await dealer.send_multipart((b"", (0).to_bytes(8, "big")))
        _, topic, seq, payload = await asyncio.wait_for(dealer.recv_multipart(), 5)
        assert topic == b"" and int.from_bytes(seq, "big") == 0
        assert msgspec.msgpack.Decoder(sgl_kv.KVEventBatch).decode(payload).events[0].block_hashes == [7]
        _, _, end, _ = await asyncio.wait_for(dealer.recv_multipart(), 5)
        assert end == sgl_kv.ZmqEventPublisher.END_SEQ
    finally:
        dealer.close(linger=0)
        ctx.destroy(linger=0)
        publisher.close()


# ---- the simulated engine speaks the same /server_info --------------------------------------

# Keys real SGLang's /server_info adds beside the resolved arguments (`build_server_info` in
# utils/common.py and `server_info` in entrypoints/http_server.py: scheduler info, descriptors).
SGLANG_INFO_EXTRAS = {
    "max_total_num_tokens",
    "max_req_input_len",
    "internal_states",
    "kv_events",
    "version",
    "startup_time",
    "launch_command",
    "frontend",
}
# The simulator's one key of its own (docs/engine.md): everything sim-only lives under it.
SIM_ONLY_INFO_KEY = "pythia_sim"


def test_sim_server_info_uses_sglang_field_names(model_dir: Path) -> None:
    from starlette.testclient import TestClient

    from pythia_server.sglang_backend.sim_server import SimServerConfig, build_app

    with TestClient(build_app(SimServerConfig())) as http:
        sim_info = http.get("/server_info").json()
    real = resolve(["--model-path", str(model_dir)]).resolved_dict()
    assert isinstance(sim_info.pop(SIM_ONLY_INFO_KEY), dict)
    unknown = set(sim_info) - set(real) - SGLANG_INFO_EXTRAS
    assert unknown == set(), f"sim /server_info keys SGLang does not have: {sorted(unknown)}"
    for key in set(sim_info) & set(real):
        if real[key] is not None and sim_info[key] is not None:
            assert type(sim_info[key]) is type(real[key]) or {type(sim_info[key]), type(real[key])} <= {int, float}, key
    # The renamed settings carry the sim's values under SGLang's names and senses.
    assert sim_info["disable_priority_preemption"] is False and sim_info["random_seed"] == 0


# The /v1/loads fields the gateway's pool reads (pythia_server/gateway/pool.py, _read_loads).
GATEWAY_LOAD_KEYS = ("num_waiting_reqs", "max_total_num_tokens", "num_used_tokens")


def _sglang_loads_body() -> dict:
    """What SGLang's `get_loads` handler (entrypoints/v1_loads.py) returns, built by its own code."""
    from sglang.srt.entrypoints import v1_loads
    from sglang.srt.managers.load_snapshot import (
        LoadSnapshot,
        MemoryMetrics,
        QueueMetrics,
    )

    class TokenizerManager:
        async def get_loads(self, include: list[str] | None, dp_rank: int | None) -> list[LoadSnapshot]:
            return [
                LoadSnapshot(
                    dp_rank=0,
                    num_waiting_reqs=3,
                    num_used_tokens=10,
                    max_total_num_tokens=100,
                    memory=MemoryMetrics(weight_gb=16.0, kv_cache_gb=50.0, graph_gb=0.0, token_capacity=100),
                    queues=QueueMetrics(waiting=3, grammar=0, paused=0, retracted=0, prealloc_ready=0),
                )
            ]

    original = (v1_loads._accelerator_name, v1_loads._num_accelerators_per_dp_rank)
    v1_loads._accelerator_name, v1_loads._num_accelerators_per_dp_rank = lambda: "GPU", lambda: 1  # no GPU here
    try:
        body = asyncio.run(v1_loads.get_loads(tokenizer_manager=TokenizerManager()))
    finally:
        v1_loads._accelerator_name, v1_loads._num_accelerators_per_dp_rank = original
    return json.loads(json.dumps(body))  # as it crosses HTTP


def _shape(value: object) -> object:
    """Keys all the way down, with leaf types (int and float as one: JSON does not keep them apart)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def test_sim_v1_loads_has_exactly_sglangs_shape() -> None:
    from starlette.testclient import TestClient

    from pythia_server.sglang_backend.sim_server import SimServerConfig, build_app

    real = _sglang_loads_body()
    assert all(isinstance(real["loads"][0][key], int) for key in GATEWAY_LOAD_KEYS)
    with TestClient(build_app(SimServerConfig())) as http:
        sim = http.get("/v1/loads").json()
    assert len(sim["loads"]) == 1
    # decode_moments is None on both here; SGLang's `accelerator` is a name or None.
    assert _shape(sim) == _shape(real)
    assert sim["version"] == real["version"] and isinstance(sim["accelerator"], str)


def _sse_chunks(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


def test_sim_openai_responses_validate_against_sglang_response_models() -> None:
    """What the gateway parses from the simulated engine has the shape of SGLang's own responses."""
    from sglang.srt.entrypoints.openai.protocol import (
        ChatCompletionResponse,
        ChatCompletionStreamResponse,
        CompletionResponse,
        CompletionStreamResponse,
    )
    from starlette.testclient import TestClient

    from pythia_server.sglang_backend.sim_server import SimServerConfig, build_app

    chat = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
    completion = {"model": "m", "prompt": "Once upon a time", "max_tokens": 8}
    with TestClient(build_app(SimServerConfig(speedup=1000.0))) as http:
        response = ChatCompletionResponse.model_validate(http.post("/v1/chat/completions", json=chat).json())
        assert response.usage.prompt_tokens > 0 and response.usage.prompt_tokens_details is not None
        streamed = http.post(
            "/v1/chat/completions", json={**chat, "stream": True, "stream_options": {"include_usage": True}}
        )
        chunks = [ChatCompletionStreamResponse.model_validate(c) for c in _sse_chunks(streamed.text)]
        assert chunks and chunks[-1].usage is not None
        CompletionResponse.model_validate(http.post("/v1/completions", json=completion).json())
        streamed = http.post("/v1/completions", json={**completion, "stream": True})
        assert [CompletionStreamResponse.model_validate(c) for c in _sse_chunks(streamed.text)]
