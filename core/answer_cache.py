"""A shared cache (Redis) of rendered recommendation answers, with explicit invalidation.

Generations, not deletes: every key of a cached answer holds the store's generation and, for answers about
a shopper, that shopper's generation. A write that can change an answer bumps a counter, so an old answer
is never read again and simply expires:

- the store's generation: catalog writes, settings, model activation;
- a shopper's generation: their new events, and aliases linked to them (every id of the profile is
  bumped, since any of them may be asked about);
- the keys generation (one for all stores): API keys created, changed or revoked, stores changed. Serving
  processes keep recently seen keys in memory and trust them only while this generation is unchanged.

One Redis round trip reads the generations and the answer together (a Lua script), so a cached answer costs
no SQL. A cache that is down or turned off (ANSWER_CACHE_URL="") is a miss: answers are computed as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)
TTL_SECONDS = 300  # since the answer was last read (the generations keep it right, not the TTL)
GENERATION_TTL_SECONDS = 86_400  # of a shopper's generation, since it was last bumped or read
KEYS_GENERATION = "rc:keys:gen"

_client: redis.Redis | None = None
_fetch: Any = None
_bump: Any = None

# A shopper's generation lives while it is bumped or read, far longer than any answer read under it, so it
# never restarts from 0 while an answer of an earlier 0 could still be read. An answer read again lives
# on (ARGV[3] seconds from now; 0 for answers that must age out with the clock).
_FETCH_SCRIPT = """
local store_gen = redis.call('GET', KEYS[1]) or '0'
local shopper_gen = redis.call('GET', KEYS[2])
if shopper_gen then
  redis.call('EXPIRE', KEYS[2], ARGV[4])
else
  shopper_gen = '0'
end
local keys_gen = redis.call('GET', KEYS[3]) or '0'
local key = ARGV[1] .. ':' .. store_gen .. ':' .. shopper_gen .. ':' .. ARGV[2]
local body = redis.call('GET', key)
if body and tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', key, ARGV[3])
end
return {keys_gen, store_gen, key, body}
"""

# Every shopper of an ingest batch in one command: a pipeline of INCR and EXPIRE per shopper costs the
# client ~50 µs of CPU a command, which made invalidation most of an ingest request's time.
_BUMP_SCRIPT = """
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""


def _redis() -> redis.Redis | None:
    global _client, _fetch, _bump
    if not settings.ANSWER_CACHE_URL:
        return None
    if _client is None:
        _client = redis.Redis.from_url(
            settings.ANSWER_CACHE_URL, socket_timeout=0.2, socket_connect_timeout=0.2
        )
        _fetch = _client.register_script(_FETCH_SCRIPT)
        _bump = _client.register_script(_BUMP_SCRIPT)
    return _client


def enabled() -> bool:
    return _redis() is not None


def _namespace(store: Any) -> str:
    # the creation time keeps stores of different databases (and re-created test databases) apart
    return f"rc:{store.id}.{int(store.created_at.timestamp() * 1_000_000)}"


def _shopper_key(store: Any, user_id: str | None) -> str:
    if user_id is None:
        return f"{_namespace(store)}:u:-"  # never bumped: answers that are about no one
    digest = hashlib.sha1(user_id.encode(), usedforsecurity=False).hexdigest()[:20]
    return f"{_namespace(store)}:u:{digest}"


def changed(bump: Callable[..., None], *args: Any) -> None:
    """Bump now, so that what this transaction computes from here on is not mistaken for the old state,
    and again once the transaction commits, so that answers computed meanwhile from the old state (by
    other requests) are not read again."""
    bump(*args)
    transaction.on_commit(lambda: bump(*args))


def store_changed(store: Any) -> None:
    """Every cached answer of the store is stale from now on."""
    client = _redis()
    if client is None:
        return
    try:
        client.incr(f"{_namespace(store)}:gen")
    except redis.RedisError:
        logger.warning("answer cache unreachable; could not invalidate store %s", store.id)


