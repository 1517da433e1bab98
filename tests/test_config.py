"""Config loading: typed schema, ${ENV} interpolation and errors naming the exact key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from instrumentation.logging import Redactor, redactor_for
from instrumentation.sampling import make_sampler
from instrumentation.tracecontext import Parent
from proxy.config import TRACES_SAMPLERS, ConfigError, load_config, parse_config
from proxy.runtime import compile_config

ISSUE_EXAMPLE = """
server: {host: 127.0.0.1, port: 4000, max_body_bytes: 33554432}
providers:
  openai:    {kind: openai, base_url: "https://api.openai.com", api_key: "${OPENAI_API_KEY}"}
  anthropic: {kind: anthropic, base_url: "https://api.anthropic.com"}
  local:     {kind: openai, base_url: "http://127.0.0.1:8000", provider_name: vllm}
  azure-eu:  {kind: azure_openai, base_url: "https://myres.openai.azure.com",
              api_key: "${AZURE_KEY}", api_version: "2024-10-21"}
models:
  fast:
    targets:
      - {provider: local, model: smollm2}
      - {provider: openai, model: gpt-4o-mini}
"""


def _refusal(data: dict[str, Any]) -> str:
    """The message of the ConfigError that compiling `data` must raise."""
    with pytest.raises(ConfigError) as info:
        _compile(data)
    return str(info.value)


def _compile(data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return compile_config(parse_config(data, env or {}))


def test_the_documented_example_loads(tmp_path: Path) -> None:
    """The example config from the README/issue compiles with its env vars set."""
    path = tmp_path / "c.yaml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(str(path), {"OPENAI_API_KEY": "sk-a", "AZURE_KEY": "az"})
    runtime = compile_config(config)
    assert [t.label for t in runtime.routes["fast"].targets] == [
        "local/smollm2",
        "openai/gpt-4o-mini",
    ]
    assert runtime.providers["local"].system == "vllm"
    assert runtime.providers["azure-eu"].system == "azure.ai.openai"
    assert runtime.defaults["openai"].name == "openai"


def test_embedded_default_is_a_transparent_passthrough() -> None:
    """No config file: OpenAI and Anthropic public APIs, client keys forwarded."""
    runtime = compile_config(load_config(None, {}))
    assert runtime.config.server.port == 4000
    assert runtime.providers["openai"].settings.base_url == "https://api.openai.com"
    assert runtime.providers["anthropic"].settings.base_url == "https://api.anthropic.com"
    assert all(p.settings.api_key is None for p in runtime.providers.values())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "providers": {"openai": {"kind": "openai", "base_url": "http://x"}},
                "models": {
                    "gpt-4o": {
                        "targets": [
                            {"provider": "openai", "model": "a"},
                            {"provider": "azure-eu", "model": "b"},
                        ]
                    }
                },
            },
            "models.gpt-4o.targets[1].provider: unknown provider 'azure-eu'",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "http://x", "bogus": 1}}},
            "providers.p: object contains unknown field `bogus`",
        ),
        (
            {
                "providers": {"p": {"kind": "openai", "base_url": "http://x"}},
                "server": {"port": "eighty"},
            },
            "server.port: expected `int`, got `str`",
        ),
        (
            {"providers": {"p": {"kind": "gemini", "base_url": "http://x"}}},
            "providers.p.kind: invalid enum value 'gemini'",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "ftp://x"}}},
            "providers.p.base_url: expected an http(s) URL",
        ),
        (
            {"providers": {"p": {"kind": "azure_openai", "base_url": "https://x"}}},
            "providers.p.api_version: required for kind azure_openai",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "http://x"}}}
            | {"server": {"pool_size": 0}},
            "server.pool_size: expected `int` >= 1",
        ),
        (
            {
                "providers": {
                    "p": {"kind": "openai", "base_url": "http://x", "headers": {"Host": "v"}}
                }
            },
            "providers.p.headers: 'Host' is set by spangate",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "http://x:99999"}}},
            "providers.p.base_url: the host or port cannot be used",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "https://u:secret@x"}}},
            "providers.p.base_url: must not carry credentials",
        ),
        (
            # Refused for its credentials before its port: the message must not quote them.
            {"providers": {"p": {"kind": "openai", "base_url": "ftp://u:secret@x:99999"}}},
            "providers.p.base_url: must not carry credentials",
        ),
        (
            {
                "providers": {
                    "p": {"kind": "openai", "base_url": "http://x", "headers": {"a b": "1"}}
                }
            },
            "providers.p.headers: 'a b' is not a valid header name",
        ),
        (
            {
                "providers": {
                    "p": {"kind": "openai", "base_url": "http://x", "headers": {"X-A": "1\nB: 2"}}
                }
            },
            "providers.p.headers.X-A: the value holds a line break",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "http://x", "api_key": "sk-1\n"}}},
            "providers.p.api_key: holds a line break",
        ),
        (
            {
                "providers": {"p": {"kind": "openai", "base_url": "http://x"}},
                "models": {"m": {"targets": []}},
            },
            "models.m.targets: list at least one target",
        ),
        (
            {
                "providers": {
                    "o": {"kind": "openai", "base_url": "http://x"},
                    "a": {"kind": "anthropic", "base_url": "http://y"},
                },
                "models": {
                    "m": {
                        "targets": [
                            {"provider": "o", "model": "x"},
                            {"provider": "a", "model": "y"},
                        ]
                    }
                },
            },
            "models.m.targets: mixes OpenAI-format and Anthropic-format",
        ),
        ({}, "providers: at least one provider is required"),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "http://x"}}}
            | {"server": {"timeouts": {"first_byte_s": 0}}},
            "server.timeouts.first_byte_s: expected `float` > 0.0",
        ),
        (
            {
                "providers": {
                    "p": {"kind": "openai", "base_url": "http://x", "timeouts": {"idle_s": -1}}
                }
            },
            "providers.p.timeouts.idle_s: expected `float` > 0.0",
        ),
    ],
)
def test_errors_name_the_exact_key(data: dict[str, Any], message: str) -> None:
    """Every config error starts with the key path that must be fixed."""
    assert _refusal(data).startswith(message)


def test_env_interpolation_with_defaults_and_escapes() -> None:
    """${VAR}, ${VAR:-default} and $$ behave like a shell's."""
    data = {
        "providers": {
            "p": {
                "kind": "openai",
                "base_url": "${BASE:-http://127.0.0.1:9}",
                "api_key": "${KEY}",
                "headers": {"x-cost": "$$5"},
            }
        }
    }
    config = parse_config(data, {"KEY": "sk-test"})
    provider = config.providers["p"]
    assert (provider.base_url, provider.api_key) == ("http://127.0.0.1:9", "sk-test")
    assert provider.headers == {"x-cost": "$5"}


