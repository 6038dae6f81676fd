"""Fixed-window rate limits kept in Redis, shared by every API process."""

from __future__ import annotations

import time

from nodes.registry import redis_client


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


# Holders are members of a sorted set scored by lease expiry: leases of a process that died
# without releasing them lapse instead of holding a slot forever.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) == false
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def take_slot(name: str, holder: str, limit: int, lease_s: int) -> None:
    """Leases one of ``limit`` concurrent slots to ``holder`` (again: renews its lease);
    raises SlotsTaken when every slot is held."""
    if limit <= 0:
        return
    now = time.time()
    taken = redis_client().eval(
        _TAKE_SLOT,
        1,
        f"scaiecho:slots:{name}",
        now,
        now + lease_s,
        limit,
        holder,
        lease_s,
    )
    if not int(taken):
        raise SlotsTaken(limit)


def release_slot(name: str, holder: str) -> None:
    redis_client().zrem(f"scaiecho:slots:{name}", holder)
