"""Record → telemetry: GenAI attributes, spans, metrics and the request.completed line.

Pure data work on the worker thread. Which API a record is (chat, messages,
embeddings, …) selects an extractor from `instrumentation.extract`; nothing
here knows a provider by name.
"""

from __future__ import annotations

import itertools
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from instrumentation import semconv as sc
from instrumentation.content import ContentPolicy
from instrumentation.export import BatchQueue
from instrumentation.extract import EXTRACTORS, Extractor, RequestFacts, ResponseFacts
from instrumentation.extract.encodings import Inflater
from instrumentation.metrics import Instruments
from instrumentation.pricing import PriceTable
from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.spans import SpanFactory, SpanLine

Attrs = dict[str, Any]
_NS = 1e-9


class AttemptView:
    """What one attempt amounts to, once its bodies are decoded. A plain class, not a
    msgspec Struct: this module is compiled (proxy/native.py), and mypyc compiles a
    plain class to a native one."""

    __slots__ = (
        "cost",
        "error",
        "facts",
        "gaps_s",
        "model",
        "record",
        "stream_outcome",
        "ttfc_s",
    )

    def __init__(
        self,
        record: AttemptRecord,
        model: str | None,
        facts: ResponseFacts,
        error: str | None,
        stream_outcome: str | None,
        ttfc_s: float | None,
        gaps_s: list[float],
        cost: float | None,
    ) -> None:
        self.record = record
        self.model = model
        self.facts = facts
        self.error = error
        #: How the stream ended, from the relay and from the events themselves.
        self.stream_outcome = stream_outcome
        self.ttfc_s = ttfc_s
        self.gaps_s = gaps_s
        self.cost = cost