def test_missing_env_var_without_default_names_variable_and_key() -> None:
    """A missing variable is a startup error that names both the variable and the key."""
    data = {"providers": {"p": {"kind": "openai", "base_url": "http://x", "api_key": "${NOPE}"}}}
    with pytest.raises(ConfigError, match=r"providers\.p\.api_key: environment variable NOPE"):
        parse_config(data, {})


def _api_key(text: str, env: dict[str, str]) -> str | None:
    data = {"providers": {"p": {"kind": "openai", "base_url": "http://x", "api_key": text}}}
    return parse_config(data, env).providers["p"].api_key


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${K-fallback}", {}, "fallback"),
        ("${K-fallback}", {"K": ""}, ""),
        ("${K:-fallback}", {"K": ""}, "fallback"),
        ("${K:-fallback}", {"K": "sk"}, "sk"),
        ("${X:-${Y:-z}}", {}, "z"),
        ("${X:-${Y:-z}}", {"Y": "y"}, "y"),
        ("${K:-${NOT_SET}}", {"K": "sk"}, "sk"),
        ("${K:?set K}", {"K": "sk"}, "sk"),
        ("pre-${K}-$$-$PLAIN-$", {"K": "sk"}, "pre-sk-$-$PLAIN-$"),
    ],
)
def test_env_references_read_as_a_posix_shell_reads_them(
    text: str, env: dict[str, str], expected: str
) -> None:
    """`-` defaults an unset variable, `:-` an unset or empty one, a default may hold a
    reference (looked up only when used), and a `$` before anything but `{` or `$` stays."""
    assert _api_key(text, env) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${OPENAI_API_KEY", "'${OPENAI_API_KEY' is not closed: add the } that ends it"),
        ("${K:-default", "'${K:-...' is not closed"),
        ("${OPENAI_API_KEY:-sk-proj-SECRET123", "'${OPENAI_API_KEY:-...' is not closed"),
        ("${A B}", "'${A...' is not a supported reference: after the name comes }, :-default"),
        ("${K+alt}", "'${K...' is not a supported reference"),
        ("${}", "'${}' is not a valid reference: a variable name is letters"),
        ("${1K}", "'${...' is not a valid reference"),
        ("${K:-${A B}}", "'${A...' is not a supported reference"),
    ],
)
def test_a_malformed_env_reference_is_refused_at_its_key_quoting_its_name_only(
    text: str, message: str
) -> None:
    """Text that starts a reference but is not one used to be kept as literal text (an
    unclosed `${OPENAI_API_KEY` went upstream as the key): it is an error at the key,
    quoting the reference's name and operator (what follows may be a literal key), with
    how to write a literal `$`."""
    with pytest.raises(ConfigError) as info:
        _api_key(text, {"K": "sk", "OPENAI_API_KEY": "sk"})
    assert str(info.value).startswith(f"providers.p.api_key: {message}")
    assert str(info.value).endswith("(write $$ for a literal $)")
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("${K:?set K to the OpenAI key}", {}, "K is not set: set K to the OpenAI key"),
        ("${K:?set K to the OpenAI key}", {"K": ""}, "K is empty: set K to the OpenAI key"),
        ("${K?}", {}, "K is not set"),
    ],
)
def test_a_required_env_reference_fails_with_its_own_message(
    text: str, env: dict[str, str], message: str
) -> None:
    """`${VAR:?message}` (unset or empty) and `${VAR?message}` (unset) stop with the
    operator's message, at the key."""
    with pytest.raises(ConfigError) as info:
        _api_key(text, env)
    assert str(info.value) == f"providers.p.api_key: environment variable {message}"


def test_interpolated_numbers_and_booleans_are_read_by_the_key_type(tmp_path: Path) -> None:
    """YAML reads `port: ${PORT:-4000}` as text: where the key takes a number or a
    boolean, the interpolated text is read as one, quoted or not; a text key keeps the
    text even when it looks like a number or a date."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "server:\n"
        "  port: ${PORT:-4000}\n"
        "  route_headers: ${ROUTE_HEADERS:-false}\n"
        '  drain_timeout_s: "${DRAIN:-2.5}"\n'
        "providers:\n"
        "  p:\n"
        "    kind: azure_openai\n"
        "    base_url: http://x\n"
        "    api_version: ${V}\n"
        "    api_key: ${K}\n"
        "models:\n"
        "  fast:\n"
        "    targets:\n"
        "      - provider: p\n"
        "        model: ${M}\n"
        "        weight: '${W}'\n"
    )
    env = {"ROUTE_HEADERS": "True", "V": "2024-10-21", "K": "0123", "M": "4", "W": "2"}
    config = load_config(str(path), env)
    assert (config.server.port, config.server.route_headers) == (4000, True)
    assert config.server.drain_timeout_s == 2.5
    assert config.providers["p"].api_version == "2024-10-21"
    assert config.providers["p"].api_key == "0123"
    target = config.models["fast"].targets[0]
    assert (target.model, target.weight) == ("4", 2.0)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {**env, "PORT": "four thousand"})
    assert str(info.value).startswith(
        "server.port: expected `int`, got `str`; the value came from an environment "
        "variable reference"
    )


def test_unreadable_and_invalid_yaml_files_are_reported(tmp_path: Path) -> None:
    """A missing file or broken YAML is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