def shoppers_changed(store: Any, user_ids: Iterable[str]) -> None:
    """Cached answers about these shoppers (any id of their profiles) are stale from now on."""
    client = _redis()
    ids = set(user_ids)
    if client is None or not ids:
        return
    try:
        _bump(keys=[_shopper_key(store, user_id) for user_id in ids], args=[GENERATION_TTL_SECONDS])
    except redis.RedisError:
        logger.warning("answer cache unreachable; could not invalidate %d shoppers of %s", len(ids), store.id)


def keys_changed() -> None:
    """API keys or stores changed: processes must look keys up again before trusting them."""
    client = _redis()
    if client is None:
        return
    try:
        client.incr(KEYS_GENERATION)
    except redis.RedisError:
        logger.warning("answer cache unreachable; could not bump the keys generation")


def keys_generation() -> bytes | None:
    """The current keys generation; None when the cache is off or down (then nothing is trusted)."""
    client = _redis()
    if client is None:
        return None
    try:
        return client.get(KEYS_GENERATION) or b"0"
    except redis.RedisError:
        return None


@dataclass(frozen=True)
class Lookup:
    keys_generation: bytes | None
    store_generation: bytes | None
    key: str | None  # where this request's answer lives for the generations read
    body: bytes | None  # the cached answer, rendered


MISS = Lookup(None, None, None, None)

# (store id, its generation) as read at the start of this request: what a process remembers about the
# store (its active model) holds while the generation is the same
request_generation: ContextVar[tuple[int, bytes] | None] = ContextVar("request_generation", default=None)


_local = threading.local()


def _connection(client: redis.Redis) -> Any:
    """This thread's own connection, kept open: lookups and stores are on every cached request, and the
    pool's checkout and retry machinery cost as much CPU as the round trip itself."""
    connection = getattr(_local, "connection", None)
    if connection is None or _local.client is not client:
        connection = client.connection_pool.make_connection()
        _local.client, _local.connection = client, connection
    return connection


def _command(client: redis.Redis, *args: Any) -> Any:
    connection = _connection(client)
    try:
        connection.send_command(*args)
        return connection.read_response()
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()  # reconnects on the next command (an error reply leaves it usable)
        raise


def _evalsha(client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
    """The fetch script, by its digest; loaded again when Redis lost it (a restart or a flush)."""
    try:
        return _command(client, "EVALSHA", _fetch.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return _fetch(keys=keys, args=args, client=client)


def request_key(meta: dict[str, Any]) -> str:
    """What names a request's answer within its store (and shopper): its path and query string as sent.
    Computed from the WSGI environ (Django's `request.META`), the same on the fast path and the full one."""
    return f"{meta.get('PATH_INFO', '')}?{meta.get('QUERY_STRING', '')}"


def lookup(store: Any, request_key: str, *, user_id: str | None = None, slide: int = TTL_SECONDS) -> Lookup:
    """One round trip: the generations, the key they give this request, and the answer if cached (which
    then lives `slide` more seconds; 0 leaves its expiry as it was)."""
    client = _redis()
    if client is None:
        return MISS
    digest = hashlib.sha1(request_key.encode(), usedforsecurity=False).hexdigest()
    try:
        keys_gen, store_gen, key, body = _evalsha(
            client,
            keys=[f"{_namespace(store)}:gen", _shopper_key(store, user_id), KEYS_GENERATION],
            args=[_namespace(store), digest, slide, GENERATION_TTL_SECONDS],
        )
    except (redis.RedisError, OSError):
        return MISS
    return Lookup(keys_gen, store_gen, key.decode() if isinstance(key, bytes) else key, body)


def put(key: str | None, body: bytes, *, ttl: int = TTL_SECONDS) -> None:
    client = _redis()
    if client is None or key is None:
        return
    with contextlib.suppress(redis.RedisError, OSError):  # a cache that is down only costs speed
        _command(client, "SET", key, body, "EX", ttl)


_ID_PREFIX = b'{"recommendation_id":"'


def with_fresh_recommendation_id(body: bytes) -> bytes:
    """Every answer served carries its own recommendation_id, cached or not (it is the first field)."""
    if body.startswith(_ID_PREFIX) and body[len(_ID_PREFIX) + 32 : len(_ID_PREFIX) + 33] == b'"':
        return _ID_PREFIX + uuid.uuid4().hex.encode() + body[len(_ID_PREFIX) + 32 :]
    return body