class Processor:
    def __init__(
        self,
        instruments: Instruments | None,
        spans: SpanFactory,
        span_queue: BatchQueue[ReadableSpan | SpanLine] | None,
        content: ContentPolicy,
        prices: PriceTable,
        emit_log: Any,
        emit_event: Any = None,
    ) -> None:
        self._m = instruments
        self._spans = spans
        self._span_queue = span_queue
        self._content = content
        self._prices = prices
        self._emit_log = emit_log
        self._emit_event = emit_event
        #: Redaction for the strings a client (or a provider echoing one) chose: a path,
        #: a user agent, a model name. The request line is redacted as a whole by its
        #: chain; spans, metrics and events are not, so these are redacted here.
        self._field = content.redactor.field
        self._inflate = Inflater(instruments.drops.add if instruments is not None else None)

    def __call__(self, record: RequestRecord) -> None:
        extractor = EXTRACTORS.get(record.api or "") if record.operation else None
        request = extractor.request(record.body, self._content.enabled) if extractor else None
        if request is not None and request.attributes:
            self._content.redact_attributes(request.attributes)
        views = [self._view(record, a, extractor) for a in record.attempts]
        if self._m is not None:
            for view in views:
                self._attempt_metrics(self._m, record, view)
            self._request_metrics(self._m, record, views)
        if record.sampled and self._span_queue is not None:
            self._span_queue.put(self._build_spans(record, request, views))
        if self._emit_event is not None and request is not None and self._content.on_event:
            for view in views:
                self._emit_event(record, view.record, self._details(record, request, view))
        self._emit_log(_log_fields(record, views))

    # --- decoding ---------------------------------------------------------
    def _view(
        self, record: RequestRecord, attempt: AttemptRecord, extractor: Extractor | None
    ) -> AttemptView:
        facts, stamps = _response_facts(attempt, extractor, self._content.enabled, self._inflate)
        ttfc = (stamps[0] - attempt.start_ns) * _NS if stamps else None
        gaps = [(b - a) * _NS for a, b in itertools.pairwise(stamps)]
        model = attempt.model or record.request_model
        # Priced by the names as sent: a redaction pattern that matched part of one (a
        # wide id pattern against a dated snapshot) must not lose the cost.
        cost = self._cost(facts, facts.response_model or model)
        if model:
            model = self._field(model)
        if facts.response_model:
            facts.response_model = self._field(facts.response_model)
        outcome = attempt.stream_outcome
        if outcome in ("completed", "client_disconnected") and facts.error_type:
            # The provider ended the stream with an in-band error event after content;
            # an SDK that hangs up on reading it must not turn that into the client's doing.
            outcome = "stream_error"
        error = _attempt_error(attempt, facts)
        return AttemptView(attempt, model, facts, error, outcome, ttfc, gaps, cost)

    def _cost(self, facts: ResponseFacts, model: str | None) -> float | None:
        if facts.input_tokens is None and facts.output_tokens is None:
            return None
        return self._prices.cost(
            model,
            facts.input_tokens or 0,
            facts.output_tokens or 0,
            facts.cache_read_input_tokens or 0,
        )

    # --- metrics ----------------------------------------------------------
    def _attempt_metrics(self, m: Instruments, record: RequestRecord, view: AttemptView) -> None:
        attempt, facts = view.record, view.facts
        outcome = "error" if view.error else "success"
        attempt_attrs = {sc.SPANGATE_PROVIDER: attempt.provider, sc.ATTR_OUTCOME: outcome}
        if attempt.failure_class:
            attempt_attrs[sc.ATTR_FAILURE_CLASS] = attempt.failure_class
        m.attempts.add(1, attempt_attrs)
        if attempt.hedge_outcome is not None:
            m.hedges.add(
                1, {sc.SPANGATE_PROVIDER: attempt.provider, sc.ATTR_OUTCOME: attempt.hedge_outcome}
            )
        if view.stream_outcome not in (None, "completed", "client_disconnected"):
            m.interrupted.add(1, {sc.SPANGATE_PROVIDER: attempt.provider})
        if record.operation is None:
            return
        attrs = _metric_attrs(record, view)
        end = attempt.end_ns or record.end_ns
        m.duration.record((end - attempt.start_ns) * _NS, attrs)
        if facts.input_tokens is not None:
            m.token_usage.record(facts.input_tokens, {**attrs, sc.GEN_AI_TOKEN_TYPE: "input"})
        if facts.output_tokens is not None:
            out_attrs = {**attrs, sc.GEN_AI_TOKEN_TYPE: "output"}
            m.token_usage.record(facts.output_tokens, out_attrs)
        if view.ttfc_s is not None:
            m.time_to_first_chunk.record(view.ttfc_s, attrs)
        if view.gaps_s:
            m.time_per_output_chunk.record_many(view.gaps_s, attrs)
        if view.cost:
            cost_attrs = {
                sc.GEN_AI_PROVIDER_NAME: attempt.system,
                sc.GEN_AI_REQUEST_MODEL: view.model or "",
            }
            m.cost.add(view.cost, cost_attrs)

    def _request_metrics(
        self, m: Instruments, record: RequestRecord, views: list[AttemptView]
    ) -> None:
        attrs = {
            sc.ATTR_ROUTE: record.alias or sc.PASSTHROUGH_ROUTE,
            sc.ATTR_STATUS_CLASS: f"{record.status // 100}xx" if record.status else "none",
        }
        m.requests.add(1, attrs)
        if record.fallback or _served_by_later_attempt(record):
            m.failovers.add(1, {sc.ATTR_ROUTE: attrs[sc.ATTR_ROUTE]})
        if record.overhead_ns:
            m.overhead.record(record.overhead_ns * _NS, {sc.ATTR_ROUTE: attrs[sc.ATTR_ROUTE]})

    # --- spans ------------------------------------------------------------
    def _build_spans(
        self, record: RequestRecord, request: RequestFacts | None, views: list[AttemptView]
    ) -> list[ReadableSpan | SpanLine]:
        spans = [self._server_span(record, views)]
        for view in views:
            spans.append(self._client_span(record, request, view))
        return spans

    def _server_span(
        self, record: RequestRecord, views: list[AttemptView]
    ) -> ReadableSpan | SpanLine:
        attrs: Attrs = {
            sc.HTTP_REQUEST_METHOD: record.method,
            sc.URL_PATH: self._field(record.path),
            sc.URL_SCHEME: "http",
            sc.SPANGATE_ATTEMPTS: len(views),
        }
        _put(attrs, sc.HTTP_ROUTE, record.route)
        if record.status:
            attrs[sc.HTTP_RESPONSE_STATUS_CODE] = record.status
        _put(attrs, sc.CLIENT_ADDRESS, record.client_address)
        if record.user_agent:
            attrs[sc.USER_AGENT_ORIGINAL] = self._field(record.user_agent)
        _put(attrs, sc.SPANGATE_ROUTE, record.alias)
        served = _served(views)
        if served is not None:
            attrs[sc.SPANGATE_TARGET] = served.record.target
        _put(attrs, sc.SPANGATE_FALLBACK, record.fallback)
        if record.hedged:
            attrs[sc.SPANGATE_HEDGED] = True
        error = _server_error(record, views)
        _put(attrs, sc.ERROR_TYPE, error)
        # HTTP semconv: a SERVER span is an error only for 5xx (or a broken stream);
        # a 4xx is the client's fault and keeps status UNSET.
        failed = error is not None and (record.status >= 500 or record.status < 400)
        return self._spans.server(record, _http_name(record), attrs, error if failed else None)

    def _client_span(
        self, record: RequestRecord, request: RequestFacts | None, view: AttemptView
    ) -> ReadableSpan | SpanLine:
        attempt = view.record
        attrs = self._client_attrs(record, request, view)
        if record.operation:
            name = f"{record.operation} {view.model}" if view.model else record.operation
        else:
            name = _http_name(record)
        end = attempt.end_ns or record.end_ns
        times = (attempt.start_ns, end)
        return self._spans.client(record, attempt.span_id, name, times, attrs, view.error)

    def _client_attrs(
        self, record: RequestRecord, request: RequestFacts | None, view: AttemptView
    ) -> Attrs:
        attempt, facts = view.record, view.facts
        attrs: Attrs = {}
        _put(attrs, sc.GEN_AI_OPERATION_NAME, record.operation)
        attrs[sc.GEN_AI_PROVIDER_NAME] = attempt.system
        _put(attrs, sc.GEN_AI_REQUEST_MODEL, view.model)
        attrs[sc.SERVER_ADDRESS] = attempt.host
        attrs[sc.SERVER_PORT] = attempt.port
        if request is not None:
            attrs.update(request.attributes)
        _response_attrs(attrs, facts)
        if view.ttfc_s is not None:
            attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = view.ttfc_s
        _put(attrs, sc.HTTP_RESPONSE_STATUS_CODE, attempt.status)
        attrs[sc.SPANGATE_ATTEMPT] = attempt.number
        attrs[sc.SPANGATE_TARGET] = attempt.target
        attrs[sc.SPANGATE_PROVIDER] = attempt.provider
        _put(attrs, sc.SPANGATE_ROUTE, record.alias)
        _put(attrs, sc.SPANGATE_FAILURE_CLASS, attempt.failure_class)
        if attempt.backoff_s:
            attrs[sc.SPANGATE_BACKOFF_S] = attempt.backoff_s
        _put(attrs, sc.SPANGATE_HEDGE_ROLE, attempt.hedge_role)
        _put(attrs, sc.SPANGATE_HEDGE_OUTCOME, attempt.hedge_outcome)
        _put(attrs, sc.SPANGATE_STREAM_OUTCOME, view.stream_outcome)
        if attempt.usage_injected:
            attrs[sc.SPANGATE_USAGE_INJECTED] = True
        if view.cost is not None:
            attrs[sc.SPANGATE_COST_USD] = view.cost
        _put(attrs, sc.ERROR_TYPE, view.error)
        if request is not None and self._content.on_span:
            self._content_attrs(attrs, request, facts)
        return attrs

    def _content_attrs(self, attrs: Attrs, request: RequestFacts, facts: ResponseFacts) -> None:
        truncated = False
        for key, value in (
            (sc.GEN_AI_INPUT_MESSAGES, request.input_messages),
            (sc.GEN_AI_SYSTEM_INSTRUCTIONS, request.system_instructions),
            (sc.GEN_AI_TOOL_DEFINITIONS, request.tool_definitions),
            (sc.GEN_AI_OUTPUT_MESSAGES, facts.output_messages),
        ):
            if value:
                attrs[key], cut = self._content.as_attribute(value)
                truncated = truncated or cut
        if truncated:
            attrs[sc.SPANGATE_CONTENT_TRUNCATED] = True

    def _details(
        self, record: RequestRecord, request: RequestFacts, view: AttemptView
    ) -> dict[str, Any]:
        """Body of the `gen_ai.client.inference.operation.details` event (structured)."""
        details: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: record.operation,
            sc.GEN_AI_PROVIDER_NAME: view.record.system,
        }
        _put(details, sc.GEN_AI_REQUEST_MODEL, view.model)
        _response_attrs(details, view.facts)
        for key, value in (
            (sc.GEN_AI_INPUT_MESSAGES, request.input_messages),
            (sc.GEN_AI_SYSTEM_INSTRUCTIONS, request.system_instructions),
            (sc.GEN_AI_TOOL_DEFINITIONS, request.tool_definitions),
            (sc.GEN_AI_OUTPUT_MESSAGES, view.facts.output_messages),
        ):
            if value:
                details[key] = self._content.prepare(value)[0]
        return details


