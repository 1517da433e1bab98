"""The circuit breaker state machine, driven with an explicit clock (no sleeping)."""

from __future__ import annotations

from proxy.config import CircuitConfig
from proxy.health import (
    MAX_PROVIDER_COOLDOWN_S,
    HealthRegistry,
    Slot,
    TargetHealth,
    cooldown_for,
)

CIRCUIT = CircuitConfig(consecutive_failures=3, error_rate=0.5, window_s=10, min_requests=4,
                        cooldown_s=5)  # fmt: skip


def fail(
    health: TargetHealth, now: float, cls: str = "transient", retry_after: float | None = None
) -> None:
    health.start().failed(now, cls, retry_after)  # type: ignore[arg-type]


def succeed(health: TargetHealth, now: float) -> Slot:
    """A committed attempt: its slot stays held until released (end of relay)."""
    slot = health.start()
    slot.succeeded(now, 0.05)
    return slot


def test_opens_after_consecutive_failures_and_skips() -> None:
    """N consecutive failures open the circuit; an open target is not available."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(3):
        assert health.available(float(t))
        fail(health, float(t))
    assert health.state == "open"
    assert not health.available(3.0)


def test_half_open_admits_one_probe_then_closes_on_success() -> None:
    """After the cooldown exactly one probe is admitted; its success closes the circuit."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(3):
        fail(health, float(t))
    assert health.available(2 + 5.0)
    assert health.state == "half_open"
    probe = health.start()
    assert not health.available(7.1), "a second request must wait for the probe"
    probe.succeeded(7.2, 0.05)
    state: str = health.state
    assert state == "closed"
    assert health.available(7.3)


def test_failed_probe_reopens_for_another_cooldown() -> None:
    """A failing probe sends the circuit back to open."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(3):
        fail(health, float(t))
    assert health.available(8.0)
    fail(health, 8.0)
    assert health.state == "open"
    assert not health.available(12.0)
    assert health.available(13.0)


def test_error_rate_over_the_window_opens() -> None:
    """Alternating failures never reach N in a row, but the error rate opens the circuit."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(6):
        (fail if t % 2 else succeed)(health, float(t))
    fail(health, 6.0)
    assert health.state == "open"


def test_caller_faults_never_count_against_the_target() -> None:
    """A bad request is the caller's fault: the target stays closed."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(10):
        fail(health, float(t), cls="caller_fault")
    assert health.state == "closed"


def test_retry_after_lengthens_the_cooldown() -> None:
    """The cooldown is at least the provider's Retry-After."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(3):
        fail(health, float(t), cls="rate_limited", retry_after=30.0)
    assert not health.available(2 + 5.0 + 1)
    assert health.available(2 + 30.0)


def test_a_huge_retry_after_lengthens_the_cooldown_only_up_to_the_cap() -> None:
    """Retry-After 1e12 s opens the circuit for MAX_PROVIDER_COOLDOWN_S, not for ever: the
    target is offered a half-open probe once the cap has passed."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(3):
        fail(health, float(t), cls="rate_limited", retry_after=1e12)
    assert not health.available(2 + MAX_PROVIDER_COOLDOWN_S - 1)
    assert health.available(2 + MAX_PROVIDER_COOLDOWN_S)
    assert health.state == "half_open"


def test_a_configured_cooldown_longer_than_the_cap_is_kept() -> None:
    """The cap limits what a provider imposes, never the operator's own cooldown_s."""
    long = CircuitConfig(consecutive_failures=1, cooldown_s=MAX_PROVIDER_COOLDOWN_S * 2)
    assert cooldown_for(long.cooldown_s, 1e12) == MAX_PROVIDER_COOLDOWN_S * 2
    assert cooldown_for(5.0, None) == 5.0
    assert cooldown_for(5.0, 60.0) == 60.0
    assert cooldown_for(5.0, 1.0) == 5.0


def test_committed_attempts_stay_in_flight_until_released() -> None:
    """A stream that committed still counts for least_inflight / max_inflight until relayed."""
    health = TargetHealth("p/m", CIRCUIT)
    slot = succeed(health, 1.0)
    assert health.inflight == 1
    slot.release()
    assert health.inflight == 0
    slot.release()
    assert health.inflight == 0, "a slot given back twice counts once"
    fail(health, 2.0)
    assert health.inflight == 0


