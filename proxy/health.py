"""Per-target live state: circuit breaker, in-flight count, latency EWMA, recent errors.

Shared by every alias that names the same provider/model. Transitions take an
explicit `now` so the state machine is tested without sleeping.

    closed ──(N consecutive failures, or error rate > R over the window)──► open
    open ──(cooldown elapsed, ≥ the provider's Retry-After up to 300 s)──► half_open (one probe)
    half_open ──probe succeeds──► closed        half_open ──probe fails──► open
"""

from __future__ import annotations

import collections
import time
from typing import Any, Literal

from proxy.config import CircuitConfig, FailureClass

CircuitState = Literal["closed", "open", "half_open"]

#: Failures that say something about the target (not about the request).
_COUNTED: frozenset[FailureClass] = frozenset(
    {
        "transient",
        "rate_limited",
        "quota",
        "credential",
        "model_unavailable",
        "timeout",
        "connection",
    }
)
#: The longest cooldown a provider's Retry-After can impose, unless the configured
#: `cooldown_s` is longer still. Five minutes: long enough for any real rate-limit
#: window, short enough that a bogus header (`Retry-After: 1e12`) cannot shut a target
#: until restart. Same-target retries are unaffected (they wait only within the deadline).
MAX_PROVIDER_COOLDOWN_S = 300.0
_EWMA_ALPHA = 0.2
_LATENCY_SAMPLES = 200


def cooldown_for(configured_s: float, retry_after_s: float | None) -> float:
    """The configured cooldown, lengthened by the provider's Retry-After up to a cap."""
    if retry_after_s is None:
        return configured_s
    return max(configured_s, min(retry_after_s, MAX_PROVIDER_COOLDOWN_S))


class TargetHealth:
    def __init__(self, label: str, circuit: CircuitConfig) -> None:
        self.label = label
        self.circuit = circuit
        self.state: CircuitState = "closed"
        self.inflight = 0
        self.consecutive_failures = 0
        self.cooldown_until = 0.0
        #: The slot of the half-open probe in flight: only its own end frees it.
        self.probe: Slot | None = None
        self.ewma_first_byte_s: float | None = None
        self.last_observed = 0.0
        self.first_byte_samples: collections.deque[float] = collections.deque(
            maxlen=_LATENCY_SAMPLES
        )
        self._window: collections.deque[tuple[float, bool]] = collections.deque()
        self.recent_errors: collections.deque[tuple[float, str]] = collections.deque(maxlen=5)
        self.transitions: collections.Counter[str] = collections.Counter()

    # --- admission ----------------------------------------------------------
    def available(self, now: float) -> bool:
        """May a request be sent now? Half-open admits exactly one probe at a time."""
        if not self.circuit.enabled or self.state == "closed":
            return True
        if self.state == "open" and now >= self.cooldown_until:
            self._move("half_open")
        return self.state == "half_open" and self.probe is None

    def claim(self, now: float) -> Slot | None:
        """A slot if a request may be sent now, else None. Taken in the same step as the
        check, so requests choosing targets concurrently (a hedged attempt starts a loop
        turn later) cannot all pass a half-open circuit before its probe is marked."""
        return self.start() if self.available(now) else None

    def start(self) -> Slot:
        """A slot without asking the circuit (a same-target retry goes where it went)."""
        self.inflight += 1
        slot = Slot(self)
        if self.state == "half_open" and self.probe is None:
            self.probe = slot
        return slot

    # --- verdicts (given through an attempt's Slot) -------------------------
    def succeeded(self, now: float) -> None:
        self._record(now, ok=True)
        self.consecutive_failures = 0
        if self.state != "closed":
            self._move("closed")

    def failed(self, now: float, cls: FailureClass, retry_after_s: float | None) -> None:
        self._record(now, ok=cls not in _COUNTED)
        if cls not in _COUNTED:
            return
        self.recent_errors.append((time.time(), cls))
        self.consecutive_failures += 1
        if self.state == "half_open" or self._should_open(now):
            self._open(now, retry_after_s)

    def observe(self, now: float, first_byte_s: float) -> None:
        self.last_observed = now
        self.first_byte_samples.append(first_byte_s)
        previous = self.ewma_first_byte_s
        self.ewma_first_byte_s = (
            first_byte_s if previous is None else previous + _EWMA_ALPHA * (first_byte_s - previous)
        )

    def reopens_in(self, now: float) -> float:
        """Seconds until the circuit lets a request through again (0: it would now, or
        once a half-open probe or an in-flight slot comes back)."""
        if self.state != "open":
            return 0.0
        return max(self.cooldown_until - now, 0.0)

    def leave(self, slot: Slot) -> None:
        """`slot` is given back; the probe is freed only when the probe itself ends."""
        self.inflight = max(self.inflight - 1, 0)
        if self.probe is slot:
            self.probe = None

    # --- internals ----------------------------------------------------------
    def _record(self, now: float, ok: bool) -> None:
        self._window.append((now, ok))
        horizon = now - self.circuit.window_s
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _should_open(self, now: float) -> bool:
        if not self.circuit.enabled or self.state == "open":
            return False
        if self.consecutive_failures >= self.circuit.consecutive_failures:
            return True
        total = len(self._window)
        failures = sum(1 for _, ok in self._window if not ok)
        return total >= self.circuit.min_requests and failures / total > self.circuit.error_rate

    def _open(self, now: float, retry_after_s: float | None) -> None:
        cooldown = cooldown_for(self.circuit.cooldown_s, retry_after_s)
        self.cooldown_until = now + cooldown
        self._move("open")

    def _move(self, state: CircuitState) -> None:
        if state != self.state:
            self.transitions[state] += 1
            self.state = state
        if state == "closed":
            # The probe's question is answered: it is an ordinary request from here on.
            self.probe = None

    def percentile(self, fraction: float) -> float | None:
        if not self.first_byte_samples:
            return None
        ordered = sorted(self.first_byte_samples)
        index = min(int(fraction * len(ordered)), len(ordered) - 1)
        return ordered[index]

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state,
            "inflight": self.inflight,
            "consecutive_failures": self.consecutive_failures,
            "cooldown_remaining_s": round(max(self.cooldown_until - now, 0.0), 3)
            if self.state == "open"
            else 0.0,
            "latency_ewma_s": self.ewma_first_byte_s,
            "recent_errors": [{"at": at, "class": cls} for at, cls in self.recent_errors],
            "transitions": dict(self.transitions),
        }


