"""Runs inside rotel-agent's embedded Python (stdlib only): append what arrives as JSON lines.

An exception here panics the agent, so every function swallows its own errors.
"""

import json
import os
import threading
from typing import Any

_LOCK = threading.Lock()


def _write(kind: str, data: Any) -> None:
    # One write() of the whole line on an O_APPEND descriptor, under a lock: lines from
    # concurrent export calls never interleave, and a reader never sees half of one for long.
    line = (json.dumps({"kind": kind, "data": data}) + "\n").encode()
    with _LOCK:
        fd = os.open(os.environ["SPANGATE_ROTEL_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _value(any_value: Any) -> Any:
    value = getattr(any_value, "value", any_value)
    if type(value).__name__ in ("ArrayValue", "KeyValueList"):
        return [_value(item) for item in value]
    if hasattr(value, "value"):
        return _value(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _attrs(items: Any) -> Any:
    return {kv.key: _value(kv.value) for kv in items}


def _hex(raw: Any) -> Any:
    return bytes(raw).hex() if raw else ""


def process_spans(resource_spans: Any) -> None:
    try:
        resource = _attrs(resource_spans.resource.attributes)
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                _write(
                    "span",
                    {
                        "resource": resource,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": _hex(span.trace_id),
                        "span_id": _hex(span.span_id),
                        "parent_span_id": _hex(span.parent_span_id),
                        "status_code": getattr(span.status, "code", None) if span.status else None,
                        "attributes": _attrs(span.attributes),
                    },
                )
    except Exception as exc:
        _write("error", {"where": "spans", "error": repr(exc)})


def _variant(obj: Any) -> Any:
    """The payload of a PyO3 enum variant (MetricData_Sum, NumberDataPointValue_AsInt, ...)."""
    return getattr(obj, "_0", obj)


def _point(point: Any) -> Any:
    row = {"attributes": _attrs(point.attributes)}
    value = getattr(point, "value", None)
    if value is not None:
        row["value"] = _variant(value)
    for name in ("count", "sum"):
        if getattr(point, name, None) is not None:
            row[name] = getattr(point, name)
    bounds = getattr(point, "explicit_bounds", None)
    if bounds is not None:
        row["explicit_bounds"] = list(bounds)
        row["bucket_counts"] = list(point.bucket_counts)
    return row


def _temporality(value: Any) -> str:
    """OTLP AggregationTemporality (1 delta, 2 cumulative), whatever form rotel gives it."""
    text = str(_variant(value)).lower()
    if "delta" in text or text == "1":
        return "delta"
    if "cumulative" in text or text == "2":
        return "cumulative"
    return text


def _metric(resource: Any, metric: Any) -> Any:
    row = {"resource": resource, "name": metric.name, "unit": metric.unit, "points": []}
    try:
        data = _variant(metric.data)
        row["type"] = type(data).__name__
        temporality = getattr(data, "aggregation_temporality", None)
        if temporality is not None:
            row["temporality"] = _temporality(temporality)
        row["points"] = [_point(point) for point in data.data_points]
    except Exception as exc:
        row["points_error"] = repr(exc)
    return row


def process_metrics(resource_metrics: Any) -> None:
    try:
        resource = _attrs(resource_metrics.resource.attributes)
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                _write("metric", _metric(resource, metric))
    except Exception as exc:
        _write("error", {"where": "metrics", "error": repr(exc)})


def process_logs(resource_logs: Any) -> None:
    try:
        resource = _attrs(resource_logs.resource.attributes)
        for scope in resource_logs.scope_logs:
            for record in scope.log_records:
                _write(
                    "log",
                    {
                        "resource": resource,
                        "body": _value(record.body) if record.body else None,
                        "trace_id": _hex(record.trace_id),
                        "span_id": _hex(record.span_id),
                        "attributes": _attrs(record.attributes),
                    },
                )
    except Exception as exc:
        _write("error", {"where": "logs", "error": repr(exc)})
