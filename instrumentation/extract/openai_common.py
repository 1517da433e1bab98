"""What OpenAI-format chat and text completions share: sampling parameters, usage, errors."""

from __future__ import annotations

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract.base import AttrValue, ResponseFacts, put

#: response_format / text.format types onto gen_ai.output.type.
_OUTPUT_TYPES = {"json_object": "json", "json_schema": "json", "text": "text"}


class Format(msgspec.Struct):
    type: str | None = None


class SamplingParams(msgspec.Struct):
    """The request fields telemetry reads; messages and tools are decoded only on capture."""

    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    #: Not OpenAI's, but vLLM and other OpenAI-compatible servers accept it.
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    service_tier: str | None = None
    response_format: Format | None = None
    modalities: list[str] | None = None


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None


class Error(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None


def sampling_attributes(params: SamplingParams) -> dict[str, AttrValue]:
    attributes: dict[str, AttrValue] = {}
    # max_completion_tokens replaced max_tokens (which o-series models reject).
    max_tokens = params.max_completion_tokens
    put(
        attributes,
        sc.GEN_AI_REQUEST_MAX_TOKENS,
        params.max_tokens if max_tokens is None else max_tokens,
    )
    put(attributes, sc.GEN_AI_REQUEST_TEMPERATURE, params.temperature)
    put(attributes, sc.GEN_AI_REQUEST_TOP_P, params.top_p)
    put(attributes, sc.GEN_AI_REQUEST_TOP_K, params.top_k)
    put(attributes, sc.GEN_AI_REQUEST_FREQUENCY_PENALTY, params.frequency_penalty)
    put(attributes, sc.GEN_AI_REQUEST_PRESENCE_PENALTY, params.presence_penalty)
    put(attributes, sc.GEN_AI_REQUEST_SEED, params.seed)
    put(attributes, sc.GEN_AI_REQUEST_STOP_SEQUENCES, stop_sequences(params.stop))
    if params.n is not None and params.n != 1:
        attributes[sc.GEN_AI_REQUEST_CHOICE_COUNT] = params.n
    if params.stream:
        attributes[sc.GEN_AI_REQUEST_STREAM] = True
    put(attributes, sc.OPENAI_REQUEST_SERVICE_TIER, request_service_tier(params.service_tier))
    put(attributes, sc.GEN_AI_OUTPUT_TYPE, _chat_output_type(params))
    return attributes


def stop_sequences(stop: str | list[str] | None) -> list[str] | None:
    """Always a string array, as the convention types it; an empty list says nothing."""
    if isinstance(stop, str):
        return [stop]
    return stop or None


def request_service_tier(tier: str | None) -> str | None:
    # "auto" is the default behaviour, so it says nothing about the request.
    return tier if tier and tier != "auto" else None


def output_type(format_type: str | None) -> str | None:
    return _OUTPUT_TYPES.get(format_type or "")


def _chat_output_type(params: SamplingParams) -> str | None:
    fmt = params.response_format
    declared = output_type(fmt.type if fmt else None)
    if declared is None and params.modalities and "audio" in params.modalities:
        return "speech"
    return declared


def apply_usage(facts: ResponseFacts, usage: Usage) -> None:
    # OpenAI's prompt_tokens already include the cached ones.
    facts.input_tokens = usage.prompt_tokens
    facts.output_tokens = usage.completion_tokens
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    facts.cache_read_input_tokens = prompt.cached_tokens if prompt else None
    facts.reasoning_output_tokens = completion.reasoning_tokens if completion else None


def error_type(error: Error) -> str:
    """Low-cardinality class of an in-band error: its type, else its code."""
    value = error.type or error.code
    return str(value) if value not in (None, "") else sc.ERROR_TYPE_OTHER
