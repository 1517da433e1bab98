"""The config file: a typed, frozen msgspec schema, `${ENV}` interpolation, and
errors that name the exact key (`models.fast.targets[1].provider: ...`).

Semantic checks that need the whole file (a target naming an unknown provider)
live in `runtime.compile_config`, which reports with the same key paths. Telemetry
keys read only once serving starts (regexes, sampler, OTLP endpoint) are checked
here, in `parse_config`, so that `check-config` sees them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect
import yaml

ProviderKind = Literal["openai", "anthropic", "azure_openai"]
FailureClass = Literal[
    "transient",
    "rate_limited",
    "quota",
    "credential",
    "model_unavailable",
    "caller_fault",
    "timeout",
    "connection",
    "unknown",
]
Strategy = Literal[
    "ordered", "weighted", "round_robin", "least_inflight", "lowest_latency", "lowest_cost"
]
CaptureMode = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]


class ConfigError(ValueError):
    """A config problem; the message starts with the key path it concerns."""


class _Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


#: A timeout in seconds: a zero or negative one would fail every request at once.
Seconds = Annotated[float, msgspec.Meta(gt=0)]
#: A duration or amount where 0 has a meaning (no wait, free) but a negative one has none.
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
#: A count where 0 would mean "never" for something that must happen.
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]


class Timeouts(_Base, frozen=True):
    connect_s: Seconds = 10.0
    #: Longest wait for the upstream's response headers / first byte.
    first_byte_s: Seconds = 300.0
    #: Longest silence between two chunks of a streamed body.
    idle_s: Seconds = 300.0
    #: Overall cap per upstream attempt; 0 disables it.
    total_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class ServerConfig(_Base, frozen=True):
    #: Honour x-spangate-route / x-spangate-target request headers.
    route_headers: bool = False
    #: Tell clients what happened: x-spangate-attempts, x-spangate-target.
    response_headers: bool = True
    host: str = "127.0.0.1"
    #: 0 picks any free port; the 0..65535 range is checked in runtime.compile_config.
    port: int = 4000
    max_body_bytes: AtLeastOne = 32 * 1024 * 1024
    #: How long SIGTERM waits for in-flight requests and streams (0: stop at once).
    drain_timeout_s: NonNegative = 30.0
    timeouts: Timeouts = Timeouts()
    #: Upstream connections in use at once (keep-alive); more requests wait for one.
    pool_size: AtLeastOne = 256
    #: Processes sharing the port (SO_REUSEPORT); `--workers` / SPANGATE_WORKERS win.
    workers: AtLeastOne = 1


class ProviderConfig(_Base, frozen=True):
    kind: ProviderKind
    base_url: str
    #: When set, replaces whatever key the client sent.
    api_key: str | None = None
    #: `gen_ai.provider.name` override (e.g. "vllm" for an OpenAI-compatible server).
    provider_name: str | None = None
    #: Azure OpenAI `api-version` query parameter.
    api_version: str | None = None
    #: Extra static headers sent upstream.
    headers: dict[str, str] = {}
    #: Send W3C `traceparent` upstream so a traced model server joins the trace.
    propagate_trace: bool = True
    #: OpenAI-format streams: ask for usage upstream and hide the extra chunk.
    stream_usage: Literal["inject", "passthrough"] = "inject"
    timeouts: Timeouts | None = None


class PriceConfig(_Base, frozen=True):
    """USD per million tokens."""

    input: NonNegative
    output: NonNegative
    cached_input: NonNegative | None = None


class TargetConfig(_Base, frozen=True):
    provider: str
    #: Never empty: an empty model would be sent upstream as `"model": ""`.
    model: Annotated[str, msgspec.Meta(min_length=1)]
    #: 0 = never first (weighted); the alias-wide "not all 0" check is in runtime.
    weight: NonNegative = 1.0
    #: For `lowest_cost` (and cost metrics); default: the shipped price table.
    price: PriceConfig | None = None
    #: Skip this target while it has this many requests in flight.
    max_inflight: AtLeastOne | None = None
    timeouts: Timeouts | None = None


#: Defaults make a plain target list resilient: these move to the next target.
DEFAULT_NEXT_TARGET: tuple[FailureClass, ...] = (
    "transient",
    "rate_limited",
    "timeout",
    "connection",
    "quota",
    "credential",
    "model_unavailable",
)


class BackoffConfig(_Base, frozen=True):
    #: 0 retries the same target at once.
    initial_s: NonNegative = 0.25
    max_s: NonNegative = 8.0
    #: Below 1 the waits would shrink with each retry.
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0


class RetryConfig(_Base, frozen=True):
    #: Upstream attempts per request across all targets (default: one per target).
    max_attempts: AtLeastOne | None = None
    #: Failure classes that retry the same target (after backoff / Retry-After).
    same_target: list[FailureClass] = []
    #: How many times one target is retried for those classes.
    same_target_max: AtLeastOne = 1
    #: Failure classes that move on to the next target.
    next_target: list[FailureClass] = msgspec.field(
        default_factory=lambda: list(DEFAULT_NEXT_TARGET)
    )
    backoff: BackoffConfig = BackoffConfig()
    #: Overall deadline for the whole request, retries and waits included.
    deadline_s: Seconds = 300.0


class CircuitConfig(_Base, frozen=True):
    enabled: bool = True
    #: Open after this many consecutive failures...
    consecutive_failures: AtLeastOne = 5
    #: ...or when the error rate over the window exceeds this (with enough requests);
    #: a fraction, 0..1, checked in runtime.compile_config (1 never opens on rate).
    error_rate: float = 0.5
    window_s: Seconds = 30.0
    min_requests: AtLeastOne = 10
    #: How long an open circuit skips its target (at least the provider's Retry-After);
    #: 0 would never skip it (circuit.enabled: false says that plainly).
    cooldown_s: Seconds = 30.0


class HedgeConfig(_Base, frozen=True):
    #: Send the same request to the next target when no first byte arrived within
    #: `after_s`, or within the `percentile` of observed first-byte latency.
    #: Above 0: 0 or less would hedge every request at once (double the traffic).
    after_s: Seconds | None = None
    #: A fraction strictly between 0 and 1, checked in runtime.compile_config.
    percentile: float | None = None
    #: Observations needed before the percentile is trusted (else `after_s`, else no hedge).
    min_samples: AtLeastOne = 20


class ModelConfig(_Base, frozen=True):
    targets: list[TargetConfig]
    strategy: Strategy = "ordered"
    retry: RetryConfig = RetryConfig()
    #: Aliases tried in order when every target of this one failed.
    fallbacks: list[str] = []
    #: Aliases tried when the request exceeds the model's context window.
    context_fallbacks: list[str] = []
    circuit: CircuitConfig = CircuitConfig()
    hedge: HedgeConfig | None = None
    timeouts: Timeouts | None = None


class PrometheusConfig(_Base, frozen=True):
    enabled: bool = True
    #: The address of /metrics' own listener (default: server.host); only with `port`,
    #: refused without it in _check_telemetry.
    host: str | None = None
    #: Serve /metrics on its own listener; default: on the main listener.
    #: 0 picks any free port; the 0..65535 range is checked in runtime.compile_config.
    port: int | None = None


class TelemetryConfig(_Base, frozen=True):
    """Defaults for the standard OTEL_* variables; the environment wins."""

    service_name: str | None = None
    resource_attributes: dict[str, str] = {}
    otlp_endpoint: str | None = None
    otlp_protocol: Literal["grpc", "http/protobuf"] | None = None
    otlp_headers: dict[str, str] = {}
    traces_sampler: str | None = None
    traces_sampler_arg: str | None = None
    metric_export_interval_ms: AtLeastOne | None = None
    logs_otlp: bool = False
    sdk_disabled: bool = False
    #: Where `spangate serve` turns records into telemetry: a child process (no GIL
    #: shared with the event loop), a thread of the serving process, or `auto`: the
    #: process when each worker has two CPUs to itself (instrumentation/cpus.py).
    pipeline: Literal["auto", "process", "thread"] = "auto"
    prometheus: PrometheusConfig = PrometheusConfig()
    capture_content: CaptureMode | None = None
    content_max_bytes: AtLeastOne = 16384
    #: Regexes whose matches are replaced by "[REDACTED]" in logs and captured content.
    redact_patterns: list[str] = []
    prices: dict[str, PriceConfig] = {}


class Config(_Base, frozen=True):
    server: ServerConfig = ServerConfig()
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    telemetry: TelemetryConfig = TelemetryConfig()


_S = TypeVar("_S")
#: A variable's name in `${NAME...}`.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: What may follow the name inside the braces, besides `}`: as in a POSIX shell.
_ENV_OPERATORS = (":-", ":?", "-", "?")
_DOLLAR_HINT = "(write $$ for a literal $)"


#: Where a string held a reference: its key path as steps (map keys, list indices) and
#: as the text errors name it by.
Found = list[tuple[tuple[Any, ...], str]]


def interpolate(value: Any, path: str, env: Mapping[str, str], found: Found | None = None) -> Any:
    """Replace `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}` and
    `${VAR?message}` in every string, as a POSIX shell does (a default may hold
    references); `$$` is a literal `$`, and a `$` before anything else stays as it is.
    The key path of each string that held a reference is added to `found`, as steps and
    as text."""
    return _interpolate(value, path, (), env, found if found is not None else [])


def _interpolate(
    value: Any, path: str, steps: tuple[Any, ...], env: Mapping[str, str], found: Found
) -> Any:
    if isinstance(value, str):
        expanded = _Expansion(value, path, env).run()
        if expanded is not value:
            found.append((steps, path))
        return expanded
    if isinstance(value, dict):
        return {
            k: _interpolate(v, _join(path, str(k)), (*steps, k), env, found)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, f"{path}[{i}]", (*steps, i), env, found) for i, v in enumerate(value)
        ]
    return value


class _Expansion:
    """One string's references, read left to right. A default or message is read even
    where it is not used (so a typo in it is reported) but looked up only where used,
    as in a shell: `${A:-${B}}` needs no B while A is set."""

    def __init__(self, text: str, path: str, env: Mapping[str, str]) -> None:
        self.text, self.path, self.env = text, path, env

    def run(self) -> str:
        if "$" not in self.text:
            return self.text  # the same object: no reference
        expanded, _ = self.word(0, inside=False, used=True)
        return expanded

    def word(self, pos: int, inside: bool, used: bool) -> tuple[str, int]:
        """Text from `pos` to the end (or, inside a reference, to its closing `}`)."""
        text = self.text
        out: list[str] = []
        while pos < len(text):
            char = text[pos]
            if inside and char == "}":
                return "".join(out), pos
            if text.startswith("$$", pos):
                out.append("$")
                pos += 2
            elif text.startswith("${", pos):
                value, pos = self.reference(pos, used)
                out.append(value)
            else:
                out.append(char)
                pos += 1
        return "".join(out), pos

    def reference(self, start: int, used: bool) -> tuple[str, int]:
        """The value of the reference at `start` (`${`) and the index after its `}`."""
        name_match = _ENV_NAME.match(self.text, start + 2)
        if name_match is None:
            raise self.refused(
                start,
                "is not a valid reference: a variable name is letters, digits and _, "
                "not starting with a digit",
            )
        name, pos = name_match.group(), name_match.end()
        if pos >= len(self.text):
            raise self.refused(start, "is not closed: add the } that ends it")
        if self.text.startswith("}", pos):
            operator, word, end = "", "", pos
        else:
            operator = self.operator_at(pos)
            if not operator:
                raise self.refused(
                    start,
                    "is not a supported reference: after the name comes }, "
                    ":-default, -default, :?message or ?message",
                )
            unset = name not in self.env or (operator[0] == ":" and not self.env[name])
            word, end = self.word(pos + len(operator), inside=True, used=used and unset)
            if end >= len(self.text):
                raise self.refused(start, "is not closed: add the } that ends it")
        value = self.lookup(name, operator, word) if used else ""
        return value, end + 1

    def lookup(self, name: str, operator: str, word: str) -> str:
        value = self.env.get(name)
        empty_counts = operator.startswith(":")
        if value is not None and (value or not empty_counts):
            return value
        if operator in (":-", "-"):
            return word
        state = "not set" if value is None else "empty"
        if operator in (":?", "?"):
            reason = f": {word}" if word else ""
            raise ConfigError(f"{self.path}: environment variable {name} is {state}{reason}")
        raise ConfigError(
            f"{self.path}: environment variable {name} is not set "
            f"(set it, or write ${{{name}:-default}} to give a default)"
        )

    def operator_at(self, pos: int) -> str:
        """The operator (`:-`, `:?`, `-`, `?`) that starts at `pos`, or ""."""
        return next((op for op in _ENV_OPERATORS if self.text.startswith(op, pos)), "")

    def refused(self, start: int, problem: str) -> ConfigError:
        """The error for a malformed reference, quoting its name and operator only: what
        follows them may be a literal secret (`${OPENAI_API_KEY:-sk-...` unclosed)."""
        name = _ENV_NAME.match(self.text, start + 2)
        pos = name.end() if name is not None else start + 2
        pos += len(self.operator_at(pos))
        shown = self.text[start:pos]
        if self.text.startswith("}", pos):
            shown += "}"
        elif pos < len(self.text):
            shown += "..."
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return ConfigError(f"{self.path}: {shown!r} {problem} {_DOLLAR_HINT}")


def _join(path: str, key: str) -> str:
    return key if not path else f"{path}.{key}"


def _convert(data: Any, kind: type[_S], path: str) -> _S:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(_locate(str(exc), path, kind, data)) from None


#: msgspec's marks in an error: "... - at `$.a.b`", or for a map's key "- at `key` in `$.a`".
_AT, _KEY_AT = " - at `", "key` in `"


def _locate(message: str, prefix: str, kind: type[Any], data: Any) -> str:
    """Turn msgspec's "... - at `$.a.b`" into "prefix.a.b: ...", with what to write
    instead when the key takes one of a fixed set of names (`kind` is what was being
    converted from `data`, so the key's type is found by walking `where` through it)."""
    text, _, where = message.partition(_AT)
    where = where.rstrip("`")
    in_key = where.startswith(_KEY_AT)
    where = where.removeprefix(_KEY_AT).removeprefix("$")
    shown = _name_entry(where, data, kind, message)
    location = (prefix + shown) if prefix else shown.lstrip(".")
    if in_key:
        location += f": key {_first_bad_key(_at(data, _steps(where)))!r}"
    located = f"{location or '(top level)'}: {_lower_first(text)}"
    if text.startswith("Expected `str") and text.endswith("got `bool`"):
        # YAML 1.1 reads an unquoted yes/no/on/off/true/false as a boolean, so
        # `capture_content: yes` never reaches the key as the text that was typed.
        located += (
            "; YAML reads an unquoted yes, no, on, off, true or false as a boolean, "
            f"so put the {'key' if in_key else 'value'} in quotes"
        )
    allowed = _allowed_values(msgspec.inspect.type_info(kind), where)
    if allowed:
        located += f" (one of: {', '.join(allowed)})"
    return located


#: `.name` (a struct field) or `[0]` / `[...]` (a list item / a map value) in msgspec's path.
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[[^\]]*\]")


