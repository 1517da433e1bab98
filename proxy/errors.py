"""The small set of errors spangate itself raises, and their wire-format rendering.

An upstream HTTP error is *data* and never becomes one of these: it is relayed
as the provider sent it. These are for what spangate decides on its own (bad
input, config bugs, an upstream it could not reach).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

ErrorFormat = Literal["openai", "anthropic"]


class SpangateError(Exception):
    """Base class: an HTTP status plus the error type each wire format uses for it."""

    status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "api_error"
    anthropic_type: ClassVar[str] = "api_error"
    #: Stable, low-cardinality name for `error.type` and logs.
    kind: ClassVar[str] = "spangate_error"
    #: The answer ends the connection (Connection: close): the client may still owe bytes
    #: spangate never asked for, or spangate is going away.
    closes: ClassVar[bool] = False
    #: Seconds for a Retry-After header, where a retry is the fix (the SDKs honour it):
    #: a class's fixed value, or one given for this error (`retry_after_s=`).
    retry_after_s: int | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class BadRequest(SpangateError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    kind = "bad_request"


class NotFound(SpangateError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    kind = "not_found"


class MethodNotAllowed(SpangateError):
    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    kind = "method_not_allowed"


class BodyTooLarge(SpangateError):
    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    kind = "body_too_large"
    # The body is refused unread: a client that sent `Expect: 100-continue` never got
    # its 100 Continue and will not send it, so the connection cannot carry on after it
    # (RFC 9110 §10.1.1: the server says whether it closes or goes on reading).
    closes = True


class UnreadableBody(BadRequest):
    """A request body that broke while being read: its Content-Encoding does not decode,
    or its chunked framing is broken. What is left of it is unread, so the connection
    does not carry on after the answer."""

    closes = True


class ExpectationFailed(SpangateError):
    """An `Expect:` other than 100-continue: refused before the body, which the client may
    be sending anyway, so the connection does not carry on after the answer."""

    status = 417
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    kind = "expectation_failed"
    closes = True


class RouteConfigError(SpangateError):
    """A route that points nowhere: a config bug that `check-config` reports."""

    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    kind = "route_config"


class UpstreamUnreachable(SpangateError):
    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"
    kind = "upstream_unreachable"


class UpstreamTimeout(SpangateError):
    status = 504
    openai_type = "server_error"
    anthropic_type = "timeout_error"
    kind = "upstream_timeout"


class Unavailable(SpangateError):
    status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    kind = "unavailable"


class ShuttingDown(Unavailable):
    """The drain timeout ran out before the request reached its commit point: nothing was
    sent yet, so the client is told to retry (on another connection: this one closes)."""

    kind = "shutdown"
    closes = True
    retry_after_s = 1


class _OpenAIErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class _OpenAIError(msgspec.Struct):
    error: _OpenAIErrorBody


class _AnthropicErrorBody(msgspec.Struct):
    type: str
    message: str


class _AnthropicError(msgspec.Struct, tag_field="type", tag="error"):
    error: _AnthropicErrorBody


_encoder = msgspec.json.Encoder()


def error_body(fmt: ErrorFormat, err: SpangateError) -> bytes:
    """The JSON body of `err` in the client's wire format."""
    if fmt == "anthropic":
        return _encoder.encode(
            _AnthropicError(_AnthropicErrorBody(err.anthropic_type, err.message))
        )
    body = _OpenAIErrorBody(err.message, err.openai_type, err.param, err.code or err.kind)
    return _encoder.encode(_OpenAIError(body))