def test_transitions_and_snapshot_report_state() -> None:
    """Transitions are counted by state entered; the snapshot is JSON-ready."""
    health = TargetHealth("p/m", CIRCUIT)
    for t in range(3):
        fail(health, float(t))
    health.available(8.0)
    succeed(health, 8.1)
    assert dict(health.transitions) == {"open": 1, "half_open": 1, "closed": 1}
    snap = health.snapshot(9.0)
    assert snap["state"] == "closed"
    assert snap["recent_errors"][0]["class"] == "transient"


def open_circuit(health: TargetHealth) -> None:
    for t in range(3):
        fail(health, float(t))


def test_a_claim_reserves_the_half_open_probe_at_once() -> None:
    """After the cooldown the first claim is the probe; further claims get nothing until
    it ends, with no start() in between (concurrent requests choose before any attempt
    runs)."""
    health = TargetHealth("p/m", CIRCUIT)
    open_circuit(health)
    probe = health.claim(7.0)
    assert probe is not None
    assert probe.is_probe
    assert [health.claim(7.0 + i / 10) for i in range(5)] == [None] * 5
    probe.release()
    assert health.claim(7.6) is not None, "a probe given back lets the next request probe"


def test_only_the_probe_ending_frees_the_probe() -> None:
    """An attempt from before the circuit opened, ending without a verdict (cancelled) or
    with one that does not count (a caller fault), leaves the probe reservation alone."""
    health = TargetHealth("p/m", CIRCUIT)
    old_cancelled, old_caller_fault = health.start(), health.start()
    open_circuit(health)
    probe = health.claim(7.0)
    assert probe is not None
    old_cancelled.release()
    old_caller_fault.failed(7.1, "caller_fault", None)
    assert health.claim(7.2) is None, "a second probe was admitted"
    probe.failed(7.3, "caller_fault", None)  # the probe itself ended: the next may probe
    assert health.state == "half_open"
    assert health.claim(7.4) is not None


def test_a_failed_probe_frees_the_next_half_open_period() -> None:
    """A probe that fails re-opens the circuit and, once the next cooldown passes, the next
    claim is a probe again."""
    health = TargetHealth("p/m", CIRCUIT)
    open_circuit(health)
    probe = health.claim(7.0)
    assert probe is not None
    probe.failed(7.1, "transient", None)
    assert health.state == "open"
    assert health.claim(12.0) is None
    again = health.claim(12.1)
    assert again is not None
    assert again.is_probe


def test_a_committed_stream_is_judged_when_it_ends() -> None:
    """committed() gives no verdict: streams that break after content (failed at the end
    of the relay) reach consecutive_failures though each had committed; one that
    completes is a success; one the client abandons (release) counts for nothing."""
    health = TargetHealth("p/m", CIRCUIT)
    abandoned = health.start()
    abandoned.committed(0.5, 0.05)
    abandoned.release()
    assert (health.consecutive_failures, health.inflight) == (0, 0)
    for t in range(3):
        stream = health.start()
        stream.committed(float(t), 0.05)
        assert health.state == "closed"
        stream.failed(t + 0.5, "connection", None)
        stream.completed(t + 0.6)  # already judged: no second verdict
    assert health.state == "open"
    assert health.consecutive_failures == 3
    probe = health.claim(8.0)
    assert probe is not None
    probe.committed(8.1, 0.05)
    state: str = health.state  # a plain str: mypy narrowed it to "open" above
    assert state == "half_open", "a probe is judged when its answer is whole"
    probe.completed(9.0)
    assert (health.state, health.consecutive_failures, health.inflight) == ("closed", 0, 0)


def test_unlisted_entries_stay_out_of_what_reports_circuits() -> None:
    """Pass-through traffic's entry (listed=False) is kept, the same one on every call,
    but not in all() (the circuit metrics) nor snapshot() (/spangate/status); and it is
    never the alias target that happens to have its label (a provider named `a/b`)."""
    registry = HealthRegistry(clock=lambda: 0.0)
    target = registry.get("a/b", CIRCUIT)
    passthrough = registry.get("a/b", CircuitConfig(enabled=False), listed=False)
    assert passthrough is registry.get("a/b", CircuitConfig(enabled=False), listed=False)
    assert passthrough is not target
    assert registry.get("a/b", CIRCUIT).circuit == CIRCUIT
    assert registry.all() == [target]
    assert list(registry.snapshot()) == ["a/b"]