def _name_entry(where: str, data: Any, kind: type[Any], message: str) -> str:
    """`where` with the map key in place of the first `[...]`, which is all msgspec says
    of a map's entry (`resource_attributes[...]`, where the key is the answer). The key is
    the first entry that, alone in its map with the rest of `data` unchanged, fails with
    the same message: msgspec reports the first failing entry, in the file's order."""
    head, marker, tail = where.partition("[...]")
    steps = _steps(head)
    entries = _at(data, steps)
    if not marker or not isinstance(entries, dict):
        return where
    for key, value in entries.items():
        try:
            msgspec.convert(_replaced(data, steps, {key: value}), kind)
        except msgspec.ValidationError as exc:
            if str(exc) == message:
                return f"{head}.{key}{tail}"
    return where


def _steps(where: str) -> list[str | int]:
    """The field names and list indices of a msgspec path that holds no `[...]`."""
    return [
        step.group(1) if step.group(1) is not None else int(step.group(0)[1:-1])
        for step in _PATH_STEP.finditer(where)
    ]


def _at(data: Any, steps: list[str | int]) -> Any:
    for step in steps:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _replaced(data: Any, steps: list[str | int], value: Any) -> Any:
    """A copy of `data` with `value` at `steps`, sharing everything off that path."""
    if not steps:
        return value
    copy = list(data) if isinstance(data, list) else dict(data)
    copy[steps[0]] = _replaced(data[steps[0]], steps[1:], value)  # type: ignore[index]
    return copy


