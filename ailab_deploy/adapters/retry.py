"""The one way the tool waits: retry an attempt that failed transiently, or poll until ready.

Both take the clock and the sleep as arguments, so tests run without real waits. What counts
as transient is the caller's decision (``retryable``): a write whose outcome is unknown must
never be classified so.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Backoff:
    """Exponential delays with jitter (which keeps parallel workers apart)."""

    attempts: int = 6  # the first try included
    first_delay: float = 0.5
    max_delay: float = 8.0
    factor: float = 2.0
    jitter: float = 0.2

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay * random.uniform(1 - self.jitter, 1 + self.jitter)
            delay = min(delay * self.factor, self.max_delay)


def linear_delays(step: float, attempts: int, jitter: float = 0.2) -> Iterator[float]:
    """``step``, ``2*step``, ... with jitter: the waits between ``attempts`` tries."""
    for attempt in range(1, attempts):
        yield step * attempt * random.uniform(1 - jitter, 1 + jitter)


def retry(
    attempt: Callable[[int], T],
    *,
    delays: Iterable[float],
    retryable: Callable[[Exception], bool],
    sleep: Sleep,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """``attempt(1)``, then again after each delay while it raises a ``retryable`` error.

    A permanent error, or a transient one once the delays are used up, is raised as is."""
    waits = iter(delays)
    number = 1
    while True:
        try:
            return attempt(number)
        except Exception as error:
            if not retryable(error):
                raise
            delay = next(waits, None)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(error, delay)
        sleep(delay)
        number += 1


def poll(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float | Callable[[float], float],
    on_timeout: Callable[[], Exception],
    clock: Clock,
    sleep: Sleep,
) -> T:
    """Call ``check`` until it returns something other than None; ``on_timeout()`` is raised
    once ``timeout`` seconds have passed. ``interval`` is seconds, or a function of the previous
    interval (0 before the first wait) for growing pauses; no pause runs past the deadline."""
    deadline = clock() + timeout
    pause = 0.0
    while True:
        result = check()
        if result is not None:
            return result
        remaining = deadline - clock()
        if remaining <= 0:
            raise on_timeout()
        pause = interval(pause) if callable(interval) else interval
        sleep(min(pause, remaining))
