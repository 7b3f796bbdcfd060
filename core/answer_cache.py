"""A shared cache (Redis) of rendered recommendation answers, with explicit invalidation.

Generations, not deletes: every key of a cached answer holds the store's generation and, for answers about
a shopper, that shopper's generation. A write that can change an answer bumps a counter, so an old answer
is never read again and simply expires:

- the store's generation: catalog writes, settings, model activation;
- a shopper's generation: their new events, and aliases linked to them (every id of the profile is
  bumped, since any of them may be asked about);
- the store's keys generation: its API keys created, changed or revoked, the store or its settings changed.
  Serving processes keep recently seen keys in memory and trust them only while their store's keys
  generation is unchanged.

Redis Cluster: every key of a store carries the hash tag of its shard (`rc:{<store id mod SHARDS>}:...`),
so that each script's keys (the store's generations, the shopper's, the key's rate limit, the shard's
impressions stream) are in one slot; stores spread over SHARDS slots.

One Redis round trip reads the generations and the answer together (a Lua script), so a cached answer costs
no SQL. A cache that is down or turned off (ANSWER_CACHE_URL="") is a miss: answers are computed as usual.

The same module keeps each shopper's real-time profile: their latest events (across aliases and channels)
as a sorted set per id of the shopper, scored by time, so that a computed answer reads the history in the
same round trip instead of querying the events table. PostgreSQL stays the source of truth:

- ingestion appends an event, once it is committed, to the profile of every id of its shopper's profile
  that Redis holds (never creating one), in the same script that bumps their generations;
- a profile Redis lacks is rebuilt from the events table, and stored only if the shopper's generation did
  not move meanwhile (an event committed during the rebuild makes the rebuild throw its result away);
- members are the event's row id first, so a rebuild and an append of the same event are one member, and
  ties in time order by id as the SQL does;
- linking an alias drops the profiles of both shoppers (rebuilt on their next answer).

Redis that does not answer within 0.2 s is left alone for a few seconds (every caller then takes the
SQL path); profile appends and invalidations missed meanwhile are replayed, as drops, when it answers again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from hiredis import pack_command
from redis.cluster import RedisCluster
from redis.exceptions import AskError, MovedError

logger = logging.getLogger(__name__)
TTL_SECONDS = 300  # since the answer was last read (the generations keep it right, not the TTL)
GENERATION_TTL_SECONDS = 86_400  # of a shopper's generation, since it was last bumped or read
# Stores spread over this many hash tags (Redis Cluster slots); each shard has its own impressions stream.
# Fixed: changing it moves every key (a cache, so only a cold start).
SHARDS = 256
# _START: the store and keys generations that Redis lacks (a new store, or a Redis restarted without its
# data) start at the time in µs, not 0, so that no process takes what it remembered under an old
# generation (a catalog, an active model, a trusted key) for the current state.
PROFILE_EVENTS = 200  # a profile's latest events: what for-user reads of a history
PROFILE_TTL_SECONDS = 3600  # since the profile was rebuilt: bounds what a missed append can cost
UNREACHABLE_BACKOFF_SECONDS = 5.0

_client: Any = None  # redis.Redis, or RedisCluster (ANSWER_CACHE_CLUSTER)
_client_url = ""
_fetch: Any = None
_profile_store: Any = None
_append: Any = None
_held: Any = None
_advance: Any = None
_take: Any = None
_gate: Any = None
_unreachable_until = 0.0
# (store namespace, shopper id) whose profile appends or invalidations Redis missed: dropped on recovery;
# and stores (their namespaces) and the keys generation whose bumps it missed: bumped on recovery
_missed: set[tuple[str, str]] = set()
_missed_stores: set[str] = set()
_missed_keys: set[str] = set()  # namespaces of the stores whose keys generation Redis missed
_MISSED_LIMIT = 100_000

# A token bucket per API key (core/rate_limit.py): `rate` tokens a second, at most `burst`; a request
# takes one. Answers {allowed (1/0), tokens left (floor), ms until a token is there, s until full}.
_BUCKET_FUNCTION = """
local function take_token(key, rate, burst)
  local now = redis.call('TIME')
  local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
  local state = redis.call('HMGET', key, 't', 'v')
  local tokens = burst
  if state[1] and state[2] then
    tokens = math.min(burst, tonumber(state[2]) + math.max(0, t - tonumber(state[1])) * rate)
  end
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', key, 't', string.format('%.6f', t), 'v', string.format('%.6f', tokens))
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
  return {allowed, math.floor(tokens), math.max(0, math.ceil((1 - tokens) / rate * 1000)),
          math.ceil((burst - tokens) / rate)}