def _first_bad_key(entries: Any) -> Any:
    """The key msgspec refused (map keys are text in the schema), e.g. YAML's `1:` or `yes:`."""
    keys = entries if isinstance(entries, dict) else {}
    return next((key for key in keys if not isinstance(key, str)), None)


def _allowed_values(info: msgspec.inspect.Type, where: str) -> list[str]:
    """The names a Literal key accepts, when `where` (a msgspec path: `.field`, `[i]`,
    `[...]` for a map's entry) leads to one; else []."""
    # An index stands for every `[...]`: a list's item and a map's value alike.
    steps = tuple(step.group(1) or 0 for step in _PATH_STEP.finditer(where))
    return [
        str(value)
        for node in _types_at(info, steps)
        if isinstance(node, msgspec.inspect.LiteralType)
        for value in node.values
    ]


def _alternatives(types: list[msgspec.inspect.Type]) -> list[msgspec.inspect.Type]:
    """The concrete types behind `Annotated[...]` and `X | None`."""
    found: list[msgspec.inspect.Type] = []
    for node in types:
        if isinstance(node, msgspec.inspect.Metadata):
            found += _alternatives([node.type])
        elif isinstance(node, msgspec.inspect.UnionType):
            found += _alternatives(list(node.types))
        else:
            found.append(node)
    return found


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _convert_named(data: Any, kind: type[_S], path: str) -> dict[str, _S]:
    """A mapping of name → entry, converted entry by entry so errors name the entry."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of names to entries")
    return {str(name): _convert(entry, kind, f"{path}.{name}") for name, entry in data.items()}


def parse_config(data: Any, env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document into a Config."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): the config file must be a YAML mapping")
    env = os.environ if env is None else env
    found: Found = []
    data = interpolate(data, "", env, found)
    _read_env_scalars(data, found)
    try:
        config = _parse(data)
    except ConfigError as exc:
        raise ConfigError(_note_env(str(exc), found)) from None
    check_otlp_environment(env)
    return config


def _parse(data: dict[Any, Any]) -> Config:
    staged = dict(data)
    if "providers" in staged:
        staged["providers"] = _convert_named(staged["providers"], ProviderConfig, "providers")
    if "models" in staged:
        staged["models"] = _convert_named(staged["models"] or {}, ModelConfig, "models")
    telemetry = staged.get("telemetry")
    if isinstance(telemetry, dict):
        arg = telemetry.get("traces_sampler_arg")
        if isinstance(arg, int | float) and not isinstance(arg, bool):
            # The arg is text in OTEL_TRACES_SAMPLER_ARG, but in YAML a ratio is
            # naturally written as a number: `traces_sampler_arg: 0.1`.
            staged["telemetry"] = {**telemetry, "traces_sampler_arg": str(arg)}
    config = _convert(staged, Config, "")
    _check_telemetry(config.telemetry)
    return config


def _read_env_scalars(data: Any, found: Found) -> None:
    """An environment variable is text, and YAML has already read `${PORT:-4000}` as a
    string: where the key takes a number or a boolean (and no text), the interpolated
    text is read as one, in place, so `port: ${PORT:-4000}` works quoted or not. Only
    the key's type decides, never the text's look: `api_version: ${V}` stays text even
    when V is `2024-10-21`. Text that reads as nothing is left for the schema to refuse."""
    info = msgspec.inspect.type_info(Config)
    for steps, _ in found:
        holder = _at(data, list(steps[:-1]))
        if not steps or not isinstance(holder, dict | list):
            continue
        kinds = {type(node) for node in _types_at(info, steps)}
        if not kinds or kinds & {msgspec.inspect.StrType, msgspec.inspect.LiteralType}:
            continue
        value = _scalar(holder[steps[-1]], kinds)
        if value is not None:
            holder[steps[-1]] = value


def _types_at(info: msgspec.inspect.Type, steps: tuple[Any, ...]) -> list[msgspec.inspect.Type]:
    """The types the schema allows at `steps` (map keys and list indices of `data`)."""
    types = [info]
    for step in steps:
        following: list[msgspec.inspect.Type] = []
        for node in _alternatives(types):
            if isinstance(node, msgspec.inspect.StructType):
                following += [f.type for f in node.fields if f.encode_name == step]
            elif isinstance(node, msgspec.inspect.ListType) and isinstance(step, int):
                following.append(node.item_type)
            elif isinstance(node, msgspec.inspect.DictType):
                following.append(node.value_type)
        types = following
    return _alternatives(types)


def _scalar(text: str, kinds: set[type[msgspec.inspect.Type]]) -> bool | int | float | None:
    word = text.strip()
    if msgspec.inspect.BoolType in kinds and word.lower() in ("true", "false"):
        return word.lower() == "true"
    if msgspec.inspect.IntType in kinds and re.fullmatch(r"[+-]?[0-9]+", word):
        return int(word)
    if msgspec.inspect.FloatType in kinds:
        try:
            return float(word)
        except ValueError:
            return None
    return None


def _note_env(message: str, found: Found) -> str:
    """Say so when the refused value came from the environment: the file shows only
    `${VAR}`, and a number or boolean there is read from the variable's text."""
    for _, path in found:
        if message.startswith(f"{path}: expected `"):
            return (
                f"{message}; the value came from an environment variable reference, so "
                "set the variable to what the key takes (a number: 4000, 0.5; a boolean: "
                "true or false)"
            )
    return message