def _response_facts(
    attempt: AttemptRecord, extractor: Extractor | None, capture: bool, inflate: Inflater
) -> tuple[ResponseFacts, list[int]]:
    """Facts of one attempt's response, and the arrival time of each content chunk. A
    compressed body is inflated first; one that cannot be (counted there) has none."""
    ok = attempt.status is not None and attempt.status < 400
    if extractor is None or not ok:
        return ResponseFacts(), []
    if attempt.events is not None:
        observer = extractor.stream(capture)
        stamps = observer.stamps(attempt.events)
        return observer.finish(), stamps
    body = attempt.body
    if body and attempt.encoding is not None:
        body = inflate(body, attempt.encoding)
    if body is not None:
        return extractor.response(body, capture), []
    return ResponseFacts(), []


def _http_name(record: RequestRecord) -> str:
    """HTTP span name: `{method} {route}`, or just the method when no template is known."""
    return f"{record.method} {record.route}" if record.route else record.method


def _served(views: list[AttemptView]) -> AttemptView | None:
    """The attempt whose response the client got: a hedge winner, else the last one."""
    for view in views:
        if view.record.hedge_outcome == "won":
            return view
    return views[-1] if views else None


def _served_by_later_attempt(record: RequestRecord) -> bool:
    """A target other than the first one tried answered after the first failed: a retry
    of the same target is not a failover, and neither is a hedge race the first attempt
    lost (spangate.hedges counts that)."""
    ok = [a for a in record.attempts if a.error_type is None]
    if not ok:
        return False
    first = record.attempts[0]
    return ok[-1].target != first.target and first.error_type != "hedge_lost"


