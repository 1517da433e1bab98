"""A response body's Content-Encoding undone for the extractors, within a size bound.

spangate relays a compressed answer as the provider sent it (both SDKs ask for
gzip, and for br and zstd where the app has their modules), so the attempt record
keeps the compressed bytes and their coding; the telemetry worker inflates them
(proxy/codings.py, which says which codings are read) before an extractor reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from instrumentation.records import MAX_RETAINED_BYTES
from proxy.codings import Undecodable, inflate

log = structlog.get_logger("spangate.telemetry")

#: The drop counter's signal for responses whose facts could not be read.
SIGNAL = "responses"


class Inflater:
    """Undoes a response's coding for the extractors; counts each body it cannot read in
    `count(SIGNAL, reason)` and says so in a log line once per coding and reason."""

    def __init__(
        self, count: Callable[[str, str], None] | None, limit: int = MAX_RETAINED_BYTES
    ) -> None:
        self._count = count
        self._limit = limit
        self._said: set[tuple[str, str]] = set()

    def __call__(self, body: bytes, encoding: str) -> bytes | None:
        """The decoded body, or None when it cannot be decoded (facts stay empty)."""
        try:
            return inflate(body, encoding, self._limit)
        except Undecodable as exc:
            self._report(encoding, exc.reason)
            return None

    def _report(self, encoding: str, reason: str) -> None:
        if self._count is not None:
            self._count(SIGNAL, reason)
        key = (encoding.lower()[:32], reason)
        if key in self._said or len(self._said) >= 64:
            return
        self._said.add(key)
        log.warning(
            "telemetry.response_not_decoded",
            encoding=key[0],
            reason=reason,
            limit=self._limit,
            hint="responses so encoded get no tokens, cost, response model or finish "
            "reasons; they are counted in spangate_telemetry_dropped_total"
            f'{{spangate_signal="{SIGNAL}"}} (said once per encoding and reason)',
        )