def _check_telemetry(telemetry: TelemetryConfig) -> None:
    """Telemetry keys that are only read once serving starts (by the redactor, the
    sampler, the exporters), checked here so that `check-config` refuses them too."""
    _check_redact_patterns(telemetry.redact_patterns)
    _check_sampler(telemetry.traces_sampler, telemetry.traces_sampler_arg)
    if telemetry.otlp_endpoint:
        _check_otlp_endpoint(telemetry.otlp_endpoint, "telemetry.otlp_endpoint")
    prometheus = telemetry.prometheus
    if prometheus.host is not None and prometheus.port is None:
        # Without a port /metrics stays on the main listener, and host would be ignored.
        raise ConfigError(
            "telemetry.prometheus.host: only used with telemetry.prometheus.port, which "
            "serves /metrics on its own listener; set port too, or remove host to keep "
            "/metrics on the main listener (server.host, server.port)"
        )


#: The OTEL_TRACES_SAMPLER names instrumentation/sampling.py implements (it reads
#: them stripped and lower-cased). It falls back to parentbased_always_on for any
#: other name, as the SDK does for the environment variable; in the config file a
#: name it does not know is a typo, refused here.
TRACES_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def _check_sampler(name: str | None, arg: str | None) -> None:
    if name and name.strip().lower() not in TRACES_SAMPLERS:
        raise ConfigError(
            f"telemetry.traces_sampler: unknown sampler {name!r} "
            f"(one of: {', '.join(TRACES_SAMPLERS)})"
        )
    # Checked whatever the sampler: the arg is only ever read as the traceidratio
    # ratio, and an OTEL_TRACES_SAMPLER=traceidratio from the environment takes it
    # from here. sampling.py would quietly sample everything for a bad one.
    if arg and not _is_ratio(arg):
        raise ConfigError(
            f"telemetry.traces_sampler_arg: must be a ratio between 0 and 1 for the "
            f"traceidratio samplers (e.g. 0.1 keeps one trace in ten), got {arg!r}"
        )