end
"""

# A generation Redis lacks (the store's, the keys') starts at the time in µs: see _START. An integer, for
# INCR.
_STARTED_FUNCTION = """
local function started(key)
  local now = redis.call('TIME')
  redis.call('SET', key, now[1] .. string.format('%06d', tonumber(now[2])), 'NX')
  return redis.call('GET', key)
end
"""

# A daily quota, and ingestion's gate in one round trip: the store's keys generation KEYS[3] (started as in
# _FETCH_SCRIPT; when it is not ARGV[6], the one the caller trusts its key at, nothing else is done), the
# key's token (as _TAKE_SCRIPT; ARGV[1] 0: no limit), then, when granted, ARGV[3] units of the day's quota
# KEYS[2] reserved unless that passes ARGV[4] (0: no quota); the count after (reserved), or -1 - the count
# now (refused)
_GATE_SCRIPT = (
    _BUCKET_FUNCTION
    + _STARTED_FUNCTION
    + """
local keys_gen = redis.call('GET', KEYS[3]) or started(KEYS[3])
if ARGV[6] ~= '' and ARGV[6] ~= keys_gen then
  return {{1, -1, 0, 0}, 0, keys_gen}
end
local bucket = {1, -1, 0, 0}
if tonumber(ARGV[1]) > 0 then
  bucket = take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
end
if bucket[1] == 0 or tonumber(ARGV[4]) <= 0 then
  return {bucket, 0, keys_gen}
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local wanted = tonumber(ARGV[3])
if used + wanted > tonumber(ARGV[4]) then
  return {bucket, -1 - used, keys_gen}
end
used = redis.call('INCRBY', KEYS[2], wanted)
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {bucket, used, keys_gen}
"""
)

_TAKE_SCRIPT = (
    _BUCKET_FUNCTION
    + """
return take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)

# A shopper's generation lives while it is bumped or read, far longer than any answer read under it, so it
# never restarts from 0 while an answer of an earlier 0 could still be read. An answer read again lives
# on (ARGV[3] seconds from now; 0 for answers that must age out with the clock).
_FETCH_SCRIPT = (
    _BUCKET_FUNCTION
    + _STARTED_FUNCTION
    + """
local store_gen = redis.call('GET', KEYS[1]) or started(KEYS[1])
local shopper_gen = redis.call('GET', KEYS[2])
if shopper_gen then
  redis.call('EXPIRE', KEYS[2], ARGV[4])
else
  shopper_gen = '0'
end
local keys_gen = redis.call('GET', KEYS[3]) or started(KEYS[3])
local key = ARGV[1] .. ':' .. store_gen .. ':' .. shopper_gen .. ':' .. ARGV[2]
local bucket = false
if tonumber(ARGV[8]) > 0 then  -- the key's rate limit, in the same round trip; over it, nothing is read
  bucket = take_token(KEYS[5], tonumber(ARGV[7]), tonumber(ARGV[8]))
  if bucket[1] == 0 then
    return {keys_gen, store_gen, key, false, shopper_gen, false, bucket}
  end
end
local body = redis.call('GET', key)
if body and tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', key, ARGV[3])
end
-- a cached answer's impression, appended here (the body never travels twice), unless the caller would
-- not serve it (the keys generation it trusts has moved)
if body and ARGV[9] ~= '' and (ARGV[14] == '' or ARGV[14] == keys_gen) then
  local now = redis.call('TIME')
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[13], '*', 'r', ARGV[9], 's', ARGV[10], 'f', ARGV[11],
             'u', ARGV[12], 't', now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000)),
             'b', body)
end
local profile = false
if not body and ARGV[5] == '1' then
  local members = redis.call('ZRANGE', KEYS[4], -tonumber(ARGV[6]), -1)
  if #members > 0 then
    profile = table.concat(members)  -- one string: the client parses one reply, not 200
  end
end
return {keys_gen, store_gen, key, body, shopper_gen, profile, bucket}
"""
)

