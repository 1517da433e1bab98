"""The one place that interprets provider errors: every upstream outcome → a FailureClass.

Rules are tried in order; each says which provider behaviour it encodes. Error
identity comes from status codes and the structured `type`/`code` fields of the
error body — never from free-text messages, with one documented exception
(Anthropic's context-window error, which has no code of its own).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping

import msgspec

from proxy.config import FailureClass
from proxy.sse import SSEDecoder, SSEEvent


class Verdict(msgspec.Struct, frozen=True):
    cls: FailureClass
    #: Low-cardinality reason for `error.type`: the provider's error type/code or the status.
    reason: str
    #: Seconds the provider asked us to wait (Retry-After / retry-after-ms), if any.
    retry_after_s: float | None = None
    #: The request is too long for this model (a context fallback may help).
    context_exceeded: bool = False


class _ErrorObject(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorObject | str | None = None


class _FailedResponse(msgspec.Struct):
    error: _ErrorObject | None = None


class _ResponsesEvent(msgspec.Struct):
    """A Responses stream's error event: `error` with its fields at the top level
    (`{"type":"error","code":…,"message":…,"param":…,"sequence_number":…}`), or
    `response.failed` with the failed response's `error` (`{"code":…,"message":…}`).
    `type` names the event, never an error kind."""

    type: str | None = None
    code: str | int | None = None
    message: str | None = None
    response: _FailedResponse | None = None


_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_decode_event = msgspec.json.Decoder(_ResponsesEvent).decode

#: OpenAI bills under type `insufficient_quota`; the code names which budget ran out.
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_hard_limit_reached",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "billing_error",  # Anthropic 402
    }
)
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})


def _error_fields(body: bytes) -> _ErrorObject:
    """The error's type/code/message: from `{"error": {...}}` (OpenAI, Azure, Anthropic's
    `{"type":"error","error":{...}}`, a Responses error event some servers nest so),
    else from a Responses stream's `error` or `response.failed` event; empty if none."""
    try:
        parsed = _decode_error(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _ErrorObject()
    if isinstance(parsed.error, _ErrorObject):
        return parsed.error
    return _responses_error(body)


def _responses_error(body: bytes) -> _ErrorObject:
    try:
        event = _decode_event(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _ErrorObject()
    if event.type == "error":
        return _ErrorObject(code=event.code, message=event.message)
    failed = event.response
    if event.type == "response.failed" and failed is not None and failed.error is not None:
        return failed.error
    return _ErrorObject()


def classify_response(
    status: int, headers: Mapping[str, str], body: bytes, *, client_key: bool = False
) -> Verdict:
    """Classify an upstream HTTP error response (status >= 400). `client_key`: the key
    sent upstream was the client's own (the provider has none configured)."""
    error = _error_fields(body)
    code = str(error.code) if error.code is not None else None
    kind = error.type
    reason = code or kind or str(status)
    retry_after = retry_after_seconds(headers)
    cls, context = _class_for(status, kind, code, error.message, client_key)
    return Verdict(cls, reason, retry_after, context)


#: 403 codes that refuse the place a request comes from, not the key that signs it: the
#: target is unusable from this sidecar for every caller (OpenAI's region block).
_PLACE_REFUSED = frozenset({"unsupported_country_region_territory"})


def _class_for(  # noqa: PLR0911 - an ordered rule table reads best as early returns
    status: int, kind: str | None, code: str | None, message: str | None, client_key: bool
) -> tuple[FailureClass, bool]:
    # OpenAI: a 429 with type/code insufficient_quota is an empty wallet, not a
    # rate limit: waiting does not help, another deployment might.
    if kind in _QUOTA_CODES or code in _QUOTA_CODES:
        return "quota", False
    # Everyone: 429 is a rate limit (OpenAI rate_limit_exceeded, Anthropic rate_limit_error).
    if status == 429:
        return "rate_limited", False
    # 408 / 504: the upstream (or a gateway in front of it) timed out. Checked before
    # the error type: OpenAI labels a 504 body `server_error` too.
    if status in (408, 504) or kind == "timeout_error":
        return "timeout", False
    # Anthropic 529 overloaded_error, and any 5xx gateway/server trouble: transient.
    if status in (500, 502, 503, 529) or kind in ("overloaded_error", "api_error", "server_error"):
        return "transient", False
    # 401 invalid key, 403 permission (Anthropic permission_error, OpenAI region block).
    # Our configured key: the target is unusable (credential). The client's own key: the
    # caller's fault — the targets that take a client's key are one origin (check-config),
    # which would refuse the same key — and it must not open the circuit for other
    # callers. Except a refusal of where spangate calls from, which no caller can mend.
    if status in (401, 403):
        own = client_key and code not in _PLACE_REFUSED
        return ("caller_fault" if own else "credential"), False
    # 402: Anthropic billing_error without the code (payment required).
    if status == 402:
        return "quota", False
    # 404: OpenAI model_not_found / Azure DeploymentNotFound / Anthropic not_found_error.
    if status == 404:
        return "model_unavailable", False
    # OpenAI context_length_exceeded (400, code); Anthropic says only "prompt is too long".
    if code in _CONTEXT_CODES or (status == 400 and _anthropic_too_long(kind, message)):
        return "caller_fault", True
    # 400 / 413 / 422: the request itself is wrong; another target would say the same.
    if status in (400, 413, 422):
        return "caller_fault", False
    if status >= 500:
        return "transient", False
    return "unknown", False


def _anthropic_too_long(kind: str | None, message: str | None) -> bool:
    # The documented exception to "no message matching": Anthropic's context
    # error is a plain invalid_request_error whose message starts this way.
    return kind == "invalid_request_error" and (message or "").startswith("prompt is too long")


#: spangate's own I/O-edge errors (SpangateError.kind) → class.
_EXCEPTION_CLASSES: dict[str, FailureClass] = {
    "upstream_unreachable": "connection",
    "upstream_timeout": "timeout",
    "stream_interrupted": "connection",
    "stream_idle_timeout": "timeout",
    "stream_total_timeout": "timeout",
    # Closed cleanly after content but before the terminal event: cut short upstream.
    "stream_truncated": "connection",
    "malformed_response": "transient",
    # An in-band error event after content reached the client whose data says nothing
    # that classify_stream_end can read: the provider failed mid-answer, as a 5xx would.
    "stream_error": "transient",
}


def classify_exception(kind: str) -> Verdict:
    """Classify a failure outside the protocol (connect, reset, timeout, malformed body)."""
    return Verdict(_EXCEPTION_CLASSES.get(kind, "unknown"), kind)


def classify_stream_error(data: bytes, *, client_key: bool = False) -> Verdict:
    """Classify an error event that arrived as the first event of a 200 stream.

    Anthropic sends `event: error` with `{"type":"error","error":{"type":"overloaded_error"}}`;
    OpenAI chat servers send `data: {"error": {...}}`; the Responses API an `error` event
    with a top-level `code`, or `response.failed` with the response's `error.code`. The
    error code (the more specific, where both are sent), else its type, maps to the
    status the same error would have had over HTTP (_stream_status).
    """
    error = _error_fields(data)
    kind = error.type
    code = str(error.code) if error.code is not None else None
    cls, context = _class_for(_stream_status(kind, code), kind, code, error.message, client_key)
    return Verdict(cls, code or kind or "stream_error", None, context)


def classify_stream_end(
    block: bytes, is_error: Callable[[SSEEvent], bool], *, client_key: bool = False
) -> Verdict:
    """Classify the in-band error event that ended a stream after content reached the
    client: `block` is the block of events that carried it (content events may come
    before it), `is_error` the adapter's test for an error event. Judged by the event
    itself as classify_stream_error judges one at a stream's start (an Anthropic
    invalid_request_error is the caller's fault, a rate_limit_error a rate limit);
    transient, as a 5xx, when no error event in `block` can be found. Called once per
    such stream, never per block."""
    # The closing blank line may be missing when the provider closed right after it.
    for event in SSEDecoder().feed(block + b"\n\n"):
        if is_error(event):
            return classify_stream_error(event.data.encode(), client_key=client_key)
    return classify_exception("stream_error")


def _stream_status(kind: str | None, code: str | None) -> int:
    """The HTTP status an in-band error stands for: its code's, else its type's; a code
    that is itself an error status (vLLM and other OpenAI-compatible servers send
    `"code": 400`) is that status; 500 when none is known."""
    if code is not None and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    return _STREAM_ERROR_STATUS.get(code or "") or _STREAM_ERROR_STATUS.get(kind or "", 500)


#: An in-band error's code or type → the HTTP status the same error comes with.
_STREAM_ERROR_STATUS = {
    # Anthropic error types.
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "timeout_error": 504,
    # OpenAI codes, the Responses API's among them (ResponseError.code): a rate limit,
    # a server fault or a slow file search are the target's; a prompt or image the
    # model refuses is the request's, and would be refused elsewhere too.
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "vector_store_timeout": 504,
    "context_length_exceeded": 400,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "invalid_prompt": 400,
    **dict.fromkeys(
        (
            "invalid_image",
            "invalid_image_format",
            "invalid_base64_image",
            "invalid_image_url",
            "image_too_large",
            "image_too_small",
            "image_parse_error",
            "image_content_policy_violation",
            "invalid_image_mode",
            "image_file_too_large",
            "unsupported_image_media_type",
            "empty_image_file",
            "failed_to_download_image",
            "image_file_not_found",
        ),
        400,
    ),
}


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """`retry-after-ms` (OpenAI, Azure) wins over `Retry-After` (seconds or an HTTP date).

    A value that is not a finite, non-negative number (`inf`, `nan`, `-5`) is ignored as
    if absent: a provider's bad header must not decide how long a target stays shut.
    Huge finite values pass through; the circuit caps what it takes from them.
    """
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


def _seconds(value: str | None) -> float | None:
    """A finite, non-negative number, else None."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
