"""Names the SDK writes into telemetry: OpenTelemetry GenAI semantic conventions and
Pythia's own ``pythia.*`` attributes, plus the environment variables it reads.

Constants only, so the gateway's OTLP decoder can import the same spellings.
"""

from __future__ import annotations

# --- environment variables (read once, in pythia_sdk._config) --------------------------
#: Standard OpenTelemetry switch: "true" records prompts and completions on chat spans.
ENV_CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: Standard OpenTelemetry switches for where and whether traces go.
ENV_SDK_DISABLED = "OTEL_SDK_DISABLED"
ENV_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENV_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
#: Pythia's own: "0"/"false" turns span export to the gateway off (tags still flow).
ENV_PYTHIA_TRACES = "PYTHIA_TRACES"

# --- operations (gen_ai.operation.name) ------------------------------------------------
OP_INVOKE_WORKFLOW = "invoke_workflow"
OP_INVOKE_AGENT = "invoke_agent"
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_EXECUTE_TOOL = "execute_tool"

# --- GenAI attributes -------------------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"  # older spelling, still read by many backends
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

#: Attributes that carry message content: written only when capture is on, never stored
#: by the gateway.
CONTENT_ATTRIBUTES = frozenset(
    {GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, "gen_ai.prompt", "gen_ai.completion",
     "gen_ai.system_instructions", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"}
)

# --- metrics -----------------------------------------------------------------------------
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"

# --- Pythia's own attributes -----------------------------------------------------------
PYTHIA_WORKFLOW = "pythia.workflow"
PYTHIA_SESSION = "pythia.session"
PYTHIA_AGENT = "pythia.agent"
PYTHIA_PARENT = "pythia.parent"
PYTHIA_FRAMEWORK = "pythia.framework"
PYTHIA_API = "pythia.api"  # chat.completions, completions, responses
PYTHIA_STREAM = "pythia.stream"
PYTHIA_RAW_RESPONSE = "pythia.raw_response"
PYTHIA_STREAM_END = "pythia.stream.end"  # exhausted, closed, error, collected
PYTHIA_CHECKPOINT_NS = "pythia.langgraph.checkpoint_ns"

#: The SDK's instrumentation scope name (tracer and meter).
SCOPE_NAME = "pythia_sdk"