DUPLICATE_ALIAS = """
providers:
  openai: {kind: openai, base_url: "http://a"}
models:
  fast:
    targets: [{provider: openai, model: a}]
  fast:
    targets: [{provider: openai, model: b}]
"""
DUPLICATE_STRATEGY = """
providers:
  openai: {kind: openai, base_url: "http://a"}
models:
  fast:
    strategy: ordered
    targets: [{provider: openai, model: a}]
    strategy: weighted
"""
DUPLICATE_PROVIDER = """
providers:
  openai: {kind: openai, base_url: "http://a"}
  openai: {kind: openai, base_url: "http://b"}
"""
DUPLICATE_IN_A_LIST = """
providers:
  openai: {kind: openai, base_url: "http://a"}
models:
  fast:
    targets:
      - {provider: openai, model: a}
      - {provider: openai, model: b, model: c}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DUPLICATE_ALIAS, "models.fast: given twice, at lines 5 and 7"),
        (DUPLICATE_STRATEGY, "models.fast.strategy: given twice, at lines 6 and 8"),
        (DUPLICATE_PROVIDER, "providers.openai: given twice, at lines 3 and 4"),
        (DUPLICATE_IN_A_LIST, "models.fast.targets[1].model: given twice, at lines 8 and 8"),
        ("server: {port: 1}\nserver: {port: 2}\n", "server: given twice, at lines 1 and 2"),
    ],
)
def test_a_yaml_key_given_twice_is_refused_at_its_path_and_lines(
    tmp_path: Path, text: str, message: str
) -> None:
    """YAML keeps the last of two equal keys without a word (two `fast:` aliases became
    one): a key given twice is an error naming its full path and both lines."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert str(info.value).startswith(message)
    assert "remove or rename one of them" in str(info.value)


def test_keys_yaml_reads_as_different_values_and_merge_keys_are_not_duplicates(
    tmp_path: Path,
) -> None:
    """`1:` and `"1":` are two keys, and a key beside a `<<:` merge overrides the merged
    one: neither is a duplicate. The loader is still safe_load's: a Python tag is refused."""
    path = tmp_path / "c.yaml"
    path.write_text("telemetry: {resource_attributes: {1: a, '1': b}}\n")
    with pytest.raises(ConfigError, match="resource_attributes: key 1: expected `str`"):
        load_config(str(path), {})  # the schema's refusal, not "given twice"
    path.write_text(
        "providers:\n"
        "  openai: &p {kind: openai, base_url: 'http://a'}\n"
        "  other: {<<: *p, base_url: 'http://b'}\n"
    )
    config = load_config(str(path), {})
    assert config.providers["other"].base_url == "http://b"
    path.write_text("providers: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path), {})


def _one_alias(**model: Any) -> dict[str, Any]:
    """A config with provider `p` and alias `chat` whose keys are `model` (over one target)."""
    return {
        "providers": {"p": {"kind": "openai", "base_url": "http://x"}},
        "models": {"chat": {"targets": [{"provider": "p", "model": "m"}], **model}},
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _one_alias(circuit={"consecutive_failures": 0}),
            "models.chat.circuit.consecutive_failures: expected `int` >= 1",
        ),
        (
            _one_alias(circuit={"error_rate": 5}),
            "models.chat.circuit.error_rate: must be between 0 and 1",
        ),
        (
            _one_alias(circuit={"error_rate": -1}),
            "models.chat.circuit.error_rate: must be between 0 and 1",
        ),
        (
            _one_alias(circuit={"cooldown_s": -10}),
            "models.chat.circuit.cooldown_s: expected `float` > 0.0",
        ),
        (
            _one_alias(circuit={"window_s": 0}),
            "models.chat.circuit.window_s: expected `float` > 0.0",
        ),
        (
            _one_alias(circuit={"min_requests": 0}),
            "models.chat.circuit.min_requests: expected `int` >= 1",
        ),
        (_one_alias(hedge={"after_s": -1}), "models.chat.hedge.after_s: expected `float` > 0.0"),
        (_one_alias(hedge={"after_s": 0}), "models.chat.hedge.after_s: expected `float` > 0.0"),
        (
            _one_alias(hedge={"percentile": 0.9, "min_samples": 0}),
            "models.chat.hedge.min_samples: expected `int` >= 1",
        ),
        (
            _one_alias(hedge={"percentile": 1}),
            "models.chat.hedge.percentile: must be between 0 and 1",
        ),
        (
            _one_alias(retry={"same_target": ["transient"], "same_target_max": -3}),
            "models.chat.retry.same_target_max: expected `int` >= 1",
        ),
        (
            _one_alias(retry={"max_attempts": 0}),
            "models.chat.retry.max_attempts: expected `int` >= 1",
        ),
        (
            _one_alias(retry={"deadline_s": 0}),
            "models.chat.retry.deadline_s: expected `float` > 0.0",
        ),
        (
            _one_alias(retry={"backoff": {"initial_s": -1}}),
            "models.chat.retry.backoff.initial_s: expected `float` >= 0.0",
        ),
        (
            _one_alias(retry={"backoff": {"max_s": -1}}),
            "models.chat.retry.backoff.max_s: expected `float` >= 0.0",
        ),
        (
            _one_alias(retry={"backoff": {"multiplier": 0.5}}),
            "models.chat.retry.backoff.multiplier: expected `float` >= 1.0",
        ),
        (
            _one_alias(targets=[{"provider": "p", "model": "m", "max_inflight": 0}]),
            "models.chat.targets[0].max_inflight: expected `int` >= 1",
        ),
        (
            _one_alias(targets=[{"provider": "p", "model": "m", "weight": -1}]),
            "models.chat.targets[0].weight: expected `float` >= 0.0",
        ),
        (
            _one_alias(targets=[{"provider": "p", "model": ""}]),
            "models.chat.targets[0].model: expected `str` of length >= 1",
        ),
        (
            _one_alias(
                targets=[{"provider": "p", "model": "m", "price": {"input": -1, "output": 1}}]
            ),
            "models.chat.targets[0].price.input: expected `float` >= 0.0",
        ),
        (
            _one_alias(
                strategy="weighted",
                targets=[
                    {"provider": "p", "model": "m", "weight": 0},
                    {"provider": "p", "model": "n", "weight": 0},
                ],
            ),
            "models.chat.targets: every target has weight 0",
        ),
        (
            _one_alias(targets=[{"provider": "p", "model": "m"}, {"provider": "p", "model": "m"}]),
            "models.chat.targets[1]: the same target as targets[0] (p/m)",
        ),
        (
            _one_alias() | {"server": {"port": 99999}},
            "server.port: must be between 0 and 65535",
        ),
        (
            _one_alias() | {"server": {"port": -1}},
            "server.port: must be between 0 and 65535",
        ),
        (
            _one_alias() | {"telemetry": {"prometheus": {"port": 70000}}},
            "telemetry.prometheus.port: must be between 0 and 65535",
        ),
        (
            _one_alias() | {"server": {"max_body_bytes": 0}},
            "server.max_body_bytes: expected `int` >= 1",
        ),
        (
            _one_alias() | {"server": {"drain_timeout_s": -1}},
            "server.drain_timeout_s: expected `float` >= 0.0",
        ),
        (
            _one_alias() | {"telemetry": {"metric_export_interval_ms": 0}},
            "telemetry.metric_export_interval_ms: expected `int` >= 1",
        ),
        (
            _one_alias() | {"telemetry": {"content_max_bytes": 0}},
            "telemetry.content_max_bytes: expected `int` >= 1",
        ),
        (
            _one_alias() | {"telemetry": {"prices": {"m": {"input": 1, "output": -2}}}},
            "telemetry.prices.m.output: expected `float` >= 0.0",
        ),
    ],
)
def test_out_of_range_numbers_are_refused_at_their_key_with_the_allowed_range(
    data: dict[str, Any], message: str
) -> None:
    """A number outside its meaningful range (negative waits, zero counts, a rate above 1,
    a port above 65535) is a startup error naming the key and the range it must be in."""
    assert _refusal(data).startswith(message)


