"""What each principal may ask of the server: calls per second (a token bucket with a burst),
calls in flight at once, and bytes per request message. Limits are set per principal in the auth
file (`limits:`, `service.api.auth`); a key left out takes its role's default below.

Enterprises are many and their tokens are the least guarded, so they are limited by default:
every lookup they make is a decision recorded in the ledger, and the rate bounds how fast one
token can grow it. The bureau's own principals are unlimited in rate unless their entry says
otherwise; every principal is bounded in flight, so no caller can hold the whole server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

from service.config import MAX_MESSAGE_BYTES
from service.errors import LimitExceededError


@dataclass(frozen=True)
class Limits:
    calls_per_second: float | None = None  # the steady rate; None: not rate-limited
    burst: int = 1  # calls admitted at once above the steady rate (the bucket's size)
    max_in_flight: int = 64  # calls of the principal open at once, streams and watchers included
    max_request_bytes: int = MAX_MESSAGE_BYTES  # one request message, before it is parsed

    def check(self, where: str) -> None:
        """ValueError naming the key of a limit that cannot work."""
        rate = self.calls_per_second
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0):
            raise ValueError(f"{where}: `calls_per_second` must be a positive number")
        for name in ("burst", "max_in_flight", "max_request_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: `{name}` must be a positive whole number")
        if self.max_request_bytes > MAX_MESSAGE_BYTES:
            raise ValueError(f"{where}: `max_request_bytes` may not exceed the server's {MAX_MESSAGE_BYTES}")


LIMIT_KEYS = tuple(f.name for f in fields(Limits))
ROLE_LIMITS: Mapping[str, Limits] = {
    "enterprise": Limits(calls_per_second=5.0, burst=20, max_in_flight=8, max_request_bytes=16 * 1024),
}


def limits_for(role: str, overrides: Mapping[str, object], where: str) -> Limits:
    """The role's default limits with the auth file's `overrides`; ValueError names a bad key."""
    unknown = set(overrides) - set(LIMIT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown limit {sorted(unknown)[0]!r} (known: {', '.join(LIMIT_KEYS)})")
    limits = replace(ROLE_LIMITS.get(role, Limits()), **overrides)  # type: ignore[arg-type]
    limits.check(where)
    if limits.calls_per_second is not None:  # YAML's 5 is an int; the bucket counts in floats
        limits = replace(limits, calls_per_second=float(limits.calls_per_second))
    return limits


@dataclass
class _Bucket:
    tokens: float
    at: float  # monotonic time of `tokens`


class Admission:
    """The running account of each principal's calls: its rate bucket and its calls in flight.
    Keyed by principal name, so a principal's limits hold across its connections."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # calls arrive on the event loop, releases may come from elsewhere
        self._buckets: dict[str, _Bucket] = {}
        self._in_flight: dict[str, int] = {}

    def take(self, name: str, limits: Limits) -> None:
        """Count one call against the principal's rate; LimitExceededError (with when to retry) if
        its bucket is empty."""
        rate = limits.calls_per_second
        if rate is None:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(name, _Bucket(float(limits.burst), now))
            bucket.tokens = min(float(limits.burst), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / rate
        raise LimitExceededError(
            f"more than {rate:g} calls per second (burst {limits.burst}); retry in {wait:.2f} s", retry_after=wait
        )

    def enter(self, name: str, limits: Limits) -> None:
        """One more call of the principal in flight; LimitExceededError if it has its maximum open."""
        with self._lock:
            open_calls = self._in_flight.get(name, 0)
            if open_calls >= limits.max_in_flight:
                raise LimitExceededError(
                    f"{open_calls} calls of this principal are open, its maximum; retry when one has ended",
                    retry_after=1.0,
                )
            self._in_flight[name] = open_calls + 1

    def leave(self, name: str) -> None:
        with self._lock:
            left = self._in_flight[name] - 1
            if left:
                self._in_flight[name] = left
            else:
                del self._in_flight[name]

    def in_flight(self, name: str) -> int:
        with self._lock:
            return self._in_flight.get(name, 0)


def check_size(size: int, limits: Limits) -> None:
    """LimitExceededError if a request message of `size` bytes is more than the principal may send.
    No retry hint: the same message will never be admitted."""
    if size > limits.max_request_bytes:
        raise LimitExceededError(
            f"a request message of {size} bytes exceeds this principal's limit of {limits.max_request_bytes} bytes"
        )
