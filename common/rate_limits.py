"""Fixed-window rate limits kept in Redis, shared by every API process."""

from __future__ import annotations

import time

from common.redis_client import redis_client


class RateLimited(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"rate limited; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


def _window(name: str, window_s: int) -> tuple[str, int]:
    now = int(time.time())
    start = now - now % window_s
    return f"scaiecho:rate:{name}:{start}", start + window_s - now


def consume(name: str, limit: int, window_s: int) -> None:
    """Counts one use; raises RateLimited past ``limit`` uses in the current window."""
    if limit <= 0:
        return
    key, remaining = _window(name, window_s)
    client = redis_client()
    used = int(client.incr(key))
    if used == 1:
        client.expire(key, window_s)
    if used > limit:
        raise RateLimited(max(1, remaining))


def check(name: str, limit: int, window_s: int) -> None:
    """Raises RateLimited when ``name`` already used up the window (without counting)."""
    if limit <= 0:
        return
    key, remaining = _window(name, window_s)
    used = redis_client().get(key)
    if used is not None and int(used) >= limit:
        raise RateLimited(max(1, remaining))


class SlotsTaken(Exception):
    def __init__(self, limit: int):
        super().__init__(f"all {limit} slots are taken")
        self.limit = limit


# Holders are members of a sorted set scored by lease expiry, on Redis's clock (API hosts'
# clocks may differ): leases of a process that died without releasing them lapse.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""
_TAKE_SLOT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
# Only a slot still held is renewed: a renewal that arrives after the release, or after the
# lease lapsed, adds nothing.
_RENEW_SLOT = (
    _NOW
    + """
local expires = redis.call('ZSCORE', KEYS[1], ARGV[2])
if expires == false or tonumber(expires) < now then
    return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
)


def _slots(name: str) -> str:
    return f"scaiecho:slots:{name}"


def take_slot(name: str, holder: str, limit: int, lease_s: int) -> None:
    """Leases one of ``limit`` concurrent slots to ``holder``; raises SlotsTaken when every
    slot is held."""
    if limit <= 0:
        return
    if not int(redis_client().eval(_TAKE_SLOT, 1, _slots(name), limit, lease_s, holder)):
        raise SlotsTaken(limit)


def renew_slot(name: str, holder: str, lease_s: int) -> bool:
    """Extends ``holder``'s lease; False when it holds no slot (released, lapsed or lost)."""
    return bool(int(redis_client().eval(_RENEW_SLOT, 1, _slots(name), lease_s, holder)))


def release_slot(name: str, holder: str) -> None:
    redis_client().zrem(_slots(name), holder)