def test_documented_zeros_keep_their_meaning() -> None:
    """0 stays valid where the README gives it a meaning: total_s 0 (no cap), port 0 (any
    free), weight 0 (never first), backoff 0 (retry at once), drain 0 (stop at once)."""
    data = _one_alias(
        strategy="weighted",
        targets=[{"provider": "p", "model": "m", "weight": 0}, {"provider": "p", "model": "n"}],
        retry={"backoff": {"initial_s": 0}},
        circuit={"error_rate": 1},
    ) | {"server": {"port": 0, "drain_timeout_s": 0, "timeouts": {"total_s": 0}}}
    runtime = _compile(data)
    assert runtime.config.server.port == 0
    assert [t.weight for t in runtime.routes["chat"].targets] == [0, 1]


@pytest.mark.parametrize(
    "base_url",
    [
        "http://x:99999?api-key=SECRET",
        "http://x:99999/v1#SECRET",
        "ftp://x/v1?key=SECRET",
        "http://u:SECRET@x:99999?api-key=SECRET",
        "http://x:bad/openai?api-key=SECRET",
    ],
)
def test_base_url_errors_never_quote_a_secret(base_url: str) -> None:
    """A base_url that is refused (bad port, wrong scheme, a query) is reported without
    its query, fragment or userinfo, any of which may hold a key."""
    data = {"providers": {"p": {"kind": "openai", "base_url": base_url}}}
    with pytest.raises(ConfigError) as info:
        _compile(data)
    assert str(info.value).startswith("providers.p.base_url: ")
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    "base_url", ["http://[::1", "http://[zz]", "http://u:SECRET@[::1?key=SECRET"]
)
def test_a_base_url_with_a_bad_ipv6_host_is_refused_at_its_key_unquoted(base_url: str) -> None:
    """urlsplit raises on an unclosed bracket or a bracketed non-address: that is a config
    error at the key saying how to write one, and the URL (which did not parse, so its
    secrets cannot be left out) is not quoted."""
    data = {"providers": {"p": {"kind": "openai", "base_url": base_url}}}
    message = _refusal(data)
    assert message.startswith("providers.p.base_url: not a URL spangate can read: ")
    assert "closed brackets, e.g. 'http://[::1]:8000'" in message
    assert "SECRET" not in message


def test_a_base_url_with_a_bracketed_ipv6_address_is_accepted() -> None:
    """A valid IPv6 address in brackets, with a port, is a usable base_url."""
    data = {"providers": {"p": {"kind": "openai", "base_url": "http://[::1]:8000"}}}
    provider = _compile(data).providers["p"]
    assert (provider.host, provider.port) == ("::1", 8000)


@pytest.mark.parametrize(
    ("kind", "base_url", "kept"),
    [
        ("openai", "https://api.openai.com/v1", "https://api.openai.com"),
        ("openai", "http://127.0.0.1:8000/vllm/V1/", "http://127.0.0.1:8000/vllm"),
        ("anthropic", "https://api.anthropic.com/v1", "https://api.anthropic.com"),
        ("azure_openai", "https://myres.openai.azure.com/openai", "https://myres.openai.azure.com"),
    ],
)
def test_a_base_url_ending_in_the_kinds_path_root_is_refused(
    kind: str, base_url: str, kept: str
) -> None:
    """The request path (`/v1/chat/completions`; Azure's `/openai/deployments/...`) is
    appended to base_url, so one written as OPENAI_BASE_URL is (`.../v1`) would send
    `/v1/v1/...`: refused, saying to drop the ending and showing the URL without it."""
    root = "/openai" if kind == "azure_openai" else "/v1"
    data = {"providers": {"p": {"kind": kind, "base_url": base_url, "api_version": "1"}}}
    message = _refusal(data)
    assert message.startswith(f"providers.p.base_url: ends in {root}, ")
    assert f"would go to {root}{root}/...; drop the trailing {root}: {kept!r}" in message


def test_azure_base_urls_may_end_in_v1_and_others_may_have_prefixes() -> None:
    """Azure deployment paths start with /openai, so a gateway prefix ending in /v1 is
    no doubling; a prefix that does not end in the root is fine for any kind."""
    data = {
        "providers": {
            "az": {"kind": "azure_openai", "base_url": "https://gw.example/v1", "api_version": "1"},
            "o": {"kind": "openai", "base_url": "https://myres.openai.azure.com/openai"},
            "a": {"kind": "anthropic", "base_url": "http://127.0.0.1:8000/v1beta"},
        }
    }
    providers = _compile(data).providers
    assert providers["az"].settings.base_url == "https://gw.example/v1"
    assert providers["o"].settings.base_url == "https://myres.openai.azure.com/openai"


@pytest.mark.parametrize(
    "base_url",
    ["http://exa mple.com", "http://-api.example", "http://api-.example:80", "http://[::1]x"],
)
def test_a_base_url_whose_host_is_no_host_name_or_address_is_refused(base_url: str) -> None:
    """A space in the host, a label starting or ending with `-`, or text after an
    IPv6 address's `]` (which urlsplit drops) is refused at the key."""
    data = {"providers": {"p": {"kind": "openai", "base_url": base_url}}}
    assert "is not a host name" in _refusal(data)
    assert _refusal(data).startswith("providers.p.base_url: the host in ")


@pytest.mark.parametrize(
    "base_url",
    ["http://my_service:8000", "http://10.0.0.7", "http://[::1]:8000", "https://bücher.example."],
)
def test_host_names_with_underscores_addresses_and_idna_names_are_accepted(base_url: str) -> None:
    """Docker service names (`my_service`), IPv4 and bracketed IPv6 addresses,
    internationalised names and a trailing root dot are hosts."""
    data = {"providers": {"p": {"kind": "openai", "base_url": base_url}}}
    assert _compile(data).providers["p"].host