class Slot:
    """One attempt's hold on its target: an in-flight unit and, if it was taken while the
    circuit was half-open with no probe out, the probe. An attempt ends its slot once
    (`failed`, `completed` or `release`); later calls are no-ops, so cleanup paths that
    overlap (a cancelled attempt, then the race that cancelled it) cannot give back more
    than was taken. It gives the circuit at most one verdict."""

    __slots__ = ("_held", "_judged", "health")

    def __init__(self, health: TargetHealth) -> None:
        self.health = health
        self._held = True
        self._judged = False

    @property
    def is_probe(self) -> bool:
        return self.health.probe is self

    def succeeded(self, now: float, first_byte_s: float | None) -> None:
        """Committed with the whole response in hand: a success now. The slot stays in
        flight until `release()` (end of relay)."""
        self.committed(now, first_byte_s)
        self._judge(now, None)

    def committed(self, now: float, first_byte_s: float | None) -> None:
        """Committed with the rest still to come (a stream): the verdict waits for the
        end of the relay (`completed` or `failed`), so a target that breaks its streams
        after the first content counts as failing, and a half-open probe is only judged
        once its answer is whole — as a JSON probe is."""
        if first_byte_s is not None:
            self.health.observe(now, first_byte_s)

    def completed(self, now: float) -> None:
        """The relay ended with the whole response: a success, unless already judged."""
        self._judge(now, None)
        self.release()

    def failed(self, now: float, cls: FailureClass, retry_after_s: float | None) -> None:
        self._judge(now, cls, retry_after_s)
        self.release()

    def release(self) -> None:
        """Give the slot back with no (further) verdict: the response was relayed, or the
        attempt was cancelled (a lost hedge, a client that left)."""
        if self._held:
            self._held = False
            self.health.leave(self)

    def _judge(
        self, now: float, cls: FailureClass | None, retry_after_s: float | None = None
    ) -> None:
        if self._judged or not self._held:
            return
        self._judged = True
        if cls is None:
            self.health.succeeded(now)
        else:
            self.health.failed(now, cls, retry_after_s)


class HealthRegistry:
    """One TargetHealth per target label (provider/model), created on first use."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._targets: dict[str, TargetHealth] = {}
        #: Entries left out of all() and snapshot(): see get().
        self._unlisted: dict[str, TargetHealth] = {}
        self._turns: collections.Counter[str] = collections.Counter()
        self.clock = clock

    def next_turn(self, alias: str) -> int:
        """A per-alias counter for round robin."""
        turn = self._turns[alias]
        self._turns[alias] = turn + 1
        return turn

    def get(self, label: str, circuit: CircuitConfig, listed: bool = True) -> TargetHealth:
        """`listed=False` is for pass-through traffic: no circuit ever judges it, so it
        stays out of what reports circuits (all(): the spangate.circuit.* metrics;
        snapshot(): /spangate/status), where it would show as a circuit forever closed.
        Kept apart, it never shares state with an alias target whose label is the same
        (a provider named `a/b` and target a/b)."""
        # Whichever alias comes first creates the entry; that is no race because every
        # alias naming a target has the same circuit (runtime._check_shared_circuits).
        targets = self._targets if listed else self._unlisted
        health = targets.get(label)
        if health is None:
            health = targets[label] = TargetHealth(label, circuit)
        return health

    def all(self) -> list[TargetHealth]:
        return list(self._targets.values())

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {label: h.snapshot(now) for label, h in sorted(self._targets.items())}