# A profile rebuilt from SQL is kept only when the shopper's generation is still the one read before the
# query: an event committed meanwhile has bumped it (and found no profile to append to).
_PROFILE_STORE_SCRIPT = """
local shopper_gen = redis.call('GET', KEYS[1]) or '0'
if shopper_gen ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[2], '-inf', '')
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# After a batch commits: every id of each shopper's profile gets a new generation, and the profile (where
# Redis holds one) the batch's events, trimmed to the latest ones. KEYS are (generation, profile) pairs;
# ARGV[3..] tells each pair how many (score, member) pairs of ARGV follow for it.
_APPEND_SCRIPT = """
local at = 3
for i = 1, #KEYS, 2 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  local count = tonumber(ARGV[at])
  at = at + 1
  if count < 0 then
    redis.call('DEL', KEYS[i + 1])
  elseif count > 0 and redis.call('EXISTS', KEYS[i + 1]) == 1 then
    for j = 0, count - 1 do
      redis.call('ZADD', KEYS[i + 1], ARGV[at + 2 * j], ARGV[at + 2 * j + 1])
    end
    redis.call('ZREMRANGEBYRANK', KEYS[i + 1], 0, -tonumber(ARGV[2]) - 1)
  end
  if count > 0 then
    at = at + 2 * count
  end
end
return #KEYS / 2
"""

# The first step of a large batch's append (profiles_extended): every id of each shopper's profile gets a
# new generation; answers the places (from 1) of the pairs whose profile Redis holds.
_HELD_SCRIPT = """
local held = {}
for i = 1, #KEYS, 2 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    held[#held + 1] = (i + 1) / 2
  end
end
return held
"""

# A store's or the keys' generation moves on; one that Redis lacks starts at the time in µs (see _START),
# as the lookup starts it, never at 1.
_ADVANCE_SCRIPT = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCR', key)
  else
    local now = redis.call('TIME')
    redis.call('SET', key, now[1] .. string.format('%06d', tonumber(now[2])))
  end
end
return #KEYS
"""


def _redis() -> redis.Redis | None:
    """The cache's client; None when it is off, or did not answer a moment ago (left alone for a few
    seconds, so that a hung Redis costs one short timeout, not one per request)."""
    global _client, _client_url, _fetch, _profile_store, _append, _held, _advance, _take, _gate
    global _unreachable_until
    if not settings.ANSWER_CACHE_URL:
        return None
    if _client is None or _client_url != settings.ANSWER_CACHE_URL:
        _client, _client_url, _unreachable_until = None, settings.ANSWER_CACHE_URL, 0.0
    if _unreachable_until and time.monotonic() < _unreachable_until:
        return None
    if _client is None:
        options = {"socket_timeout": 0.2, "socket_connect_timeout": 0.2}
        if settings.ANSWER_CACHE_CLUSTER:
            try:
                _client = RedisCluster.from_url(settings.ANSWER_CACHE_URL, **options)
            except (redis.RedisError, OSError) as error:
                _unreachable(error)
                return None
        else:
            _client = redis.Redis.from_url(settings.ANSWER_CACHE_URL, **options)
        _fetch = _client.register_script(_FETCH_SCRIPT)
        _profile_store = _client.register_script(_PROFILE_STORE_SCRIPT)
        _append = _client.register_script(_APPEND_SCRIPT)
        _held = _client.register_script(_HELD_SCRIPT)
        _advance = _client.register_script(_ADVANCE_SCRIPT)
        _take = _client.register_script(_TAKE_SCRIPT)
        _gate = _client.register_script(_GATE_SCRIPT)
    if _unreachable_until and (_missed or _missed_stores or _missed_keys):
        _replay_missed(_client)
    return _client


def _unreachable(error: BaseException) -> None:
    """Redis failed to answer: leave it alone for a while."""
    global _unreachable_until
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError):
        _unreachable_until = time.monotonic() + UNREACHABLE_BACKOFF_SECONDS
        logger.warning("answer cache unreachable (%s); serving without it for a few seconds", error)