def test_an_alias_named_passthrough_is_refused() -> None:
    """Metrics label requests that no alias serves `spangate_route="passthrough"`: an
    alias of that name would merge its series with theirs, so the name is refused."""
    data = {
        "providers": {"p": {"kind": "openai", "base_url": "http://x"}},
        "models": {"passthrough": {"targets": [{"provider": "p", "model": "m"}]}},
    }
    message = _refusal(data)
    assert message.startswith("models.passthrough: this name is reserved")
    assert 'spangate_route="passthrough"' in message


def test_a_bad_port_is_reported_with_the_url_minus_secrets() -> None:
    """The port error still quotes what the operator must fix: scheme, host, port, path."""
    data = {"providers": {"p": {"kind": "openai", "base_url": "http://x:99999/openai"}}}
    with pytest.raises(ConfigError, match=r"cannot be used in 'http://x:99999/openai'"):
        _compile(data)


@pytest.mark.parametrize("key", ["fallbacks", "context_fallbacks"])
def test_a_fallback_alias_of_another_wire_format_is_refused(key: str) -> None:
    """An OpenAI-format alias may not fall back to an Anthropic-format one: the client's
    OpenAI body would be replayed to an Anthropic provider. The error names the exact
    list entry and both formats."""
    data = {
        "providers": {
            "o": {"kind": "openai", "base_url": "http://x"},
            "a": {"kind": "anthropic", "base_url": "http://x", "api_key": "sk-ant"},
        },
        "models": {
            "chat": {"targets": [{"provider": "o", "model": "m"}], key: ["same", "claude"]},
            "same": {"targets": [{"provider": "o", "model": "n"}]},
            "claude": {"targets": [{"provider": "a", "model": "c"}]},
        },
    }
    assert _refusal(data).startswith(
        f"models.chat.{key}[1]: alias 'claude' serves the Anthropic format but 'chat' "
        "serves the OpenAI format"
    )


def test_a_fallback_alias_of_the_same_wire_format_is_accepted() -> None:
    """OpenAI and Azure OpenAI providers share the OpenAI format, so they may back each other."""
    data = {
        "providers": {
            "o": {"kind": "openai", "base_url": "http://x", "api_key": "k"},
            "az": {
                "kind": "azure_openai",
                "base_url": "https://r.openai.azure.com",
                "api_key": "k2",
                "api_version": "2024-10-21",
            },
        },
        "models": {
            "chat": {"targets": [{"provider": "o", "model": "m"}], "fallbacks": ["eu"]},
            "eu": {"targets": [{"provider": "az", "model": "m"}]},
        },
    }
    assert _compile(data).routes["chat"].fallbacks == ("eu",)


def test_aliases_sharing_a_target_must_agree_on_its_circuit() -> None:
    """Two aliases naming the same provider/model share one breaker, so differing circuit
    settings are refused at the later alias's `circuit` key, naming the earlier alias
    (else whichever alias was requested first would set the breaker for both)."""
    data = _one_alias(circuit={"consecutive_failures": 1, "cooldown_s": 60})
    data["models"]["other"] = {
        "targets": [{"provider": "p", "model": "n"}],
        "circuit": {"enabled": False},
    }
    data["models"]["nocb"] = {
        "targets": [{"provider": "p", "model": "n"}, {"provider": "p", "model": "m"}],
        "circuit": {"enabled": False},
    }
    assert _refusal(data).startswith(
        "models.nocb.circuit: differs from models.chat.circuit, and both aliases name "
        "target p/m (models.nocb.targets[1], models.chat.targets[0])"
    )


def test_aliases_sharing_a_target_with_equal_circuits_are_accepted() -> None:
    """Equal settings, whether spelled out or defaulted, are no conflict."""
    data = _one_alias(circuit={"consecutive_failures": 5})
    data["models"]["again"] = {"targets": [{"provider": "p", "model": "m"}]}
    assert set(_compile(data).routes) == {"chat", "again"}


def _two_origins(**keys: str) -> dict[str, Any]:
    """Providers `openai` and `together` on different origins, `keys` as their api_key."""
    section = {
        "openai": {"kind": "openai", "base_url": "https://api.openai.com"},
        "together": {"kind": "openai", "base_url": "https://api.together.xyz"},
    }
    for name, key in keys.items():
        section[name]["api_key"] = key
    return {"providers": section}


def test_an_alias_forwarding_client_keys_to_two_origins_is_refused() -> None:
    """Failover from one vendor to another, neither with api_key, would hand the client's
    key for the first to the second: refused at the target that adds the second origin."""
    data = _two_origins() | {
        "models": {
            "m": {
                "targets": [
                    {"provider": "openai", "model": "gpt-4o-mini"},
                    {"provider": "together", "model": "llama-3-70b"},
                ]
            }
        }
    }
    with pytest.raises(ConfigError) as info:
        _compile(data)
    message = str(info.value)
    assert message.startswith(
        "models.m.targets[1]: a request to 'm' could send the API key the client sent to "
        "provider 'together' (https://api.together.xyz:443) as well as to provider 'openai' "
        "(https://api.openai.com:443)"
    )
    assert "set providers.together.api_key" in message


@pytest.mark.parametrize("key", ["fallbacks", "context_fallbacks"])
def test_a_fallback_chain_forwarding_client_keys_to_two_origins_is_refused(key: str) -> None:
    """The same holds through fallbacks, followed as far as failover follows them (here
    via a keyed middle alias); the error names the first alias's fallback entry. An
    empty api_key is no key: the client's is forwarded."""
    data = _two_origins(openai="")
    data["providers"]["keyed"] = {"kind": "openai", "base_url": "https://k.test", "api_key": "k"}
    data |= {
        "models": {
            "chat": {"targets": [{"provider": "openai", "model": "a"}], key: ["mid"]},
            "mid": {"targets": [{"provider": "keyed", "model": "b"}], "fallbacks": ["far"]},
            "far": {"targets": [{"provider": "together", "model": "c"}]},
        },
    }
    assert _refusal(data).startswith(
        f"models.chat.{key}[0]: through alias 'far', a request to 'chat' could send the "
        "API key the client sent to provider 'together'"
    )


