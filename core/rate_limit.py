"""Per-key rate limits (OWASP API4): a token bucket per API key in Redis, `rate` requests a second with
bursts of up to `burst`, set per store by the operator (tenants.models.Store; the deployment's defaults
otherwise, 0 for none).

Every call of a store-scoped view takes a token (tenants/authentication.py); the WSGI fast path takes it
in the same Redis round trip as its answer lookup and hands a request over the limit to Django, which
answers the 429. Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds
until the bucket is full again); a 429 adds `Retry-After`. With Redis off or down there is no limit: the
API keeps answering (a limit is a protection, not a reason to fail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.conf import settings

from core import answer_cache
from core.observability import REFUSED_BY_LIMIT

# where the fast path leaves the token it took, should it hand the request to Django (not charged twice)
ENVIRON_KEY = "recsys.rate_limit"


@dataclass(frozen=True)
class Bucket:
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    reset_seconds: int

    @classmethod
    def from_reply(cls, reply: list[int], burst: int) -> Bucket:
        allowed, remaining, retry_after_ms, reset_seconds = (int(value) for value in reply)
        return cls(bool(allowed), burst, max(0, remaining), retry_after_ms, max(0, reset_seconds))

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.retry_after_ms / 1000))

    def headers(self) -> list[tuple[str, str]]:
        headers = [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset_seconds)),
        ]
        if not self.allowed:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers


def limits(store: Any) -> tuple[int, int]:
    """(requests per second, burst) for the keys of `store`; a rate of 0 means no limit."""
    rate = store.rate_limit_per_second
    rate = settings.RATE_LIMIT_PER_SECOND if rate is None else rate
    burst = store.rate_limit_burst
    burst = settings.RATE_LIMIT_BURST if burst is None else burst
    return rate, max(burst, 1)


def bucket_key(api_key: Any) -> str:
    return answer_cache.namespaced(api_key.store, f"rl:{api_key.prefix}")  # in the store's slot


def bucket_args(api_key: Any) -> tuple[str, int, int] | None:
    """What the answer lookup takes to charge this key's bucket in its round trip; None: no limit."""
    rate, burst = limits(api_key.store)
    if rate <= 0:
        return None
    return bucket_key(api_key), rate, burst


def take(api_key: Any) -> Bucket | None:
    """A token of the key's bucket now; None when there is no limit (none set, or Redis unavailable)."""
    args = bucket_args(api_key)
    if args is None:
        return None
    reply = answer_cache.take_token(*args)
    return None if reply is None else Bucket.from_reply(reply, args[2])


def over_limit(bucket: Bucket) -> Exception:
    from core.errors import ApiError

    REFUSED_BY_LIMIT.labels("rate_limited").inc()
    return ApiError(
        "rate_limited",
        f"too many requests with this API key (at most {bucket.limit} at once); "
        f"retry in {bucket.retry_after} s",
        details={"retry_after": bucket.retry_after},
        status_code=429,
        headers=bucket.headers(),
    )


def quota(store: Any, name: str) -> int:
    """The store's limit `name` (max_products, max_events_per_day): its own, else the default; 0: none."""
    own = getattr(store, name)
    return int(getattr(settings, name.upper()) if own is None else own)


# where the fast path notes that it reserved the request's quota already (Django then reserves none)
QUOTA_ENVIRON_KEY = "recsys.quota_reserved"


def daily_quota_take(store: Any, name: str, amount: int, what: str) -> None:
    """Count `amount` against the store's daily quota `name`, or raise a 429 `quota_exceeded` (with the
    seconds to the next UTC day) when that would pass it. No quota set, or Redis unavailable: no check."""
    limit = quota(store, name)
    if limit <= 0 or amount <= 0:
        return
    now = datetime.now(tz=UTC)
    reserved = answer_cache.quota_reserve(store, name, now.date().isoformat(), amount, limit)
    if reserved is not None and not reserved[0]:
        raise quota_exceeded(name, limit, reserved[1], amount, what, now)


def ingest_gate(
    api_key: Any, amount: int, keys_generation: bytes
) -> tuple[Bucket | None, bool | None, bytes] | None:
    """For the fast path's ingestion, one round trip: the store's keys generation, and when it is still
    `keys_generation` (the one the key is remembered at) the key's token, then `amount` events of the
    store's daily quota. (the bucket or None without a limit, whether the quota was reserved: True,
    refused: False, not checked (none set, or the token refused): None; the keys generation: when it is not
    `keys_generation`, nothing was taken or reserved). None: Redis unavailable."""
    store = api_key.store
    args = bucket_args(api_key)
    limit = quota(store, "max_events_per_day")
    day = datetime.now(tz=UTC).date().isoformat()
    answered = answer_cache.gate(args, store, "max_events_per_day", day, amount, limit, keys_generation)
    if answered is None:
        return None
    taken, reserved = answered.bucket, answered.reserved
    bucket = None if taken is None or args is None else Bucket.from_reply(taken, args[2])
    return bucket, (None if reserved is None else reserved[0]), answered.keys_generation


def quota_exceeded(name: str, limit: int, used: int, amount: int, what: str, now: datetime) -> Exception:
    from core.errors import ApiError

    REFUSED_BY_LIMIT.labels(name).inc()
    tomorrow = datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=UTC)
    retry_after = max(1, math.ceil((tomorrow - now).total_seconds()))
    return ApiError(
        "quota_exceeded",
        f"this store may send {limit} {what} a day (UTC); {used} were sent today, and this request "
        f"has {amount}",
        details={"quota": name, "limit": limit, "used": used, "retry_after": retry_after},
        status_code=429,
        headers=[("Retry-After", str(retry_after))],
    )
