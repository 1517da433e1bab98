"""Every telemetry name spangate emits, in one place.

GenAI names follow the OpenTelemetry semantic conventions v1.41.0 (the last
release carrying them in the core repository). They are pinned here as strings
rather than imported from opentelemetry-semantic-conventions, whose newest
releases mark every gen_ai constant deprecated.
"""

from __future__ import annotations

SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# --- GenAI: operation and provider ----------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
OPENAI_API_TYPE = "openai.api.type"

# --- GenAI: request -------------------------------------------------------
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K = "gen_ai.request.top_k"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
OPENAI_REQUEST_SERVICE_TIER = "openai.request.service_tier"

# --- GenAI: response ------------------------------------------------------
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"
OPENAI_RESPONSE_SERVICE_TIER = "openai.response.service_tier"
OPENAI_RESPONSE_SYSTEM_FINGERPRINT = "openai.response.system_fingerprint"

# --- GenAI: usage ---------------------------------------------------------
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"

# --- GenAI: content (opt-in) ----------------------------------------------
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"
EVENT_INFERENCE_DETAILS = "gen_ai.client.inference.operation.details"
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# --- General --------------------------------------------------------------
ERROR_TYPE = "error.type"
ERROR_TYPE_OTHER = "_OTHER"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
CLIENT_ADDRESS = "client.address"
USER_AGENT_ORIGINAL = "user_agent.original"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"

# --- spangate's own span attributes ---------------------------------------
SPANGATE_ROUTE = "spangate.route"
SPANGATE_ATTEMPT = "spangate.attempt"
SPANGATE_ATTEMPTS = "spangate.attempts"
SPANGATE_TARGET = "spangate.target"
SPANGATE_PROVIDER = "spangate.provider"
SPANGATE_FAILURE_CLASS = "spangate.failure_class"
SPANGATE_BACKOFF_S = "spangate.backoff_s"
SPANGATE_STREAM_OUTCOME = "spangate.stream.outcome"
SPANGATE_USAGE_INJECTED = "spangate.stream.usage_injected"
SPANGATE_COST_USD = "spangate.cost.usd"
SPANGATE_CONTENT_TRUNCATED = "spangate.content.truncated"
SPANGATE_FALLBACK = "spangate.fallback"
SPANGATE_HEDGED = "spangate.hedged"
SPANGATE_HEDGE_ROLE = "spangate.hedge.role"
SPANGATE_HEDGE_OUTCOME = "spangate.hedge.outcome"

# --- Metrics: GenAI client (semconv v1.41.0) --------------------------------
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
METRIC_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"

TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
#: The proxy's own overhead is sub-millisecond: the GenAI buckets would put it all in one.
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
)  # fmt: skip

# --- Metrics: spangate's own ------------------------------------------------
METRIC_REQUESTS = "spangate.requests"
METRIC_ATTEMPTS = "spangate.attempts"
METRIC_INFLIGHT = "spangate.requests.inflight"
METRIC_INTERRUPTED_STREAMS = "spangate.streams.interrupted"
METRIC_TELEMETRY_DROPPED = "spangate.telemetry.dropped"
METRIC_COST = "spangate.cost.usd"
METRIC_PROXY_OVERHEAD = "spangate.proxy.overhead"
METRIC_FAILOVERS = "spangate.failovers"
METRIC_HEDGES = "spangate.hedges"
METRIC_CIRCUIT_OPEN = "spangate.circuit.open"
METRIC_CIRCUIT_TRANSITIONS = "spangate.circuit.transitions"

# Metric attribute keys of spangate's own (low cardinality: never ids).
ATTR_ROUTE = "spangate.route"
#: Its value for requests no alias served: an alias of this name is refused
#: (proxy/runtime.py), or its series would merge with theirs.
PASSTHROUGH_ROUTE = "passthrough"
ATTR_STATUS_CLASS = "http.response.status_class"
ATTR_OUTCOME = "spangate.outcome"
ATTR_SIGNAL = "spangate.signal"
ATTR_REASON = "spangate.reason"
ATTR_STATE = "spangate.circuit.state"
ATTR_FAILURE_CLASS = "spangate.failure_class"