@pytest.mark.parametrize(
    ("keys", "second"),
    [
        ({"together": "sk-together"}, "together"),
        ({"openai": "sk-openai"}, "together"),
        ({"openai": "sk-openai", "together": "sk-together"}, "together"),
        ({}, "openai-eu"),
    ],
    ids=["second-keyed", "first-keyed", "both-keyed", "same-origin"],
)
def test_client_keys_may_go_to_one_origin(keys: dict[str, str], second: str) -> None:
    """Accepted: at most one origin gets the client's key, because the others send their
    configured api_key, or because both providers are the same scheme, host and port."""
    data = _two_origins(**keys)
    data["providers"]["openai-eu"] = {"kind": "openai", "base_url": "https://api.openai.com/eu"}
    data["models"] = {
        "m": {
            "targets": [{"provider": "openai", "model": "a"}],
            "fallbacks": ["n"],
        },
        "n": {"targets": [{"provider": second, "model": "b"}]},
    }
    assert _compile(data).routes["m"].fallbacks == ("n",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"providers": {"p": {"kind": "opneai", "base_url": "http://x"}}},
            "providers.p.kind: invalid enum value 'opneai' (one of: anthropic, azure_openai, "
            "openai)",
        ),
        (
            {"providers": {"p": {"kind": "openai", "base_url": "http://x", "stream_usage": "x"}}},
            "providers.p.stream_usage: invalid enum value 'x' (one of: inject, passthrough)",
        ),
        (
            _one_alias(strategy="fastest"),
            "models.chat.strategy: invalid enum value 'fastest' (one of: least_inflight, "
            "lowest_cost, lowest_latency, ordered, round_robin, weighted)",
        ),
        (
            _one_alias(retry={"same_target": ["transient", "ratelimited"]}),
            "models.chat.retry.same_target[1]: invalid enum value 'ratelimited' (one of: "
            "caller_fault, connection, credential, model_unavailable, quota, rate_limited, "
            "timeout, transient, unknown)",
        ),
        (
            _one_alias() | {"telemetry": {"otlp_protocol": "http"}},
            "telemetry.otlp_protocol: invalid enum value 'http' (one of: grpc, http/protobuf)",
        ),
        (
            _one_alias() | {"telemetry": {"pipeline": "proc"}},
            "telemetry.pipeline: invalid enum value 'proc' (one of: auto, process, thread)",
        ),
        (
            _one_alias() | {"telemetry": {"capture_content": "span"}},
            "telemetry.capture_content: invalid enum value 'span' (one of: EVENT_ONLY, "
            "NO_CONTENT, SPAN_AND_EVENT, SPAN_ONLY)",
        ),
        (
            {"providers": {"p": {"kind": 3, "base_url": "http://x"}}},
            "providers.p.kind: expected `str`, got `int` (one of: anthropic, azure_openai, openai)",
        ),
    ],
)
def test_a_key_taking_fixed_names_lists_them_when_given_another(
    data: dict[str, Any], message: str
) -> None:
    """A typo in a key with a fixed set of values (kind, strategy, failure classes,
    stream_usage, otlp_protocol, pipeline, capture_content) names the values it takes."""
    with pytest.raises(ConfigError) as info:
        _compile(data)
    assert str(info.value) == message


def test_a_yaml_boolean_in_a_text_key_says_to_quote_it(tmp_path: Path) -> None:
    """`capture_content: yes` reaches spangate as true (YAML 1.1): the error says why and
    what to write, and a text key without fixed values gets the same hint."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers: {p: {kind: openai, base_url: 'http://x'}}\ntelemetry: {capture_content: yes}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert str(info.value) == (
        "telemetry.capture_content: expected `str | null`, got `bool`; YAML reads an unquoted "
        "yes, no, on, off, true or false as a boolean, so put the value in quotes (one of: "
        "EVENT_ONLY, NO_CONTENT, SPAN_AND_EVENT, SPAN_ONLY)"
    )
    path.write_text("providers: {p: {kind: openai, base_url: 'http://x', provider_name: on}}\n")
    with pytest.raises(
        ConfigError, match=r"^providers\.p\.provider_name: .*put the value in quotes$"
    ):
        load_config(str(path), {})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            "telemetry: {resource_attributes: {service.namespace: llm, deployment.environment: 5}}",
            "telemetry.resource_attributes.deployment.environment: expected `str`, got `int`",
        ),
        (
            "telemetry: {otlp_headers: {authorization: Basic abc, x-retries: 3}}",
            "telemetry.otlp_headers.x-retries: expected `str`, got `int`",
        ),
        (
            "providers: {p: {kind: openai, base_url: 'http://x', headers: {X-Team: a, X-Tier: 2}}}",
            "providers.p.headers.X-Tier: expected `str`, got `int`",
        ),
    ],
    ids=["resource_attributes", "otlp_headers", "provider_headers"],
)
def test_an_error_inside_a_map_names_the_entry_key(
    tmp_path: Path, document: str, message: str
) -> None:
    """A bad value in a map of names (resource attributes, headers) is reported at its own
    key, dots in the key kept, where msgspec alone says `resource_attributes[...]`; the
    good entry before it is not the one named, and no value is quoted."""
    path = tmp_path / "c.yaml"
    path.write_text(document + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert str(info.value) == message


def test_a_map_key_yaml_reads_as_a_number_or_boolean_is_named(tmp_path: Path) -> None:
    """`1:` or `on:` as a resource attribute's name reaches spangate as an int or a bool:
    the error is at the map (not "(top level)") and says which key, and how to fix a bool."""
    path = tmp_path / "c.yaml"
    path.write_text("telemetry: {resource_attributes: {team: a, 1: b}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert str(info.value) == "telemetry.resource_attributes: key 1: expected `str`, got `int`"
    path.write_text("telemetry: {resource_attributes: {on: b}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert str(info.value) == (
        "telemetry.resource_attributes: key True: expected `str`, got `bool`; YAML reads an "
        "unquoted yes, no, on, off, true or false as a boolean, so put the key in quotes"
    )


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (
            ["sk-live-\\w+", "([a-z"],
            "telemetry.redact_patterns[1]: '([a-z' is not a valid regular expression: "
            "unterminated character set at position 1",
        ),
        (
            ["(?i)secret"],
            "telemetry.redact_patterns[0]: '(?i)secret' cannot be joined with the other "
            "patterns into one regex (global flags not at the start of the expression)",
        ),
        (
            ["(a)b", "(['\"])token=.*?\\1"],
            "telemetry.redact_patterns[1]: '([\\'\"])token=.*?\\\\1' refers to a group by "
            "number, but joined after the entries before it its groups are numbered from 2",
        ),
        (["x*"], "telemetry.redact_patterns[0]: 'x*' matches an empty string"),
        (
            ["(?P<v>a+)", "(?P<v>b+)"],
            "telemetry.redact_patterns[1]: group name 'v' is also used in "
            "telemetry.redact_patterns[0]",
        ),
    ],
)
def test_a_redact_pattern_the_redactor_cannot_use_is_refused_at_its_index(
    patterns: list[str], message: str
) -> None:
    """A pattern that would stop `serve` with a raw re.error (alone, or joined with the
    others as the redactor joins them), or one that matches nothing but still redacts
    everywhere, is a config error naming the list entry and re's reason."""
    with pytest.raises(ConfigError) as info:
        _compile(_one_alias() | {"telemetry": {"redact_patterns": patterns}})
    assert str(info.value).startswith(message)