def _replay_missed(client: redis.Redis) -> None:
    """What Redis missed while unreachable, replayed: the generations bumped, those shoppers' profiles
    dropped."""
    global _unreachable_until
    try:
        for namespace in list(_missed_stores):
            _advance(keys=[f"{namespace}:gen"], client=client)
            _missed_stores.discard(namespace)
        for namespace in list(_missed_keys):
            _advance(keys=[f"{namespace}:keys"], client=client)
            _missed_keys.discard(namespace)
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return
    pending = list(_missed)
    keys: list[str] = []
    for namespace, user_id in pending:
        keys += _shopper_keys_in(namespace, user_id)
    try:
        for start in range(0, len(keys), 2000):
            part = keys[start : start + 2000]
            _append(keys=part, args=[GENERATION_TTL_SECONDS, PROFILE_EVENTS] + [-1] * (len(part) // 2),
                    client=client)  # fmt: skip
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return
    _missed.difference_update(pending)
    _unreachable_until = 0.0


def _remember_missed(store: Any, user_ids: Iterable[str]) -> None:
    namespace = _namespace(store)
    for user_id in user_ids:
        if len(_missed) >= _MISSED_LIMIT:
            break
        _missed.add((namespace, user_id))


def enabled() -> bool:
    return _redis() is not None


def healthy() -> bool:
    """Whether the cache answers a PING now (off counts as healthy: nothing is missing)."""
    if not settings.ANSWER_CACHE_URL:
        return True
    client = _redis()
    if client is None:
        return False
    try:
        return bool(_command(client, "PING"))
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return False


def shard(store_id: int) -> int:
    return int(store_id) % SHARDS


def _namespace(store: Any) -> str:
    # the creation time keeps stores of different databases (and re-created test databases) apart; the
    # shard's hash tag keeps every key of the store in one Redis Cluster slot
    return f"rc:{{{shard(store.id)}}}:{store.id}.{int(store.created_at.timestamp() * 1_000_000)}"


def namespaced(store: Any, name: str) -> str:
    """A key of the store's own (in its slot), for other modules (a rate limit's bucket)."""
    return f"{_namespace(store)}:{name}"


def _shopper_key(store: Any, user_id: str | None) -> str:
    if user_id is None:
        return f"{_namespace(store)}:u:-"  # never bumped: answers that are about no one
    return _shopper_keys_in(_namespace(store), user_id)[0]


def _shopper_keys_in(namespace: str, user_id: str) -> list[str]:
    """[generation key, profile key] of a shopper (one digest for both)."""
    digest = hashlib.sha1(user_id.encode(), usedforsecurity=False).hexdigest()[:20]
    return [f"{namespace}:u:{digest}", f"{namespace}:p:{digest}"]


def changed(bump: Callable[..., None], *args: Any) -> None:
    """Bump now; inside a transaction also once it commits, so that answers computed meanwhile from the
    old state (by other requests) are not read again. Outside one, the change is committed already."""
    bump(*args)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: bump(*args))


def store_changed(store: Any) -> None:
    """Every cached answer of the store is stale from now on."""
    client = _redis()
    if client is None:
        if settings.ANSWER_CACHE_URL:
            _missed_stores.add(_namespace(store))
        return
    try:
        _advance(keys=[f"{_namespace(store)}:gen"], client=client)
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        _missed_stores.add(_namespace(store))
        logger.warning("answer cache unreachable; could not invalidate store %s", store.id)


ProfileEntry = tuple[int, bytes]  # (score: the event's time in µs, member: the packed event)


def _client_or_missed(store: Any, user_ids: Iterable[str]) -> Any:
    """The client for telling Redis these shoppers changed; None when it is off, or does not answer now
    (then their profiles are dropped once it answers again)."""
    client = _redis()
    if client is None and settings.ANSWER_CACHE_URL:
        _remember_missed(store, user_ids)
    return client


def _not_told(store: Any, user_ids: Collection[str], error: BaseException) -> None:
    """Redis failed while being told these shoppers changed: their profiles are dropped once it answers."""
    _unreachable(error)
    _remember_missed(store, user_ids)
    logger.warning("answer cache unreachable; %d shoppers of %s left to rebuild", len(user_ids), store.id)


def profiles_changed(store: Any, entries: Mapping[str, list[ProfileEntry] | None]) -> None:
    """After a commit: each shopper id's answers are stale, and its profile (where Redis holds one) gets
    these events; None drops the profile instead (an alias link merges two histories)."""
    if not entries:
        return
    client = _client_or_missed(store, entries)
    if client is None:
        return
    namespace = _namespace(store)
    keys: list[str] = []
    counts: list[Any] = []
    for user_id, events in entries.items():
        keys += _shopper_keys_in(namespace, user_id)
        if events is None:
            counts.append(-1)
            continue
        counts.append(len(events))
        for score, member in events:
            counts.append(repr(score))
            counts.append(member)
    try:
        _evalsha(client, keys, [GENERATION_TTL_SECONDS, PROFILE_EVENTS, *counts], _append)
    except (redis.RedisError, OSError) as error:
        _not_told(store, entries, error)


def profiles_extended(
    store: Any,
    user_ids: list[str],
    entries_of: Callable[[set[str]], Mapping[str, list[ProfileEntry]]],
) -> None:
    """After a commit of many shoppers' events (a large batch, an import): each shopper id's answers are
    stale, and the profiles Redis holds get these events, whose members `entries_of` builds for those
    shoppers alone. An import's shoppers seldom have a profile in Redis, and building and sending every
    event's member cost a batch of 1,000 events about 4 ms of the web process and 1 ms of Redis.

    Two steps: the generations move on and Redis says which profiles it holds, then those get the events
    (profiles_changed, which moves their generations on again: an answer computed between the steps from
    a profile without them is not read again). A profile rebuilt from SQL after the first step reads the
    committed events; one rebuilt from a snapshot before it is refused (its generation moved)."""
    if not user_ids:
        return
    client = _client_or_missed(store, user_ids)
    if client is None:
        return
    namespace = _namespace(store)
    keys: list[str] = []
    for user_id in user_ids:
        keys += _shopper_keys_in(namespace, user_id)
    try:
        held = _evalsha(client, keys, [GENERATION_TTL_SECONDS], _held)
    except (redis.RedisError, OSError) as error:
        _not_told(store, user_ids, error)
        return
    if held:
        profiles_changed(store, entries_of({user_ids[place - 1] for place in held}))


