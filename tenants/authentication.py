"""API-key authentication and the one place where tenant scoping happens.

Every merchant endpoint subclasses `StoreScopedAPIView`: it authenticates the bearer key, checks the
key's scope for the method, and binds `self.store` from the key. Subclasses cannot replace any of that
(`__init_subclass__` refuses), and `self.store` fails closed when no store was bound.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from core import answer_cache
from core.json import render_json
from core.observability import answer_cache_counter, store_var
from tenants.models import ApiKey, ApiKeyScope, Store
from tenants.selectors import api_key_get_by_raw_key
from tenants.services import api_key_touch


class ApiKeyPrincipal:
    """`request.user` for API calls: the key, not a person."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key
        self.store = api_key.store

    def __str__(self) -> str:
        return f"api key {self.api_key.prefix} of {self.store.slug}"


def bearer_token(meta: dict[str, Any]) -> str | None:
    """The API key of an `Authorization: Bearer <key>` header; None when the header is missing or other."""
    scheme, _, token = meta.get("HTTP_AUTHORIZATION", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        if not request.META.get("HTTP_AUTHORIZATION"):
            return None
        token = bearer_token(request.META)
        if token is None:
            raise exceptions.AuthenticationFailed("expected the header 'Authorization: Bearer <api key>'")
        # checked a moment ago in this request against the current keys generation (_cached_answer), or
        # remembered by this process and trusted while that generation holds (one Redis read, no SQL)
        key = getattr(request._request, "verified_api_key", None) or recent_keys.trusted(token)
        if key is None:
            raise exceptions.AuthenticationFailed("the API key is unknown or revoked")
        api_key_touch(api_key=key)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class HasScope(BasePermission):
    """Reads need `read`, writes `write`, and the methods a view lists in `admin_methods` need `admin`."""

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            raise exceptions.NotAuthenticated("send 'Authorization: Bearer <api key>'")
        needed = required_scope(request.method or "GET", getattr(view, "admin_methods", frozenset()))
        if needed not in key.scopes:
            raise exceptions.PermissionDenied(f"this API key lacks the '{needed}' scope")
        return True


def required_scope(method: str, admin_methods: frozenset[str]) -> str:
    if method in admin_methods:
        return ApiKeyScope.ADMIN
    return ApiKeyScope.READ if method in SAFE_METHODS else ApiKeyScope.WRITE


class _RecentKeys:
    """Per process: API keys looked up lately (with their store and its settings), each with the keys
    generation read *before* its lookup. An entry is trusted only while that generation is current, so a
    revoked key, a changed scope or a deactivated store is never trusted after the change."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self.entries: dict[bytes, tuple[ApiKey, bytes]] = {}
        self.lock = threading.Lock()

    def get(self, token: str) -> tuple[ApiKey, bytes] | None:
        """The remembered entry, or the key looked up now with the current generation; the caller checks
        the generation against the one it reads with its answer (the fast path's single round trip)."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self.entries.get(digest)
        if entry is not None:
            return entry
        generation = answer_cache.keys_generation()
        if generation is None:
            return None
        key = self._remember(token, digest, generation)
        return None if key is None else (key, generation)

    def trusted(self, token: str) -> ApiKey | None:
        """The live key of a token: remembered and still trusted (one Redis read, no SQL), else looked up
        now. Without the cache (off or down) nothing is remembered: always looked up."""
        generation = answer_cache.keys_generation()
        if generation is None:
            return api_key_get_by_raw_key(raw_key=token)
        digest = hashlib.sha256(token.encode()).digest()
        entry = self.entries.get(digest)
        if entry is not None and entry[1] == generation:
            return entry[0]
        return self._remember(token, digest, generation)

    def _remember(self, token: str, digest: bytes, generation: bytes) -> ApiKey | None:
        """Look the key up (after `generation` was read) and remember it under that generation."""
        key = api_key_get_by_raw_key(raw_key=token)
        with self.lock:
            if key is None:
                self.entries.pop(digest, None)
                return None
            if len(self.entries) >= self.size:
                self.entries.clear()
            self.entries[digest] = (key, generation)
        return key

    def forget(self, token: str) -> None:
        with self.lock:
            self.entries.pop(hashlib.sha256(token.encode()).digest(), None)


recent_keys = _RecentKeys()


@dataclass(frozen=True)
class FoundAnswer:
    """A cache lookup for one request, made with a key that was trusted at the generation it read."""

    api_key: ApiKey
    cache_key: str  # where this request's answer lives for the generations read
    store_generation: bytes
    body: bytes | None  # the cached answer, rendered; None when it is not cached yet


# where the WSGI fast path (tenants/fast_answers.py) leaves its lookup for the full path: no HTTP header
# can produce this environ key
LOOKUP_ENVIRON_KEY = "recsys.answer_lookup"
NOTHING_FOUND = "nothing"


def look_up_answer(
    meta: dict[str, Any], view_class: type[StoreScopedAPIView], kwargs: dict[str, Any]
) -> FoundAnswer | None:
    """The cached answer of a GET with no SQL: the key from memory, one Redis round trip for the
    generations and the answer. None when anything is unusual (no or a bad key, a missing scope, a
    generation that moved): the full path then answers, errors included."""
    token = bearer_token(meta)
    if token is None:
        return None
    entry = recent_keys.get(token)
    if entry is None:
        return None
    key, generation = entry
    if ApiKeyScope.READ not in key.scopes:
        return None
    shopper = kwargs.get("user_id") if view_class.cache_per_shopper else None
    slide = view_class.answer_ttl if view_class.answer_ttl_slides else 0
    found = answer_cache.lookup(key.store, answer_cache.request_key(meta), user_id=shopper, slide=slide)
    if found.key is None or found.store_generation is None:
        return None
    if found.keys_generation != generation:
        recent_keys.forget(token)  # keys or stores changed since the lookup: look again
        return None
    return FoundAnswer(key, found.key, found.store_generation, found.body)


def _surface(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return (match.url_name if match else None) or "other"


def _cached_answer(
    view: StoreScopedAPIView, request: HttpRequest, kwargs: dict[str, Any]
) -> HttpResponse | None:
    """The cached answer, or None to take the full path, which then keeps its answer where the lookup
    says (`request.answer_cache_key`) and reuses the key and the store generation it vouched for."""
    found = request.META.pop(LOOKUP_ENVIRON_KEY, None)  # looked up already by the WSGI fast path
    if found is None:
        found = look_up_answer(request.META, type(view), kwargs)
    if not isinstance(found, FoundAnswer):
        return None
    key = found.api_key
    request.answer_cache_key = found.cache_key  # type: ignore[attr-defined]
    request.verified_api_key = key  # type: ignore[attr-defined]
    answer_cache.request_generation.set((key.store_id, found.store_generation))
    if found.body is None:
        return None
    api_key_touch(api_key=key)
    store_var.set(key.store.slug)
    answer_cache_counter(_surface(request), "hit").inc()
    response = HttpResponse(
        answer_cache.with_fresh_recommendation_id(found.body), content_type="application/json"
    )
    response["X-Answer-Cache"] = "hit"
    return response


_SEALED = ("authentication_classes", "permission_classes", "initial", "store", "get_store", "dispatch")


class StoreScopedAPIView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    admin_methods: ClassVar[frozenset[str]] = frozenset()
    # GET answers of the view may come from the shared answer cache (core/answer_cache.py) ...
    cache_answers: ClassVar[bool] = False
    # ... keyed also by the shopper in the URL, whose new events make them stale
    cache_per_shopper: ClassVar[bool] = False
    # ... kept this long since last read; with `answer_ttl_slides` off, since computed (answers that
    # change with the clock, not only with what the generations track)
    answer_ttl: ClassVar[int] = answer_cache.TTL_SECONDS
    answer_ttl_slides: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [name for name in _SEALED if name in cls.__dict__]
        if overridden:
            raise TypeError(f"{cls.__name__} may not override tenant scoping ({', '.join(overridden)})")

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        answer_cache.request_generation.set(None)  # nothing carried over from this thread's last request
        if self.cache_answers and request.method == "GET":
            cached = _cached_answer(self, request, kwargs)
            if cached is not None:
                return cached
        return super().dispatch(request, *args, **kwargs)

    def answer(self, request: Request, body: dict[str, Any]) -> HttpResponse:
        """A successful answer, rendered once with orjson and kept in the answer cache when the request
        was looked up there."""
        rendered = render_json(body)
        response = HttpResponse(rendered, content_type="application/json")
        if self.cache_answers:
            key = getattr(request._request, "answer_cache_key", None)
            answer_cache.put(key, rendered, ttl=self.answer_ttl)
            response["X-Answer-Cache"] = "miss"
            answer_cache_counter(_surface(request), "miss").inc()
        return response

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self._bound_store: Store | None = None
        super().initial(request, *args, **kwargs)  # authentication and permissions run here
        self._bound_store = request.auth.store
        store_var.set(self._bound_store.slug)  # every log line of this request names the store

    @property
    def store(self) -> Store:
        store = getattr(self, "_bound_store", None)
        if store is None:
            raise exceptions.NotAuthenticated("no store is bound to this request")
        return store
