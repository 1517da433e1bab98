"""What to answer a request's `Expect:` before its body: a pure decision (RFC 9110 §10.1.1).

spangate supports the one expectation HTTP defines, `100-continue`; a body it would
refuse for its size is not asked for.
"""

from __future__ import annotations

from typing import Literal

from proxy.errors import ExpectationFailed

#: "continue": send 100 Continue; "withhold": send nothing (the 413 that reading the
#: request makes of its Content-Length is the answer, the body never sent); "refuse":
#: answer 417 at once.
Answer = Literal["continue", "withhold", "refuse"]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Enough of a header value to recognise it in the error message.
_SHOWN = 100


def decide(value: str, length: int | None, limit: int) -> Answer:
    """The answer to `Expect: value` on a request of Content-Length `length` (None when
    unknown) under a body limit of `limit` bytes. Expectation names are case-insensitive."""
    if value.strip().lower() != "100-continue":
        return "refuse"
    if length is not None and length > limit:
        return "withhold"
    return "continue"


def unsupported(value: str) -> ExpectationFailed:
    shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
    return ExpectationFailed(
        f"the request's Expect header ({shown!r}) asks for an expectation spangate does not "
        "support: only 'Expect: 100-continue' is; remove the header or send that value",
        code="expectation_failed",
    )