def profile_store(store: Any, user_id: str, generation: bytes, entries: list[ProfileEntry]) -> bool:
    """Keep a profile rebuilt from SQL, if the shopper's generation is still `generation`."""
    client = _redis()
    if client is None:
        return False
    namespace = _namespace(store)
    args: list[Any] = [generation, PROFILE_TTL_SECONDS]
    for score, member in entries:
        args += [repr(score), member]
    try:
        keys = _shopper_keys_in(namespace, user_id)
        return bool(_evalsha(client, keys, args, _profile_store))
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return False


def keys_changed(store: Any) -> None:
    """The store's API keys, the store or its settings changed: processes must look its keys up again
    before trusting them."""
    _keys_generation_move(store, lambda client, key: _advance(keys=[key], client=client))


def keys_forget(store: Any) -> None:
    """A store erased: its keys generation deleted (a later lookup starts one again, never equal to an
    earlier one)."""
    _keys_generation_move(store, lambda client, key: _command(client, "DEL", key))


def _keys_generation_move(store: Any, move: Callable[[Any, str], Any]) -> None:
    """Move the store's keys generation on; a Redis that does not answer gets a bump when it answers
    again."""
    client = _redis()
    if client is None:
        if settings.ANSWER_CACHE_URL:
            _missed_keys.add(_namespace(store))
        return
    try:
        move(client, f"{_namespace(store)}:keys")
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        _missed_keys.add(_namespace(store))
        logger.warning("answer cache unreachable; could not move the keys generation of %s", store.id)


