"""structlog configured for a sidecar: one JSON object per line on stdout, secrets redacted."""

from __future__ import annotations

import logging
import re
import select
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import msgspec
import structlog

from instrumentation.stderr import StderrHandler

REDACTED = "[REDACTED]"

#: Shapes of provider keys and bearer tokens, redacted wherever they appear in text.
DEFAULT_SECRET_PATTERNS = (
    r"[Bb][Ee][Aa][Rr][Ee][Rr]\s+[A-Za-z0-9._~+/=-]+",
    r"sk-[A-Za-z0-9_-]{8,}",
)
_SECRET_KEYS = frozenset({"authorization", "x-api-key", "api-key", "api_key", "apikey"})


#: Strings this short are remembered with their redacted form (bounded, cleared when
#: full): a log line's method, path, model, provider and target repeat on every request,
#: and the regex costs ~0.5 µs per string, the cache lookup ~0.05.
_REMEMBERED_LEN = 256
_REMEMBERED = 4096
_PLAIN = frozenset({int, float, bool, type(None)})
#: Nesting redacted in a log event's value; a dict or list deeper down is replaced by
#: TOO_DEEP. Compiled (proxy/native.py), each level is C calls on the thread's own stack,
#: which a value nested ~100,000 deep (a client's tool schema: msgspec decodes it fine)
#: could overflow where pure raises RecursionError; either way the line was lost. Low
#: enough that pure (three frames a level) stays far inside Python's recursion limit.
MAX_DEPTH = 100
TOO_DEEP = f"[nested deeper than {MAX_DEPTH} levels]"


