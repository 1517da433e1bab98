"""OTLP protobuf bytes for batches of spans and log records, written directly.

The SDK's encoders build a protobuf object per span, record, attribute and value
before serialising; in the bench profile that was the largest single cost of
full telemetry (about a quarter of all GIL time). Writing the wire format
straight from the SDK's span and log objects, with the repetitive parts
(resource, scope, attribute pairs such as `gen_ai.provider.name=openai`)
encoded once and reused, does the same job at a fraction of the cost. The
output parses to exactly what the SDK's encoders produce
(tests/test_otlpwire.py checks this).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode

from instrumentation.encoded import Encoded
from instrumentation.spans import SpanLine, tracestate_text

log = logging.getLogger("spangate.telemetry")

_LEN, _I64, _I32 = 2, 1, 5
#: SpanKind → OTLP enum (the proto's values are the SDK's plus one).
_KIND = {kind: kind.value + 1 for kind in SpanKind}
#: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK and ..._IS_REMOTE_MASK.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_CACHE_LIMIT = 8192
#: Entries of one key in a full pair cache that mark its values as never repeating:
#: low enough that a dozen such keys (ids, timings, costs) sharing the cache are all
#: caught, high enough that a key with a few dozen repeating values never is.
_UNIQUE_SHARE = _CACHE_LIMIT // 64
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Value types looked up in the pair cache before anything else.
_SCALAR_KEYS = frozenset({str, int, bool, tuple, float})
_CACHEABLE_STR = 256
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


_SMALL = [bytes((n,)) for n in range(0x80)]
#: Start and end time: two fixed64 fields in one pack.
_pack_times = struct.Struct("<BQBQ").pack
#: Distinct span names and statuses kept encoded (route names, error types: few).
_NAMES_LIMIT = 1024


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


_LEN_TAGS = [_tag(field, _LEN) for field in range(16)]
_KIND_FIELD = {kind: b"\x30" + _varint(number) for kind, number in _KIND.items()}
#: The same, by the member's id: members are singletons, and hashing one runs
#: Enum.__hash__ in Python (SpanLines are encoded for every request).
_KIND_FIELD_BY_ID = {id(kind): field for kind, field in _KIND_FIELD.items()}
_LOCAL_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_ERROR = StatusCode.ERROR.value


def _field(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, sub-message)."""
    size = len(payload)
    return _LEN_TAGS[field] + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _utf8(text: str) -> bytes:
    """Protobuf strings are UTF-8; lone surrogates (aiohttp decodes undecodable header
    bytes with surrogateescape) become U+FFFD rather than failing the batch."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        pass
    try:  # the original bytes back, then invalid sequences replaced
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode()
    except UnicodeEncodeError:  # other lone surrogates (e.g. from JSON "\ud800")
        return text.encode("utf-8", "replace")


def _string(value: str) -> bytes:
    return _field(1, _utf8(value))


def _bool(value: bool) -> bytes:
    return b"\x10\x01" if value else b"\x10\x00"


def _int(value: int) -> bytes:
    if not _INT64_MIN <= value <= _INT64_MAX:
        # Wrapping would export a different number; the SDK drops such a value too.
        raise ValueError(f"integer {value} does not fit OTLP's int64")
    return b"\x18" + _varint(value)


def _double(value: float) -> bytes:
    return b"\x21" + _pack_double(value)


def _bytes(value: bytes) -> bytes:
    return _field(7, value)


def _none(value: None) -> bytes:
    return b""


#: AnyValue's oneof: every member is written, even a zero value (oneof presence).
_SCALARS: dict[type, Callable[[Any], bytes]] = {
    str: _string,
    bool: _bool,
    int: _int,
    float: _double,
    bytes: _bytes,
    type(None): _none,
}


#: Nesting an attribute value or log body may have: Python's default recursion limit,
#: which the pure encoder meets there. Compiled (proxy/native.py), its calls use the C
#: stack instead, which a value nested some 100,000 deep would overflow.
_MAX_DEPTH = 1000


def _any_value(value: Any, depth: int = 0) -> bytes:
    encode = _SCALARS.get(type(value))
    if encode is not None:
        return encode(value)
    for kind in (bool, str, int, float, bytes):  # subclasses, e.g. a str enum
        if isinstance(value, kind):
            return _SCALARS[kind](value)
    if depth >= _MAX_DEPTH:
        raise RecursionError(f"value nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        pairs = b"".join(_field(1, _key_value(str(k), v, depth + 1)) for k, v in value.items())
        return _field(6, pairs)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(v, depth + 1)) for v in value))
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


_group_of = operator.attrgetter("group")
_framed_of = operator.attrgetter("framed")


def _key_value(key: str, value: Any, depth: int = 0) -> bytes:
    return _field(1, _utf8(key)) + _field(2, _any_value(value, depth))


class _Encoder:
    """Resource → scope → items framing and the caches; subclasses encode one item.

    ResourceSpans/ResourceLogs and ScopeSpans/ScopeLogs share their field numbers
    (resource or scope 1, children 2, schema_url 3). One instance per exporter.
    """

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, str, type, Any], bytes] = {}
        #: (field, key) pairs whose values do not repeat (ids, timings): not cached.
        self._unique: set[tuple[int, str]] = set()
        #: Each attribute key's encoded KeyValue.key, and how many may be kept.
        self._keys: dict[str, bytes] = {}
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}
        #: Values typed Any, not tuple[Any, Any]: compiled (proxy/native.py), a typed tuple
        #: is unboxed and each return would build a new one, while the identity of this
        #: one is what marks a batch as one group (_one_group).
        self._groups: dict[tuple[int, int], Any] = {}

    def _item(self, item: Any) -> bytes:
        raise NotImplementedError

    def prepare(self, items: Iterable[Any]) -> list[Encoded]:
        """`items` encoded now, for a later `encode` to frame (see Encoded)."""
        prepared = []
        for item in items:
            framed = self._framed_item(item)
            if framed is not None:
                prepared.append(Encoded(self._group(item), framed))
        return prepared

    def _group(self, item: Any) -> Any:
        resource, scope = item.resource, item.instrumentation_scope
        group: Any = self._groups.get((id(resource), id(scope)))
        # Kept with the objects themselves, so that their ids cannot be reused by others.
        if group is None or group[0] is not resource or group[1] is not scope:
            if len(self._groups) >= _NAMES_LIMIT:
                self._groups.clear()
            group = (resource, scope)  # one object, in the cache and in the return
            self._groups[(id(resource), id(scope))] = group
        return group

    def _framed_item(self, item: Any) -> bytes | None:
        """One item as its scope's child field. One that cannot be encoded (a log body of
        an unknown type) is lost alone, and said at debug level; the rest of the batch
        still goes out."""
        if type(item) is Encoded:
            return item.framed
        try:
            return _field(2, self._item(item))
        except (TypeError, ValueError, OverflowError, RecursionError):
            # RecursionError: a log body nested deeper than Python's stack (a client's
            # tool schema, say) that msgspec decoded happily.
            log.debug("telemetry item not exported: cannot encode", exc_info=True)
            return None

    def encode(self, items: Iterable[Any]) -> bytes:
        batch = items if isinstance(items, list) else list(items)
        if _one_group(batch):
            return self._one_group_message(batch)
        # Grouped by identity first: hashing a Resource serialises its attributes to
        # JSON, and everything one process exports shares one Resource object.
        # Equal resources are then merged, as the SDK's encoders do.
        by_id: dict[int, tuple[Resource, list[Any]]] = {}
        for item in batch:
            entry = by_id.get(id(item.resource))
            if entry is None:
                entry = by_id[id(item.resource)] = (item.resource, [])
            entry[1].append(item)
        grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        for resource, members in by_id.values():
            scopes = grouped.setdefault(resource, {})
            for item in members:
                framed = self._framed_item(item)
                if framed is not None:
                    scopes.setdefault(item.instrumentation_scope or None, []).append(framed)
        out = bytearray()
        for resource, scopes in grouped.items():
            body = b"".join(
                _field(2, self._scope_items(scope, b"".join(framed)))
                for scope, framed in scopes.items()
            )
            out += _field(1, self._resource_message(resource, body))
        return bytes(out)

    def _one_group_message(self, batch: list[Encoded]) -> bytes:
        """What every export of spangate's own queues is: items prepared when queued,
        sharing one resource and scope. Framed with lengths summed and one join, so the
        batch's bytes are copied once: the export thread's burst for 512 spans fell
        from ~370 to ~50 µs (the event loop waits behind it for the GIL), and each
        copy of a batch this size is a fresh mmap'd block to page-fault in."""
        resource, scope = batch[0].group
        head, tail = self._scope_ends(scope or None)
        items = list(map(_framed_of, batch))
        scope_size = len(head) + sum(map(len, items)) + len(tail)
        scope_tag = _LEN_TAGS[2] + _varint(scope_size)
        resource_head = self._resource(resource)
        schema = _schema(resource)
        size = len(resource_head) + len(scope_tag) + scope_size + len(schema)
        return b"".join(
            [_LEN_TAGS[1], _varint(size), resource_head, scope_tag, head, *items, tail, schema]
        )

    def _resource_message(self, resource: Resource, scopes: bytes) -> bytes:
        """ResourceSpans/ResourceLogs: the resource, its scopes' messages, the schema."""
        return self._resource(resource) + scopes + _schema(resource)

    # --- cached parts -----------------------------------------------------
    def _attributes(self, field: int, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        pairs, parts = self._pairs, []
        for key, value in attributes.items():
            kind = type(value)
            try:
                if kind in _SCALAR_KEYS:  # the common case, a cache hit, inline
                    hit = pairs.get((field, key, kind, value))  # TypeError: unhashable
                    if hit is not None:
                        parts.append(hit)
                        continue
                elif kind is list:  # finish reasons: looked up by their tuple
                    strings = _strings(value)
                    hit = None if strings is None else pairs.get((field, key, list, strings))
                    if hit is not None:
                        parts.append(hit)
                        continue
                parts.append(self._pair(field, key, kind, value))
            except (TypeError, ValueError, OverflowError):
                # As the SDK does: one value that cannot be encoded loses that
                # attribute, never the span or the batch it travels in.
                log.debug("attribute %r not exported: cannot encode", key, exc_info=True)
        return b"".join(parts)

    def _pair(self, field: int, key: str, kind: type, value: Any) -> bytes:
        encoded = _field(field, self._key_value(key, value))
        if kind is list:
            value = _strings(value)  # the cache key of a list of strings; else not cached
            cacheable = value is not None
        else:
            cacheable = _cacheable(kind, value)
        if cacheable and (field, key) not in self._unique:
            if len(self._pairs) >= _CACHE_LIMIT:
                self._retire()
                if (field, key) in self._unique:
                    return encoded
            self._pairs[(field, key, kind, value)] = encoded
        return encoded

    def _key_value(self, key: str, value: Any) -> bytes:
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = _field(1, _utf8(key))
            if len(self._keys) < _CACHE_LIMIT:
                self._keys[key] = prefix
        return prefix + _field(2, _any_value(value))

    def _retire(self) -> None:
        """The pair cache is full: the keys that filled most of it (a trace id on every
        log line, a response id, a duration) are not cached from now on, so that the
        pairs that do repeat stay cached instead of being cleared with them.

        Counted over a copy of the keys: several threads encode log lines with one
        encoder, and pure, another thread's insert between two steps of an iteration
        over the cache itself raised "dictionary changed size during iteration". The
        copy (`list` of a dict, one C call: atomic under the GIL) is taken only here,
        once per _CACHE_LIMIT new pairs."""
        counts = collections.Counter((field, key) for field, key, _, _ in list(self._pairs))
        self._unique.update(pair for pair, count in counts.items() if count >= _UNIQUE_SHARE)
        self._pairs.clear()

    def _resource(self, resource: Resource) -> bytes:
        # The Resource is kept alongside so that its id cannot be reused by another.
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            cached = (resource, _field(1, self._attributes(1, resource.attributes)))
            self._resources[id(resource)] = cached
        return cached[1]

    def _scope_items(self, scope: InstrumentationScope | None, framed: bytes) -> bytes:
        """ScopeSpans/ScopeLogs: the scope, its items (already framed), the schema."""
        head, tail = self._scope_ends(scope)
        return head + framed + tail

    def _scope_ends(self, scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
        head = self._scopes.get(scope)
        if head is None:
            head = _field(
                1, _scope(scope, self._attributes(3, scope.attributes if scope else None))
            )
            self._scopes[scope] = head
        tail = _field(3, scope.schema_url.encode()) if scope and scope.schema_url else b""
        return head, tail


class SpanEncoder(_Encoder):
    """Batches of ReadableSpans → ExportTraceServiceRequest bytes."""

    def __init__(self) -> None:
        super().__init__()
        #: Encoded span names (a name field) and statuses (a status field): a handful of
        #: values repeat on every span ("chat gpt-4o-mini", UNSET).
        self._names: dict[str, bytes] = {}
        self._statuses: dict[tuple[int, str | None], bytes] = {}

    def _item(self, span: ReadableSpan | SpanLine) -> bytes:
        if isinstance(span, SpanLine):
            return self._line(span)
        context = span.get_span_context()
        assert context is not None
        parent = span.parent
        # Ids have fixed sizes: their tags and lengths are constants.
        out = b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
        out += b"\x12\x08" + context.span_id.to_bytes(8, "big")
        if context.trace_state:
            out += _field(3, tracestate_text(context.trace_state).encode())
        if parent is not None:
            out += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
        out += self._name_field(span.name)
        out += _KIND_FIELD[span.kind]
        out += _pack_times(0x39, span.start_time or 0, 0x41, span.end_time or 0)
        out += self._attributes(9, span.attributes)
        out += _count(10, span.dropped_attributes)
        for event in span.events:
            out += _field(11, self._event(event))
        out += _count(12, span.dropped_events)
        for link in span.links:
            out += _field(13, self._link(link))
        out += _count(14, span.dropped_links)
        out += self._status_field(span.status.status_code.value, span.status.description)
        return out + (_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)

    def _line(self, span: SpanLine) -> bytes:
        """A SpanLine: the fields `_item` writes for a ReadableSpan, in the same order,
        with nothing dropped, no events or links, and the status as its error."""
        out = b"\x0a\x10" + span.trace_id.to_bytes(16, "big")
        out += b"\x12\x08" + span.span_id.to_bytes(8, "big")
        if span.trace_state:
            out += _field(3, span.trace_state.encode())
        if span.parent_id:
            out += b"\x22\x08" + span.parent_id.to_bytes(8, "big")
        out += self._name_field(span.name) + _KIND_FIELD_BY_ID[id(span.kind)]
        out += _pack_times(0x39, span.start_time, 0x41, span.end_time)
        out += self._attributes(9, span.attributes)
        error = span.error
        out += self._status_field(_ERROR, error) if error else _UNSET_STATUS
        return out + (_REMOTE_FLAGS if span.parent_remote else _LOCAL_FLAGS)

    def _name_field(self, name: str) -> bytes:
        encoded = self._names.get(name)
        if encoded is None:
            encoded = _field(5, _utf8(name))
            if len(name) <= _CACHEABLE_STR and len(self._names) < _NAMES_LIMIT:
                self._names[name] = encoded
        return encoded

    def _status_field(self, code: int, description: str | None) -> bytes:
        encoded = self._statuses.get((code, description))
        if encoded is None:
            encoded = _field(15, _status(code, description))
            short = description is None or len(description) <= _CACHEABLE_STR
            if short and len(self._statuses) < _NAMES_LIMIT:
                self._statuses[(code, description)] = encoded
        return encoded

    def _event(self, event: Event) -> bytes:
        head = b"\x09" + _pack_fixed64(event.timestamp) + _field(2, _utf8(event.name))
        return head + self._attributes(3, event.attributes) + _count(4, event.dropped_attributes)

    def _link(self, link: Link) -> bytes:
        context = link.context
        out = _field(1, context.trace_id.to_bytes(16, "big"))
        out += _field(2, context.span_id.to_bytes(8, "big"))
        out += self._attributes(4, link.attributes) + _count(5, link.dropped_attributes)
        return out + b"\x35" + _pack_fixed32(_flags(context))


class LogEncoder(_Encoder):
    """Batches of ReadableLogRecords → ExportLogsServiceRequest bytes."""

    def __init__(self) -> None:
        super().__init__()
        #: Severity and body of lines whose body is a short string (the request line's
        #: "request.completed"), kept encoded.
        self._heads: dict[tuple[Any, str | None, str], bytes] = {}

    def _item(self, readable: ReadableLogRecord) -> bytes:
        record = readable.log_record
        out = b"\x09" + _pack_fixed64(record.timestamp) if record.timestamp else b""
        out += self._head(record.severity_number, record.severity_text, record.body)
        out += self._attributes(6, record.attributes)
        out += _count(7, readable.dropped_attributes)
        flags = int(record.trace_flags or 0)
        if flags:
            out += b"\x45" + _pack_fixed32(flags)
        if record.trace_id:  # ids have fixed sizes: constant tags and lengths
            out += b"\x4a\x10" + record.trace_id.to_bytes(16, "big")
        if record.span_id:
            out += b"\x52\x08" + record.span_id.to_bytes(8, "big")
        if record.observed_timestamp:
            out += b"\x59" + _pack_fixed64(record.observed_timestamp)
        if record.event_name:
            out += _field(12, record.event_name.encode())
        return out

    def _head(self, severity_number: Any, severity_text: str | None, body: Any) -> bytes:
        """Severity number, severity text and body fields."""
        key = (severity_number, severity_text, body) if type(body) is str else None
        if key is not None:
            cached = self._heads.get(key)
            if cached is not None:
                return cached
        severity = getattr(severity_number, "value", None)
        out = b"\x10" + _varint(severity) if severity else b""
        if severity_text:
            out += _field(3, severity_text.encode())
        out += _field(5, _any_value(body))
        if key is not None and len(body) <= _CACHEABLE_STR and len(self._heads) < _NAMES_LIMIT:
            self._heads[key] = out
        return out


def preparer(exporter: Any) -> Callable[[Sequence[Any]], list[Encoded]] | None:
    """How items bound for `exporter` are encoded as they are queued (see Encoded), or
    None when it takes the SDK's own objects (not spangate's exporter, or on its SDK path)."""
    encoder = getattr(exporter, "_encoder", None)
    if not getattr(exporter, "fast", False) or not isinstance(encoder, _Encoder):
        return None
    return encoder.prepare


def _schema(resource: Resource) -> bytes:
    return _field(3, resource.schema_url.encode()) if resource.schema_url else b""


def _one_group(batch: list[Any]) -> bool:
    """Every item prepared by this encoder, in one group: C-level checks (the general
    path's Python loop over a batch is what this avoids). Only Encoded items hold the
    encoder's group tuples, so an `is` match on each is the whole test."""
    if not batch or type(batch[0]) is not Encoded:
        return False
    # Through the getter (Any): compiled, a read typed tuple[Any, Any] is unboxed, and
    # boxing it again would make a new tuple that no item's group `is`.
    group = _group_of(batch[0])
    try:
        return all(map(operator.is_, map(_group_of, batch), itertools.repeat(group)))
    except AttributeError:  # an item that was not prepared
        return False


def _cacheable(kind: type, value: Any) -> bool:
    """Values whose equality (with their type, part of the key) implies equal encodings.
    Floats but not zeros (0.0 == -0.0) or NaN (never equal); tuples only of strings:
    (1, 0) == (True, False) == (1.0, 0.0) in Python (lists: `_strings`)."""
    if kind is str:
        return len(value) <= _CACHEABLE_STR
    if kind is tuple:
        return all(type(item) is str for item in value)
    if kind is float:
        return value != 0.0 and not math.isnan(value)
    return kind is bool or kind is int


def _strings(value: list[Any]) -> tuple[str, ...] | None:
    """A list of strings as a tuple (a cache key), or None for any other list."""
    if all(type(item) is str for item in value):
        return tuple(value)
    return None


def _scope(scope: InstrumentationScope | None, attributes: bytes) -> bytes:
    if scope is None:
        return b""
    out = _field(1, scope.name.encode()) if scope.name else b""
    if scope.version:
        out += _field(2, scope.version.encode())
    return out + attributes


def _status(code: int, message: str | None) -> bytes:
    out = _field(2, message.encode()) if message else b""
    return out + (b"\x18" + _varint(code) if code else b"")


#: An UNSET status without a description, as `_status_field` writes it for a ReadableSpan.
_UNSET_STATUS = _field(15, _status(StatusCode.UNSET.value, None))


def _count(field: int, value: int) -> bytes:
    return _tag(field, 0) + _varint(value) if value else b""


def _flags(parent: SpanContext | None) -> int:
    if parent is not None and parent.is_remote:
        return _HAS_IS_REMOTE | _IS_REMOTE
    return _HAS_IS_REMOTE
