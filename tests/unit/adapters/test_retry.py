"""The one retry/poll helper: permanent errors stop at once, waits use the injected clock and sleep."""

from __future__ import annotations

import pytest

from ailab_deploy.adapters.retry import Backoff, linear_delays, poll, retry


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


def test_retry_tries_again_after_transient_errors_then_returns() -> None:
    fake = FakeTime()
    outcomes: list[Exception | str] = [Transient(), Transient(), "done"]
    seen: list[int] = []

    def attempt(number: int) -> str:
        seen.append(number)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = retry(
        attempt, delays=[1.0, 2.0, 4.0], retryable=lambda e: isinstance(e, Transient), sleep=fake.sleep
    )
    assert result == "done"
    assert seen == [1, 2, 3]
    assert fake.sleeps == [1.0, 2.0]


def test_retry_raises_a_permanent_error_at_once() -> None:
    fake = FakeTime()
    calls = []

    def attempt(number: int) -> None:
        calls.append(number)
        raise Permanent("no")

    with pytest.raises(Permanent):
        retry(attempt, delays=[1.0, 1.0], retryable=lambda e: isinstance(e, Transient), sleep=fake.sleep)
    assert calls == [1] and fake.sleeps == []


def test_retry_gives_up_when_the_delays_are_used_up() -> None:
    fake = FakeTime()
    calls = []
    retried: list[float] = []

    def attempt(number: int) -> None:
        calls.append(number)
        raise Transient(f"try {number}")

    with pytest.raises(Transient, match="try 3"):
        retry(
            attempt,
            delays=[0.5, 0.5],
            retryable=lambda e: isinstance(e, Transient),
            sleep=fake.sleep,
            on_retry=lambda _error, delay: retried.append(delay),
        )
    assert calls == [1, 2, 3] and retried == [0.5, 0.5] and fake.sleeps == [0.5, 0.5]


def test_backoff_doubles_up_to_its_cap_with_bounded_jitter() -> None:
    delays = list(Backoff(attempts=6, first_delay=1.0, max_delay=4.0, jitter=0.2).delays())
    assert len(delays) == 5
    for delay, base in zip(delays, [1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert base * 0.8 <= delay <= base * 1.2


def test_linear_delays_grow_by_the_step() -> None:
    delays = list(linear_delays(2.0, attempts=4, jitter=0.0))
    assert delays == [2.0, 4.0, 6.0]


def test_poll_returns_the_first_answer_and_sleeps_between_checks() -> None:
    fake = FakeTime()
    answers = [None, None, "ready"]
    result = poll(
        lambda: answers.pop(0),
        timeout=10,
        interval=1.5,
        on_timeout=lambda: TimeoutError("late"),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert result == "ready" and fake.sleeps == [1.5, 1.5]


def test_poll_times_out_on_the_injected_clock_without_sleeping_past_the_deadline() -> None:
    fake = FakeTime()
    checks = []

    def never() -> None:
        checks.append(fake.now)

    with pytest.raises(TimeoutError, match="late"):
        poll(
            never,
            timeout=5,
            interval=2.0,
            on_timeout=lambda: TimeoutError("late"),
            clock=fake.clock,
            sleep=fake.sleep,
        )
    assert fake.sleeps == [2.0, 2.0, 1.0]  # the last pause ends at the deadline
    assert checks == [100.0, 102.0, 104.0, 105.0]


def test_poll_grows_its_interval_when_given_a_function() -> None:
    fake = FakeTime()
    answers = [None, None, None, True]
    poll(
        lambda: answers.pop(0),
        timeout=60,
        interval=lambda previous: min(previous * 2, 3.0) if previous else 1.0,
        on_timeout=lambda: TimeoutError("late"),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert fake.sleeps == [1.0, 2.0, 3.0]


def test_wait_for_port_times_out_on_the_injected_clock() -> None:
    """A closed loopback port: the error names the host and the wait took no real time."""
    import socket

    from ailab_deploy.adapters.known_hosts import wait_for_port
    from ailab_deploy.errors import AilabError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connects are refused
        fake = FakeTime()
        with pytest.raises(AilabError, match=f"127.0.0.1:{port} did not answer within 3 s"):
            wait_for_port("127.0.0.1", port, 3, what="vm", clock=fake.clock, sleep=fake.sleep)
    assert fake.sleeps == [1.0, 1.0, 1.0]