def _attempt_error(attempt: AttemptRecord, facts: ResponseFacts) -> str | None:
    if attempt.error_type is not None and attempt.error_type != "client_disconnected":
        return attempt.error_type
    if attempt.status is not None and attempt.status >= 400:
        return attempt.failure_class or str(attempt.status)
    if facts.error_type:
        return facts.error_type
    if attempt.error_type == "client_disconnected":
        return "client_disconnected"
    return None


def _server_error(record: RequestRecord, views: list[AttemptView]) -> str | None:
    if record.error_type is not None:
        return record.error_type
    if record.status >= 500:
        return str(record.status)
    served = _served(views)
    if served is not None and served.stream_outcome not in (None, "completed"):
        return served.error or served.stream_outcome
    return None


def _metric_attrs(record: RequestRecord, view: AttemptView) -> Attrs:
    attempt = view.record
    attrs: Attrs = {
        sc.GEN_AI_OPERATION_NAME: record.operation,
        sc.GEN_AI_PROVIDER_NAME: attempt.system,
        sc.SERVER_ADDRESS: attempt.host,
        sc.SERVER_PORT: attempt.port,
    }
    _put(attrs, sc.GEN_AI_REQUEST_MODEL, view.model)
    _put(attrs, sc.GEN_AI_RESPONSE_MODEL, view.facts.response_model)
    _put(attrs, sc.ERROR_TYPE, _metric_error(view))
    return attrs


