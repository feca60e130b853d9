"""Token-bucket rate limits, in-process or shared through Redis.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a request takes
one token or is refused with the time until one is available (``Retry-After``). The Redis limiter
runs the same arithmetic atomically in a Lua script with the server's clock, so several gateway
replicas share one bucket per key and per IP.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # seconds until the bucket is full again
    retry_after_s: float  # seconds until one token is available (0 when allowed)

    def headers(self, scope: str) -> dict[str, str]:
        """OpenAI-style ``x-ratelimit-*`` headers for ``scope`` ('requests' or 'ip-requests')."""
        return {
            f"x-ratelimit-limit-{scope}": str(self.limit),
            f"x-ratelimit-remaining-{scope}": str(self.remaining),
            f"x-ratelimit-reset-{scope}": f"{self.reset_s:.3f}s",
        }


class RateLimiter(Protocol):
    def acquire(self, bucket: str, rate: float, burst: int) -> Verdict: ...

    def close(self) -> None: ...


def _verdict(tokens: float, allowed: bool, rate: float, burst: int) -> Verdict:
    remaining = max(0, math.floor(tokens))
    reset = (burst - tokens) / rate if tokens < burst else 0.0
    retry = 0.0 if allowed else max(0.001, (1.0 - tokens) / rate)
    return Verdict(allowed=allowed, limit=burst, remaining=remaining, reset_s=max(0.0, reset), retry_after_s=retry)


class MemoryRateLimiter:
    """Buckets in a dict, guarded by a lock (one process)."""

    def __init__(self, max_buckets: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._max = max_buckets

    def acquire(self, bucket: str, rate: float, burst: int) -> Verdict:
        now = self._clock()
        with self._lock:
            tokens, ts = self._buckets.get(bucket, (float(burst), now))
            tokens = min(float(burst), tokens + (now - ts) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            if len(self._buckets) >= self._max and bucket not in self._buckets:
                self._evict(now, rate)
            self._buckets[bucket] = (tokens, now)
        return _verdict(tokens, allowed, rate, burst)

    def _evict(self, now: float, rate: float) -> None:
        # drop buckets that would be full by now (they carry no state)
        stale = [k for k, (_, ts) in self._buckets.items() if now - ts > 3600]
        for k in stale or list(self._buckets)[: len(self._buckets) // 10]:
            del self._buckets[k]

    def close(self) -> None:
        pass


_LUA = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Buckets in Redis hashes (``<prefix>:<bucket>``), updated by one atomic Lua script."""

    def __init__(self, url: str, prefix: str = "t2iguard:rl") -> None:
        import redis

        self._client: Any = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self._client.register_script(_LUA)
        self.prefix = prefix

    def ping(self) -> None:
        self._client.ping()

    def acquire(self, bucket: str, rate: float, burst: int) -> Verdict:
        allowed, tokens = self._script(keys=[f"{self.prefix}:{bucket}"], args=[rate, burst])
        return _verdict(float(tokens), bool(int(allowed)), rate, burst)

    def close(self) -> None:
        self._client.close()


def make_rate_limiter(redis_url: str | None) -> MemoryRateLimiter | RedisRateLimiter:
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()