_OTLP_EXAMPLE = "e.g. http://collector:4317 (gRPC) or http://collector:4318 (OTLP/HTTP)"


#: The OTEL_EXPORTER_OTLP_* variables instrumentation/otlp.py reads, general and per
#: signal; when set they win over telemetry.otlp_endpoint / otlp_protocol.
_OTLP_VARIABLES = (
    "OTEL_EXPORTER_OTLP_",
    *(f"OTEL_EXPORTER_OTLP_{s}_" for s in ("TRACES", "METRICS", "LOGS")),
)
#: What instrumentation/otlp.py exports with (it reads the value stripped; anything but
#: grpc would quietly mean http/protobuf).
OTLP_PROTOCOLS = ("grpc", "http/protobuf")


def check_otlp_environment(env: Mapping[str, str]) -> None:
    """The OTLP endpoint and protocol variables get the checks their config keys get:
    they win over the file, so a bad one would otherwise fail every export at run time
    (a scheme-less endpoint) or be read as another protocol (`http/json`)."""
    for prefix in _OTLP_VARIABLES:
        endpoint, protocol = f"{prefix}ENDPOINT", f"{prefix}PROTOCOL"
        if env.get(endpoint):
            _check_otlp_endpoint(env[endpoint], f"{endpoint} (environment variable)")
        chosen = (env.get(protocol) or "").strip()
        if env.get(protocol) and chosen not in OTLP_PROTOCOLS:
            raise ConfigError(
                f"{protocol} (environment variable): {chosen!r} is not an OTLP protocol "
                f"spangate exports with (one of: {', '.join(OTLP_PROTOCOLS)})"
            )