def _metric_error(view: AttemptView) -> str | None:
    """`error.type` on metrics, from a closed set (semconv: low cardinality; every
    distinct value is a series for as long as the process lives): a provider's own
    error code or type, which spans keep, becomes the failure class it was judged, and
    an in-band error in a stream the outcome it gave the stream."""
    error, attempt = view.error, view.record
    if error is None:
        return None
    if attempt.failure_class is not None:
        return attempt.failure_class
    if error == view.facts.error_type:  # the provider's, from inside the stream
        return "stream_error" if view.stream_outcome == "stream_error" else "_OTHER"
    return error


def _response_attrs(attrs: Attrs, facts: ResponseFacts) -> None:
    _put(attrs, sc.GEN_AI_RESPONSE_ID, facts.response_id)
    _put(attrs, sc.GEN_AI_RESPONSE_MODEL, facts.response_model)
    if facts.finish_reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(facts.finish_reasons)
    _put(attrs, sc.GEN_AI_USAGE_INPUT_TOKENS, facts.input_tokens)
    _put(attrs, sc.GEN_AI_USAGE_OUTPUT_TOKENS, facts.output_tokens)
    _put(attrs, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, facts.cache_read_input_tokens)
    _put(attrs, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, facts.cache_creation_input_tokens)
    _put(attrs, sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, facts.reasoning_output_tokens)
    attrs.update(facts.attributes)


def _put(attrs: Attrs, key: str, value: Any) -> None:
    if value is not None:
        attrs[key] = value


def _log_fields(record: RequestRecord, views: list[AttemptView]) -> dict[str, Any]:
    # The attempt whose answer the client got (a hedge race's winner may be the first).
    last = _served(views)
    facts = last.facts if last else ResponseFacts()
    fields: dict[str, Any] = {
        # Ints until the line is rendered (logging.hex_ids): no redaction pattern runs on
        # them, new on every line, and the OTLP log bridge takes them as they are.
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "method": record.method,
        "path": record.path,
        "route": record.alias,
        "model": record.request_model,
        "provider": last.record.provider if last else None,
        "target": last.record.target if last else None,
        "status": record.status,
        "stream": record.stream,
        "attempts": [_attempt_log(v) for v in views],
        "duration_ms": round((record.end_ns - record.start_ns) / 1e6, 3),
        "input_tokens": facts.input_tokens,
        "output_tokens": facts.output_tokens,
    }
    if record.error_type or (last and last.error):
        fields["error_type"] = record.error_type or (last.error if last else None)
    if record.error_message:
        fields["error"] = record.error_message
    if last and last.cost is not None:
        fields["cost_usd"] = round(last.cost, 8)
    return fields


def _attempt_log(view: AttemptView) -> dict[str, Any]:
    attempt = view.record
    entry: dict[str, Any] = {
        "n": attempt.number,
        "target": attempt.target,
        "status": attempt.status,
    }
    if view.error:
        entry["error_type"] = view.error
    if attempt.end_ns:
        entry["duration_ms"] = round((attempt.end_ns - attempt.start_ns) / 1e6, 3)
    return entry