def keys_generation(store: Any) -> bytes | None:
    """The store's keys generation now; None when the cache is off or down (then nothing is trusted)."""
    client = _redis()
    if client is None:
        return None
    key = f"{_namespace(store)}:keys"
    try:
        found = _command(client, "GET", key)
        if found is None:
            _command(client, "SET", key, time.time_ns() // 1000, "NX")
            found = _command(client, "GET", key)
        return found
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return None


@dataclass(frozen=True)
class Lookup:
    keys_generation: bytes | None
    store_generation: bytes | None
    key: str | None  # where this request's answer lives for the generations read
    body: bytes | None  # the cached answer, without its recommendation id
    shopper_generation: bytes | None = None
    profile: bytes | None = None  # the shopper's profile records, oldest first, joined; None: not held
    bucket: list[int] | None = None  # the rate limit's answer (take_token), when one was asked for
    recommendation_id: str | None = None  # the id the lookup gave a cached answer's impression (appended)


MISS = Lookup(None, None, None, None)


_local = threading.local()


def _connection(client: Any, key: str | bytes | None = None) -> Any:
    """This thread's own connection, kept open: lookups and stores are on every cached request, and the
    pool's checkout and retry machinery cost as much CPU as the round trip itself. On a Redis Cluster, one
    per node: the node that holds `key`'s slot (any node for a command without a key)."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key) if key is not None else client.get_default_node()
        connections = getattr(_local, "cluster_connections", None)
        if connections is None or getattr(_local, "cluster_client", None) is not client:
            connections = _local.cluster_connections = {}
            _local.cluster_client = client
        connection = connections.get(node.name)
        if connection is None:
            connection = connections[node.name] = node.redis_connection.connection_pool.make_connection()
        return connection
    connection = getattr(_local, "connection", None)
    if connection is None or _local.client is not client:
        connection = client.connection_pool.make_connection()
        _local.client, _local.connection = client, connection
    return connection


def _routing_key(args: tuple[Any, ...]) -> Any:
    """The key a command is routed by on a cluster: a script's first key, a read's first stream, else its
    first argument."""
    name = str(args[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return args[3] if int(args[2]) > 0 else None
    if name in ("XREADGROUP", "XREAD"):
        return args[args.index("STREAMS") + 1]
    if name in ("PING", "SCRIPT", "CLIENT", "INFO"):
        return None
    return args[1] if len(args) > 1 else None


def _packed(*commands: tuple[Any, ...]) -> bytes:
    """Commands in Redis's protocol, packed by hiredis's C packer (str, bytes and numbers; redis-py's own
    packer encodes each argument in Python first: 20 µs against 3 for an answer's write)."""
    return b"".join(pack_command(command) for command in commands)


def _command(client: Any, *args: Any) -> Any:
    key = _routing_key(args) if isinstance(client, RedisCluster) else None
    connection = _connection(client, key)
    try:
        connection.send_packed_command([_packed(args)])
        return connection.read_response()
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()  # reconnects on the next command (an error reply leaves it usable)
        raise
    except (MovedError, AskError):  # the cluster moved the slot: learn its layout again, then once more
        client.nodes_manager.initialize()
        _local.cluster_connections = {}
        connection = _connection(client, key)
        connection.send_packed_command([_packed(args)])
        return connection.read_response()


def _evalsha(client: redis.Redis, keys: list[str], args: list[Any], script: Any = None) -> Any:
    """A script (the fetch script by default) by its digest, on this thread's connection; loaded again
    when Redis lost it (a restart or a flush)."""
    script = script or _fetch
    try:
        return _command(client, "EVALSHA", script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return script(keys=keys, args=args, client=client)


def request_key(meta: Mapping[str, Any]) -> str:
    """What names a request's answer within its store (and shopper): its path and query string as sent.
    Computed from the WSGI environ (Django's `request.META`), the same on the fast path and the full one."""
    return f"{meta.get('PATH_INFO', '')}?{meta.get('QUERY_STRING', '')}"


def lookup(
    store: Any,
    request_key: str,
    *,
    user_id: str | None = None,
    slide: int = TTL_SECONDS,
    with_profile: bool = False,
    bucket: tuple[str, int, int] | None = None,
    impression: Impression | None = None,
    trusted_keys_generation: bytes | None = None,
) -> Lookup:
    """One round trip: the generations, the key they give this request, and the answer if cached (which
    then lives `slide` more seconds; 0 leaves its expiry as it was); when it is not cached and
    `with_profile`, the shopper's profile too. `bucket` (key, rate, burst): a token of that rate limit is
    taken first; when none is left, nothing else is read (Lookup.bucket says so)."""
    client = _redis()
    if client is None:
        return MISS
    if not settings.RECORD_IMPRESSIONS:
        impression = None
    namespace = _namespace(store)
    digest = hashlib.sha1(request_key.encode(), usedforsecurity=False).hexdigest()
    profile_key = _shopper_keys_in(namespace, user_id)[1] if user_id is not None else f"{namespace}:p:-"
    bucket_key, rate, burst = bucket if bucket is not None else (f"{namespace}:rl:-", 0, 0)
    keys = [f"{namespace}:gen", _shopper_key(store, user_id), f"{namespace}:keys", profile_key, bucket_key,
            impressions_stream(shard(store.id))]  # fmt: skip
    args: list[Any] = [
        namespace,
        digest,
        slide,
        GENERATION_TTL_SECONDS,
        "1" if with_profile else "0",
        PROFILE_EVENTS,
        rate,
        burst,
        *(
            (impression.recommendation_id, impression.store_id, impression.surface, impression.user_id)
            if impression is not None
            else ("", "", "", "")
        ),
        _SHARD_MAX,
        trusted_keys_generation or "",
    ]
    try:
        keys_gen, store_gen, key, body, shopper_gen, profile, taken = _evalsha(client, keys=keys, args=args)
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return MISS
    return Lookup(
        keys_gen,
        store_gen,
        key.decode() if isinstance(key, bytes) else key,
        body or None,
        shopper_gen,
        profile if isinstance(profile, bytes) else None,
        taken if isinstance(taken, list) else None,
        impression.recommendation_id if impression is not None else None,
    )


def quota_reserve(store: Any, name: str, day: str, amount: int, limit: int) -> tuple[bool, int] | None:
    """Reserve `amount` of the store's quota `name` for `day` (a UTC date) unless that passes `limit`:
    (reserved, the day's count after it or now). None when Redis is off or down (no quota then)."""
    answered = gate(None, store, name, day, amount, limit)
    return None if answered is None else answered.reserved


def store_forget(store: Any, extra_keys: Iterable[str] = ()) -> int | None:
    """Delete every key of the store (answers, generations, profiles, quotas) and `extra_keys` (its API
    keys' rate limits): for a store being erased. None when Redis is off or down (they expire on their
    own then: answers in minutes, profiles in an hour, generations in a day)."""
    client = _redis()
    if client is None:
        return None
    removed = 0
    try:
        batch: list[Any] = list(extra_keys)
        for key in client.scan_iter(match=f"{_namespace(store)}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(client.unlink(*batch))
                batch = []
        if batch:
            removed += int(client.unlink(*batch))
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return None
    return removed


@dataclass(frozen=True)
class Gate:
    """Ingestion's gate: the bucket's answer (None: no limit), (reserved, count) of the daily quota (None:
    no quota, or the token refused), and the store's keys generation."""

    bucket: list[int] | None
    reserved: tuple[bool, int] | None
    keys_generation: bytes


def gate(
    bucket: tuple[str, int, int] | None,
    store: Any,
    quota: str,
    day: str,
    amount: int,
    limit: int,
    trusted_keys_generation: bytes | None = None,
) -> Gate | None:
    """The store's keys generation, a token of `bucket` and, when granted, `amount` of the store's daily
    `quota`, in one round trip; only the generation when it is not `trusted_keys_generation` (the key and
    the limits the caller holds are stale then). None when Redis is off or down."""
    client = _redis()
    if client is None:
        return None
    namespace = _namespace(store)
    bucket_key, rate, burst = bucket if bucket is not None else (f"{namespace}:rl:-", 0, 0)
    quota_key = f"{namespace}:quota:{quota}:{day}"
    try:
        taken, used, keys_gen = _evalsha(
            client,
            keys=[bucket_key, quota_key, f"{namespace}:keys"],
            args=[rate, burst, amount, limit, 2 * 86_400, trusted_keys_generation or b""],
            script=_gate,
        )
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return None
    granted = int(taken[0]) == 1
    reserved = None if limit <= 0 or not granted else ((True, int(used)) if used >= 0 else (False, -1 - used))
    return Gate(taken if bucket is not None else None, reserved, keys_gen)


def take_token(bucket_key: str, rate: int, burst: int) -> list[int] | None:
    """A token of a rate limit (see _BUCKET_FUNCTION); None when Redis is off or down (no limit then)."""
    client = _redis()
    if client is None:
        return None
    try:
        return _evalsha(client, keys=[bucket_key], args=[rate, burst], script=_take)
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return None


# Every answer served is an impression (outcomes/): appended here, in the answer's own write, to the stream
# of the store's shard (in the store's slot), and drained into PostgreSQL by a worker. Capped
# (approximately) so that a stopped drain cannot fill Redis.
# about 1 KB each: at most about 500 MB in all; 50 s of 10,000 answers a second, should the drain stop
IMPRESSIONS_MAX = 500_000
_SHARD_MAX = max(1000, IMPRESSIONS_MAX // SHARDS * 4)  # (a busy shard may hold more than its share)


def impressions_stream(shard_number: int) -> str:
    return f"rc:{{{shard_number}}}:impressions"


IMPRESSIONS_STREAMS = [impressions_stream(number) for number in range(SHARDS)]


@dataclass(frozen=True)
class Impression:
    recommendation_id: str
    store_id: int
    surface: str
    user_id: str  # "" for answers about no shopper
    body: bytes  # the answer as cached (without its recommendation id): the worker reads its items


def _impression_command(impression: Impression) -> tuple[Any, ...]:
    return (
        "XADD", impressions_stream(shard(impression.store_id)), "MAXLEN", "~", _SHARD_MAX, "*",
        "r", impression.recommendation_id, "s", impression.store_id, "f", impression.surface,
        "u", impression.user_id, "t", int(time.time() * 1000), "b", impression.body,
    )  # fmt: skip


def put(
    key: str | None, body: bytes, *, ttl: int = TTL_SECONDS, impression: Impression | None = None
) -> None:
    """Keep an answer under `key` (None: not kept) and record its impression, in one write."""
    if not settings.RECORD_IMPRESSIONS:
        impression = None
    client = _redis()
    if client is None or (key is None and impression is None):
        return
    commands: list[tuple[Any, ...]] = []
    # no reply asked for (CLIENT REPLY SKIP): the answer is already on its way to the shopper, and
    # waiting for Redis's "OK" would only hold the thread
    if key is not None:
        commands += [("CLIENT", "REPLY", "SKIP"), ("SET", key, body, "EX", ttl)]
    if impression is not None:
        commands += [("CLIENT", "REPLY", "SKIP"), _impression_command(impression)]
    # the answer and the impression's stream are in the store's slot: one node of a cluster
    route = key if key is not None or impression is None else impressions_stream(shard(impression.store_id))
    connection = _connection(client, route)
    try:
        connection.send_packed_command([_packed(*commands)])
    except (redis.RedisError, OSError) as error:  # a cache that is down only costs speed
        connection.disconnect()
        _unreachable(error)


ClaimedId = tuple[str, bytes]  # (stream, entry id)
_groups_made: set[tuple[str, str]] = set()  # (client url, group) whose groups this process made


def _ensure_groups(client: redis.Redis, group: str) -> None:
    if (_client_url, group) in _groups_made:
        return
    pipe = client.pipeline(transaction=False)
    for stream in IMPRESSIONS_STREAMS:
        pipe.xgroup_create(stream, group, id="0", mkstream=True)
    for answer in pipe.execute(raise_on_error=False):
        if isinstance(answer, Exception) and "BUSYGROUP" not in str(answer):
            raise answer
    _groups_made.add((_client_url, group))


def impressions_claim(
    consumer: str, *, count: int, stale_ms: int, group: str = "drain", _again: bool = True
) -> list[tuple[ClaimedId, dict[bytes, bytes]]]:
    """The next impressions for a drainer, from every shard's stream that holds some: first those another
    drainer read and never acknowledged for `stale_ms` (it died), then new ones. Each stays pending until
    impressions_ack."""
    client = _redis()
    if client is None:
        return []
    try:
        _ensure_groups(client, group)
        pipe = client.pipeline(transaction=False)
        for stream in IMPRESSIONS_STREAMS:
            pipe.xlen(stream)
        waiting = [
            stream for stream, length in zip(IMPRESSIONS_STREAMS, pipe.execute(), strict=True) if length
        ]
        entries: list[tuple[ClaimedId, dict[bytes, bytes]]] = []
        if not waiting:
            return entries
        pipe = client.pipeline(transaction=False)
        for stream in waiting:
            pipe.xautoclaim(stream, group, consumer, stale_ms, "0-0", count=count)
        for stream, claimed in zip(waiting, pipe.execute(), strict=True):
            entries += [
                ((stream, entry_id), fields) for entry_id, fields in claimed[1] if entry_id and fields
            ]
        for stream in waiting:
            if len(entries) >= count:
                break
            # (read raw and paired here: redis-py's reply parsing cost the drain a fifth of its CPU)
            fresh: Any = _command(
                client,
                "XREADGROUP",
                "GROUP",
                group,
                consumer,
                "COUNT",
                count - len(entries),
                "STREAMS",
                stream,
                ">",
            )
            # (RESP3 answers a map of stream -> entries, RESP2 a list of [stream, entries])
            for stream_entries in (
                fresh.values() if isinstance(fresh, dict) else [pair[1] for pair in fresh or []]
            ):
                entries += [
                    ((stream, entry_id), dict(zip(flat[::2], flat[1::2], strict=True)))
                    for entry_id, flat in stream_entries
                ]
        return entries  # (the stale ones of several streams may pass `count`: none is left claimed)
    except redis.ResponseError as error:
        if "NOGROUP" in str(error) and _again:  # the streams went (a flush): their groups made again
            _groups_made.clear()
            return impressions_claim(consumer, count=count, stale_ms=stale_ms, group=group, _again=False)
        raise
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return []


def impressions_ack(ids: list[ClaimedId], *, group: str = "drain") -> None:
    """Done with these (stored): acknowledged and deleted from their streams."""
    client = _redis()
    if client is None or not ids:
        return
    by_stream: dict[str, list[bytes]] = {}
    for stream, entry_id in ids:
        by_stream.setdefault(stream, []).append(entry_id)
    for stream, entry_ids in by_stream.items():  # (packed by hiredis: redis-py encodes each id in Python)
        _command(client, "XACK", stream, group, *entry_ids)
        _command(client, "XDEL", stream, *entry_ids)


def impressions_oldest_ms() -> int | None:
    """When the oldest impression still in a stream (not stored yet) was appended, in ms since the epoch;
    None when every stream is empty or Redis does not answer (then nothing is known to be waiting)."""
    client = _redis()
    if client is None:
        return None
    try:
        pipe = client.pipeline(transaction=False)
        for stream in IMPRESSIONS_STREAMS:
            pipe.xrange(stream, count=1)
        firsts: Any = pipe.execute()
    except (redis.RedisError, OSError) as error:
        _unreachable(error)
        return None
    times = [int(first[0][0].split(b"-")[0]) for first in firsts if first]
    return min(times) if times else None


def impressions_clear() -> None:
    """Every shard's stream emptied (tests and benchmarks: answers they served are not to be stored)."""
    client = _redis()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        for stream in IMPRESSIONS_STREAMS:  # one key a command: each is in a slot of its own
            pipe.delete(stream)
        pipe.execute()
        _groups_made.clear()