class Redactor:
    """Replaces secret values in log events: by key name, by pattern, and by literal."""

    def __init__(self, patterns: Iterable[str] = (), literals: Iterable[str] = ()) -> None:
        #: What it was built from, so that another process can build the same one.
        self.spec = ([*patterns], [lit for lit in literals if lit])
        sources = [*DEFAULT_SECRET_PATTERNS, *self.spec[0]]
        sources += [re.escape(lit) for lit in self.spec[1]]
        self._pattern = re.compile("|".join(f"(?:{p})" for p in sources))
        # Used from several threads: single dict operations are atomic under the GIL,
        # and a clear between a miss and its insert only costs a recomputation.
        self._texts: dict[str, str] = {}
        self._keys: dict[str, bool] = {}

    def text(self, value: str) -> str:
        return self._pattern.sub(REDACTED, value)

    def field(self, value: str) -> str:
        """text() for a value that repeats (a log event's plain str; a path, a user
        agent or a model name on a span or a metric), remembered when short (captured
        content goes through text() and is not kept)."""
        done = self._texts.get(value)
        if done is not None:
            return done
        redacted = self._pattern.sub(REDACTED, value)
        if len(value) <= _REMEMBERED_LEN:
            _remember(self._texts, value, redacted)
        return redacted

    def value(self, key: str, value: Any, depth: int = 0) -> Any:
        if self._secret_key(key):
            return REDACTED
        kind = type(value)
        if kind is str:
            return self.field(value)
        return value if kind in _PLAIN else self._nested(key, value, depth)

    def _secret_key(self, key: str) -> bool:
        # Only plain str keys are remembered: a subclass may hash or compare its own way.
        if type(key) is not str:
            return key.lower() in _SECRET_KEYS
        secret = self._keys.get(key)
        if secret is None:
            secret = key.lower() in _SECRET_KEYS
            _remember(self._keys, key, secret)
        return secret

    def _nested(self, key: str, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):  # a str subclass: never remembered
            return self.text(value)
        if depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
            return TOO_DEEP
        if isinstance(value, dict):
            return {k: self.value(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(key, v, depth + 1) for v in value]
        return value

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        # value() for every entry, with its common cases (a remembered key verdict, a
        # remembered string, a number) inline: a request line has ~20 entries and this
        # runs for every request.
        keys, texts = self._keys, self._texts
        for key, value in event.items():
            secret = keys.get(key) if type(key) is str else None
            if secret is None:
                secret = self._secret_key(key)
            if secret:
                event[key] = REDACTED
                continue
            kind = type(value)
            if kind is str:
                done = texts.get(value)
                event[key] = done if done is not None else self.field(value)
            elif kind not in _PLAIN:
                event[key] = self._nested(key, value)
        return event


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _REMEMBERED:
        cache.clear()
    cache[key] = value


class TimeStamp:
    """structlog's `TimeStamper(fmt="iso", utc=True, key="ts")`, to the character
    ("2026-12-02T10:45:58.491834Z"; no fraction when it is zero, as isoformat
    writes it), with the date and time formatted once per second: 0.7 instead of
    1.4 µs per line, and every request writes one."""

    __slots__ = ("_second",)

    def __init__(self) -> None:
        #: (second, its date and time): one tuple, swapped whole, so that threads
        #: writing lines at the same time never pair one second with another's text.
        self._second: tuple[int, str] = (-1, "")

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event["ts"] = self.format(time.time_ns())
        return event

    def format(self, now_ns: int) -> str:
        second, nanos = divmod(now_ns, 1_000_000_000)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        micros = nanos // 1000
        return f"{cached[1]}.{micros:06d}Z" if micros else f"{cached[1]}Z"


#: Keys whose int values are W3C trace context ids, and the hex each is written as.
_HEX_IDS = (("trace_id", "032x"), ("span_id", "016x"))


def hex_ids(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A line's trace and span ids go through the chain as the ints they are (an int holds
    no secret, and two regex runs on values new on every line were half the redactor's
    time) and are written as W3C hex."""
    for key, spec in _HEX_IDS:
        value = event.get(key)
        if type(value) is int:
            event[key] = format(value, spec)
    return event


#: structlog's loggers that write each message as a line of text: held lines joined by
#: newlines are the same bytes as the lines written one by one.
_LINE_LOGGERS = (structlog.BytesLogger, structlog.PrintLogger, structlog.WriteLogger)
#: The most bytes held lines are joined into (select.PIPE_BUF: 4,096 on Linux).
_ONE_WRITE = select.PIPE_BUF


def _serialize(event: Any, **_: Any) -> bytes:
    return msgspec.json.encode(event, enc_hook=str)


class LineEmitter:
    """`emit(fields)`: one `event` line through structlog's configured processor chain,
    run directly.

    The request.completed line is written for every request, and structlog's own call
    path (lazy proxy, bound logger, keyword arguments copied twice) cost about as much
    as the half-dozen processors it runs (bench/worker_profile.py: ~11 of ~32 µs).
    The chain, the level filter and the output are structlog's current configuration,
    read on every call, so a later `configure` (tag_worker, capture_logs) applies as
    it does to any logger that is not cached.
    """

    def __init__(self, name: str, event: str, level: str = "info", hold: bool = False) -> None:
        self._name, self._event, self._method = name, event, level
        #: hold=True: rendered lines wait for flush() and leave in one write (the
        #: telemetry worker flushes after each drain): a write per line was a system
        #: call per request. Only for a cached logger that writes text lines.
        self._hold = hold
        self._held: list[Any] = []
        self._held_size = 0
        self._number = logging.getLevelName(level.upper())
        #: The configuration the chain, logger and level were taken from.
        self._built_for: tuple[Any, ...] | None = None
        self._chain: Any = ()
        self._logger: Any = None
        self._cached = False
        self._enabled = True

    def __call__(self, fields: dict[str, Any]) -> None:
        config = structlog.get_config()
        built = self._built_for
        if (
            built is None
            or config["processors"] is not built[0]
            or config["logger_factory"] is not built[1]
            or config["wrapper_class"] is not built[2]
            or config["cache_logger_on_first_use"] != built[3]
        ):
            self._build(config)
        if not self._enabled:
            return
        method = self._method
        # A logger per line unless structlog caches them (spangate's configuration does):
        # structlog's default PrintLogger takes whatever sys.stdout is when it is made.
        logger = self._logger if self._cached else config["logger_factory"](self._name)
        # Key order as structlog's: the fields, then the event name.
        event: Any = {**fields, "event": self._event}
        try:
            for processor in self._chain:
                event = processor(logger, method, event)
        except structlog.DropEvent:
            return
        if isinstance(event, str | bytes | bytearray):
            if self._hold and self._cached and type(logger) in _LINE_LOGGERS:
                self._keep(event)
                return
            getattr(logger, method)(event)
        elif isinstance(event, tuple):
            args, kwargs = event
            getattr(logger, method)(*args, **kwargs)
        else:
            getattr(logger, method)(**event)

    def _keep(self, line: str | bytes | bytearray) -> None:
        # At most PIPE_BUF bytes per write: on a pipe (a container's stdout, shared
        # with --workers siblings) only such a write is atomic, so no other process's
        # line lands inside one of ours. A str counts 4 bytes a character (UTF-8's most).
        size = len(line) + 1 if not isinstance(line, str) else 4 * len(line) + 1
        if self._held and self._held_size + size > _ONE_WRITE:
            self.flush()
        self._held.append(line)
        self._held_size += size

    def flush(self) -> None:
        """Write the held lines, in one call of the logger they were rendered for."""
        held = self._held
        if not held:
            return
        self._held, self._held_size = [], 0
        separator: Any = "\n" if isinstance(held[0], str) else b"\n"
        getattr(self._logger, self._method)(separator.join(held))

    def _build(self, config: dict[str, Any]) -> None:
        self.flush()  # held lines belong to the output they were rendered for
        processors = config["processors"]
        self._logger = config["logger_factory"](self._name)
        bound = config["wrapper_class"](self._logger, processors=processors, context={})
        # A filtering bound logger says whether the level is on; any other wrapper logs all.
        enabled = getattr(bound, "is_enabled_for", None)
        self._enabled = bool(enabled(self._number)) if enabled is not None else True
        self._cached = bool(config["cache_logger_on_first_use"])
        self._chain = processors  # structlog's own list: changed in place, still followed
        self._built_for = (
            processors,
            config["logger_factory"],
            config["wrapper_class"],
            config["cache_logger_on_first_use"],
        )


def _serialize_text(event: Any, **_: Any) -> str:
    """_serialize's line as text: what a logging.Formatter returns."""
    return _serialize(event).decode()


#: The name of the stdlib handler configure_logging installs (replaced, never doubled).
_STDLIB_HANDLER = "spangate"


def _stdlib_handler(redactor: Redactor) -> logging.Handler:
    """stdlib logging (aiohttp's, asyncio's, the OpenTelemetry SDK's) as JSON lines on
    stderr, through the same redaction as spangate's own lines: aiohttp logs a request
    it could not parse as it came, a client's Authorization header included."""
    handler = StderrHandler()
    handler.name = _STDLIB_HANDLER
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                TimeStamp(),
                structlog.processors.JSONRenderer(serializer=_serialize_text),
            ],
        )
    )
    return handler


def configure_logging(redactor: Redactor, level: str = "info", sinks: Iterable[Any] = ()) -> None:
    """Route structlog to JSON lines on stdout, and stdlib logging to JSON lines on
    stderr, both redacted."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        redactor,
        # After the redactor: a time stamp holds no secret, and being new on every line
        # it was a regex run and an entry crowding the redactor's cache out each time.
        TimeStamp(),
        # Sinks see events only after redaction (e.g. the OTLP log bridge).
        *sinks,
        hex_ids,
        structlog.processors.JSONRenderer(serializer=_serialize),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.name == _STDLIB_HANDLER]:
        root.removeHandler(handler)
    root.addHandler(_stdlib_handler(redactor))


def tag_worker(index: int) -> None:
    """Every log line of a worker says which one it is. A processor, not a context
    variable: request lines are written from telemetry threads (or the telemetry
    process), which see no contextvars."""

    def add(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("worker", index)
        return event

    structlog.configure(processors=[add, *structlog.get_config()["processors"]])


def redactor_for(config: Any) -> Redactor:
    """The redactor for a spangate Config: its patterns and its configured keys."""
    keys = [p.api_key for p in config.providers.values() if p.api_key]
    return Redactor(config.telemetry.redact_patterns, keys)