def test_redact_patterns_config_accepts_build_the_redactor() -> None:
    """What the check accepts, the real Redactor compiles and applies (scoped flags, named
    groups, a numbered back-reference in the first entry, whose numbers do not shift);
    what it refuses for flags, the Redactor cannot compile."""
    patterns = ["(['\"])key=.*?\\1", "(?i:secret-\\w+)", "(?P<user>user=\\S+)"]
    runtime = _compile(_one_alias() | {"telemetry": {"redact_patterns": patterns}})
    redactor = redactor_for(runtime.config)
    text = "a SECRET-abc user=bob 'key=x y' b"
    assert redactor.text(text) == "a [REDACTED] [REDACTED] [REDACTED] b"
    with pytest.raises(re.error):
        Redactor(["(?i)secret"])
    # Refused after an entry with a group: there \1 names that entry's group instead.
    assert Redactor(["(a)b", patterns[0]]).text("'key=x'") == "'key=x'"


@pytest.mark.parametrize(
    ("telemetry", "message"),
    [
        (
            {"traces_sampler": "bogus"},
            "telemetry.traces_sampler: unknown sampler 'bogus' (one of: always_on, always_off, "
            "traceidratio, parentbased_always_on, parentbased_always_off, "
            "parentbased_traceidratio)",
        ),
        (
            {"traces_sampler": "parentbased_traceidratio", "traces_sampler_arg": "abc"},
            "telemetry.traces_sampler_arg: must be a ratio between 0 and 1 for the traceidratio "
            "samplers (e.g. 0.1 keeps one trace in ten), got 'abc'",
        ),
        ({"traces_sampler": "traceidratio", "traces_sampler_arg": 1.5}, "got '1.5'"),
        ({"traces_sampler": "traceidratio", "traces_sampler_arg": "-0.1"}, "got '-0.1'"),
        ({"traces_sampler_arg": "nan"}, "got 'nan'"),
    ],
)
def test_an_unknown_sampler_or_a_sampler_arg_that_is_no_ratio_is_refused(
    telemetry: dict[str, Any], message: str
) -> None:
    """sampling.py would quietly sample everything for a misspelt sampler or a bad ratio;
    in the config file that is an error naming the key and the allowed values."""
    with pytest.raises(ConfigError) as info:
        _compile(_one_alias() | {"telemetry": telemetry})
    assert message in str(info.value)


ROOT = 0x0123456789ABCDEF0123456789ABCDEF
SAMPLED_PARENT = Parent(ROOT, 1, True, None)
UNSAMPLED_PARENT = Parent(ROOT, 1, False, None)


@pytest.mark.parametrize("name", TRACES_SAMPLERS)
def test_every_accepted_sampler_name_is_one_sampling_py_implements(name: str) -> None:
    """Each name the check accepts (in any case) builds the sampler it names, not the
    fallback for unknown names: with ratio 0, a root is sampled only by always_on, and
    only parentbased_* samplers follow the parent's decision."""
    config = parse_config({"telemetry": {"traces_sampler": name.upper(), "traces_sampler_arg": 0}})
    telemetry = config.telemetry
    sampler = make_sampler(telemetry.traces_sampler, telemetry.traces_sampler_arg)
    follows_parent = name.startswith("parentbased_")
    assert sampler(None, ROOT) is name.endswith("always_on")
    assert sampler(SAMPLED_PARENT, ROOT) is (follows_parent or name == "always_on")
    assert sampler(UNSAMPLED_PARENT, ROOT) is (not follows_parent and name == "always_on")


