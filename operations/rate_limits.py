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
