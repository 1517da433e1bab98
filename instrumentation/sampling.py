"""Head sampling decided on the hot path, from the standard OTEL_TRACES_SAMPLER values.

Spans are built later, so the decision must be known at arrival (it goes
upstream in `traceparent`). Metrics and the log line are kept for every
request whatever the decision.
"""

from __future__ import annotations

from collections.abc import Callable

from instrumentation.tracecontext import Parent

#: (parent or None, trace id) → sampled?
Sampler = Callable[[Parent | None, int], bool]

_LOW64 = (1 << 64) - 1


def _ratio(rate: float) -> Callable[[int], bool]:
    bound = int(max(0.0, min(1.0, rate)) * (1 << 64))
    return lambda trace_id: (trace_id & _LOW64) < bound


def make_sampler(name: str | None, arg: str | None) -> Sampler:
    """Build a sampler; unknown names fall back to the OTel default, parentbased_always_on."""
    name = (name or "parentbased_always_on").strip().lower()
    rate = _parse_rate(arg)
    roots: dict[str, Callable[[int], bool]] = {
        "always_on": lambda _: True,
        "always_off": lambda _: False,
        "traceidratio": _ratio(rate),
    }
    base = name.removeprefix("parentbased_")
    root = roots.get(base, roots["always_on"])
    if name.startswith("parentbased_") or base not in roots:
        return lambda parent, trace_id: parent.sampled if parent is not None else root(trace_id)
    return lambda parent, trace_id: root(trace_id)


def _parse_rate(arg: str | None) -> float:
    try:
        return float(arg) if arg else 1.0
    except ValueError:
        return 1.0