def _check_otlp_endpoint(endpoint: str, key: str) -> None:
    """Both exporters need a scheme: without one, every OTLP/HTTP export fails with an
    SDK error in the log, and gRPC cannot tell TLS from plain text. The messages never
    quote the value: credentials for the collector may be in it (README, Telemetry),
    and in a URL that does not parse as one, nothing marks them out to be left out."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # an unclosed IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: must be an http:// or https:// URL with a host, {_OTLP_EXAMPLE}")
    try:
        parts.port  # noqa: B018 - parsed on access
    except ValueError:
        raise ConfigError(
            f"{key}: the port must be a number from 1 to 65535, {_OTLP_EXAMPLE}"
        ) from None


def _is_ratio(text: str) -> bool:
    try:
        ratio = float(text)
    except ValueError:
        return False
    return 0 <= ratio <= 1  # False for nan too


#: `\\1` or `(?(1)` not after an escaping backslash: a group referred to by number.
_NUMBERED_REFERENCE = re.compile(r"(?<!\\)(?:\\\\)*(?:\\[1-9]|\(\?\(\d)")


def _check_redact_patterns(patterns: list[str]) -> None:
    """Each pattern as instrumentation/logging.py's Redactor uses it: joined with the
    shipped ones into one `(?:a)|(?:b)|...` regex. The patterns are the operator's own
    text, so the messages quote them."""
    names: dict[str, int] = {}
    shift = 0  # capture groups of the entries before: the shipped patterns have none
    for index, pattern in enumerate(patterns):
        key = f"telemetry.redact_patterns[{index}]"
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{key}: {pattern!r} is not a valid regular expression: {exc}"
            ) from None
        try:
            re.compile(f"(?:{pattern})")
        except re.error as exc:
            # In practice a global flag: (?i) is refused anywhere but at the very start.
            raise ConfigError(
                f"{key}: {pattern!r} cannot be joined with the other patterns into one "
                f"regex ({exc.msg}); scope flags to the pattern, e.g. (?i:secret-\\w+) "
                "instead of (?i)secret-\\w+"
            ) from None
        if compiled.match("") is not None:
            raise ConfigError(
                f"{key}: {pattern!r} matches an empty string, so [REDACTED] would be "
                "inserted into every log line; make it match at least one character"
            )
        if shift and _NUMBERED_REFERENCE.search(pattern):
            raise ConfigError(
                f"{key}: {pattern!r} refers to a group by number, but joined after the "
                f"entries before it its groups are numbered from {shift + 1}, so the number "
                "would mean another entry's group; name the group, (?P<q>...), and "
                "refer to it as (?P=q)"
            )
        shift += compiled.groups
        for name in compiled.groupindex:
            if name in names:
                raise ConfigError(
                    f"{key}: group name {name!r} is also used in "
                    f"telemetry.redact_patterns[{names[name]}], and the patterns are joined "
                    "into one regex; rename one of them"
                )
            names[name] = index


def load_config(path: str | None, env: Mapping[str, str] | None = None) -> Config:
    """Load `path`, or the embedded default config when `path` is None."""
    text = _read(path)
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"(file): not valid YAML: {exc}") from None
    return parse_config(data, env)


def _load_yaml(text: str) -> Any:
    """`yaml.safe_load` (the same SafeLoader, so the same tags and safety), with the
    node tree checked for a key given twice before it is built: YAML itself would keep
    the last one without a word, so two `fast:` aliases would quietly become one."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(loader, node, "", set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_duplicate_keys(
    loader: yaml.SafeLoader, node: yaml.Node, path: str, seen: set[int]
) -> None:
    """Raise at the first key a mapping holds twice, by its full path and both lines.
    Keys compare as YAML reads them (`1` and `"1"` differ, `yes` and `true` do not);
    `<<` merge keys are left out: a key of the mapping itself overrides a merged one."""
    if id(node) in seen:  # an alias to a node already walked (anchors may recurse)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(loader, item, f"{path}[{index}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[tuple[type, Any], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node)
            where = _join(path, str(key))
            line = key_node.start_mark.line + 1
            # By type too: 1 == True, yet YAML keeps `1:` and `true:` as two keys. A key
            # that is a collection is left to the schema, which refuses it.
            if isinstance(key_node, yaml.ScalarNode):
                typed = (type(key), key)
                if typed in first:
                    raise ConfigError(
                        f"{where}: given twice, at lines {first[typed]} and {line}; YAML "
                        "would keep only the last one, so remove or rename one of them"
                    )
                first[typed] = line
            _check_duplicate_keys(loader, value_node, where, seen)


def _read(path: str | None) -> str:
    if path is None:
        return resources.files("proxy").joinpath("default.yaml").read_text(encoding="utf-8")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"(file): cannot read config file {path!r}: {exc.strerror}") from None