def test_a_sampler_ratio_may_be_written_as_a_yaml_number(tmp_path: Path) -> None:
    """`traces_sampler_arg: 0.1` (a number in YAML) is taken as the text "0.1", as
    OTEL_TRACES_SAMPLER_ARG would hold it; empty values mean unset, as before."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers: {p: {kind: openai, base_url: 'http://x'}}\n"
        "telemetry: {traces_sampler: parentbased_traceidratio, traces_sampler_arg: 0.1}\n"
    )
    assert load_config(str(path), {}).telemetry.traces_sampler_arg == "0.1"
    empty = {"traces_sampler": "${S:-}", "traces_sampler_arg": "${A:-}"}
    assert parse_config({"telemetry": empty}, {}).telemetry.traces_sampler == ""


@pytest.mark.parametrize(
    "endpoint",
    [
        "collector:4317",
        "localhost:4318",
        "10.0.0.5:4317",
        "grpc://collector:4317",
        "http://:4318",
        "http://[::1:4318",
        "user:SECRET@collector:4317",
    ],
)
def test_an_otlp_endpoint_without_http_scheme_or_host_is_refused_unquoted(endpoint: str) -> None:
    """Without http(s):// every export would fail at runtime with an SDK error; the
    message shows what to write instead and never the value (it may hold credentials)."""
    with pytest.raises(ConfigError) as info:
        _compile(_one_alias() | {"telemetry": {"otlp_endpoint": endpoint}})
    assert str(info.value) == (
        "telemetry.otlp_endpoint: must be an http:// or https:// URL with a host, "
        "e.g. http://collector:4317 (gRPC) or http://collector:4318 (OTLP/HTTP)"
    )
    assert "SECRET" not in str(info.value)


def test_an_otlp_endpoint_with_a_bad_port_is_refused_unquoted() -> None:
    with pytest.raises(ConfigError) as info:
        _compile(_one_alias() | {"telemetry": {"otlp_endpoint": "http://u:SECRET@c:99999"}})
    assert str(info.value).startswith("telemetry.otlp_endpoint: the port must be a number")
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    "endpoint",
    ["http://collector:4318", "https://u:p@otlp.example.com/prefix", "http://[::1]:4317", ""],
)
def test_otlp_endpoints_with_scheme_and_host_are_accepted(endpoint: str) -> None:
    """Credentials and a path prefix stay allowed (README, Telemetry); empty is unset."""
    runtime = _compile(_one_alias() | {"telemetry": {"otlp_endpoint": endpoint}})
    assert runtime.config.telemetry.otlp_endpoint == endpoint


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-gw:4318", "must be an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://gw/x", "must be an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://gw:99999", "the port must be a number"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "'http/json' is not an OTLP protocol"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "GRPC", "'GRPC' is not an OTLP protocol"),
    ],
)
def test_otlp_settings_from_the_environment_are_checked_as_their_keys_are(
    variable: str, value: str, message: str
) -> None:
    """The OTEL_EXPORTER_OTLP_* endpoint and protocol variables win over the config, so
    they get its checks, named by the variable (a scheme-less endpoint failed every export;
    `http/json` was quietly read as http/protobuf). The endpoint is not quoted."""
    data = {"providers": {"p": {"kind": "openai", "base_url": "http://x"}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, {variable: value})
    assert str(info.value).startswith(f"{variable} (environment variable): {message}")
    if "ENDPOINT" in variable:
        assert value not in str(info.value)


def test_good_and_empty_otlp_environment_settings_are_accepted() -> None:
    """Both protocols (spaces around them are read away) and http(s) endpoints pass, and
    an empty variable counts as unset, as instrumentation/otlp.py reads it."""
    data = {"providers": {"p": {"kind": "openai", "base_url": "http://x"}}}
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": " grpc ",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "",
    }
    assert parse_config(data, env).providers["p"].kind == "openai"


def test_a_prometheus_host_without_a_port_is_refused() -> None:
    """prometheus.host only places /metrics' own listener, which port opens: alone it was
    silently ignored (metrics stayed on the main listener), so it is an error at host."""
    data = _one_alias() | {"telemetry": {"prometheus": {"host": "0.0.0.0"}}}
    assert _refusal(data).startswith(
        "telemetry.prometheus.host: only used with telemetry.prometheus.port"
    )
    data = _one_alias() | {"telemetry": {"prometheus": {"host": "0.0.0.0", "port": 9464}}}
    assert _compile(data).config.telemetry.prometheus.host == "0.0.0.0"


def _listeners(server: dict[str, Any], prometheus: dict[str, Any]) -> dict[str, Any]:
    return _one_alias() | {"server": server, "telemetry": {"prometheus": prometheus}}


@pytest.mark.parametrize(
    ("server", "prometheus"),
    [
        ({"port": 9464}, {"port": 9464}),
        ({"host": "127.0.0.1", "port": 9464}, {"host": "0.0.0.0", "port": 9464}),
        ({"host": "0.0.0.0", "port": 9464}, {"host": "127.0.0.1", "port": 9464}),
        ({"host": "", "port": 9464}, {"host": "::1", "port": 9464}),
        ({"host": "::", "port": 9464}, {"host": "[0:0::0]", "port": 9464}),
        ({"host": "localhost", "port": 9464}, {"host": "LOCALHOST", "port": 9464}),
        ({"host": "localhost", "port": 9464}, {"host": "127.0.0.1", "port": 9464}),
        ({"host": "0.0.0.0", "port": 9464}, {"host": "localhost", "port": 9464}),
    ],
    ids=[
        "default-host",
        "wildcard-metrics",
        "wildcard-server",
        "empty-host",
        "ipv6",
        "name",
        "name-and-its-address",
        "wildcard-and-a-name",
    ],
)
def test_a_metrics_port_that_is_the_server_port_on_a_shared_address_is_refused(
    server: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    """/metrics' own listener on server.port, where the main listener binds that address too
    (the same one, or a wildcard of its family covering it), could only fail at start with
    a bind error: refused, naming both keys."""
    assert _refusal(_listeners(server, prometheus)).startswith(
        "telemetry.prometheus.port: 9464 is server.port too, on an address both listeners "
        "bind (telemetry.prometheus.host, default server.host)"
    )


def test_the_refusal_says_where_hosts_written_differently_meet() -> None:
    """`localhost` and `127.0.0.1` are one address once the name is resolved: the error
    names both keys and the address they share, so the collision is not a puzzle."""
    data = _listeners({"host": "localhost", "port": 9464}, {"host": "127.0.0.1", "port": 9464})
    message = _refusal(data)
    assert "telemetry.prometheus.port: 9464 is server.port too" in message
    assert (
        ", 127.0.0.1 (server.host 'localhost', telemetry.prometheus.host '127.0.0.1'), " in message
    )


def test_a_worker_metrics_port_landing_on_the_server_port_is_refused() -> None:
    """With server.workers N, worker i serves /metrics on telemetry.prometheus.port + i:
    one of those on server.port is refused, naming the worker; just past them is fine."""
    data = _listeners({"port": 9466, "workers": 3}, {"port": 9464})
    assert _refusal(data) == (
        "telemetry.prometheus.port: with 3 workers, worker 2 would serve /metrics on port "
        "9466 (telemetry.prometheus.port + 2), which is server.port, on an address both "
        "listeners bind; worker i takes telemetry.prometheus.port + i, so keep ports 9464 "
        "to 9466 clear of server.port"
    )
    assert _compile(_listeners({"port": 9467, "workers": 3}, {"port": 9464}))


@pytest.mark.parametrize(
    ("server", "prometheus"),
    [
        ({"host": "127.0.0.1", "port": 9464}, {"host": "127.0.0.2", "port": 9464}),
        ({"host": "127.0.0.1", "port": 9464}, {"host": "::", "port": 9464}),
        ({"host": "::1", "port": 9464}, {"host": "0.0.0.0", "port": 9464}),
        ({"port": 9464}, {"port": 9464, "enabled": False}),
        ({"port": 0}, {"port": 0}),
    ],
    ids=["other-address", "v6-wildcard", "v4-wildcard", "disabled", "any-free-port"],
)
def test_a_metrics_port_equal_to_the_server_port_is_fine_where_no_bind_collides(
    server: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    """Same port, no collision: distinct addresses, a wildcard of the other family (asyncio
    binds `::` to IPv6 only), /metrics off, or port 0 (the system picks two free ports)."""
    assert _compile(_listeners(server, prometheus))
