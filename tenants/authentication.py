"""API-key authentication and the one place where tenant scoping happens.

Every merchant endpoint subclasses `StoreScopedAPIView`: it authenticates the bearer key, checks the
key's scope for the method, and binds `self.store` from the key. Subclasses cannot replace any of that
(`__init_subclass__` refuses), and `self.store` fails closed when no store was bound.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from typing import Any, ClassVar

from django.conf import settings as django_settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from core import answer_cache, rate_limit, tenancy
from core.errors import ApiError
from core.observability import REFUSED_BY_LIMIT, actor_var, store_var
from tenants.models import ApiKey, ApiKeyScope, Store
from tenants.selectors import api_key_get_by_raw_key
from tenants.services import TOUCH_EVERY_SECONDS, api_key_touch


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
        # remembered by this process and trusted while its store's keys generation holds (one Redis read,
        # no SQL)
        key, _ = recent_keys.trusted(token)
        if key is None:
            raise exceptions.AuthenticationFailed("the API key is unknown or revoked")
        tenancy.set_store(key.store_id)  # from here on the database shows this store's rows only
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
    """Per process: API keys looked up lately (with their store and its settings), each with its store's
    keys generation read *before* its lookup. An entry is trusted only while that generation is current,
    so a revoked key, a changed scope or a deactivated store is never trusted after the change. A key seen
    for the first time is looked up twice: once to learn its store, whose generation is then read, and
    again after that read."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self.entries: dict[bytes, tuple[ApiKey, bytes]] = {}
        self.lock = threading.Lock()

    def get(self, token: str) -> tuple[ApiKey, bytes] | None:
        """The remembered entry, or the key looked up now with its store's current generation; the caller
        checks the generation against the one it reads with its answer (the fast path's single round
        trip)."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self.entries.get(digest)
        if entry is not None and entry[0].is_live():  # an expiry moves no generation: checked here
            return entry
        key, generation = self._first_sight(token, digest)
        return None if key is None or generation is None else (key, generation)

    def trusted(self, token: str) -> tuple[ApiKey | None, bytes | None]:
        """The live key of a token and its store's keys generation: remembered and still trusted (one
        Redis read, no SQL), else looked up now. Without the cache (off or down) nothing is remembered:
        always looked up, and the generation is None."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self.entries.get(digest)
        if entry is not None:
            generation = answer_cache.keys_generation(entry[0].store)
            if generation is None:
                return api_key_get_by_raw_key(raw_key=token), None
            if entry[1] == generation and entry[0].is_live():
                return entry[0], generation
            return self._remember(token, digest, generation), generation
        return self._first_sight(token, digest)

    def _first_sight(self, token: str, digest: bytes) -> tuple[ApiKey | None, bytes | None]:
        """A key not remembered: looked up, its store's generation read, then remembered under it (looked
        up again). Without the cache: the key, not remembered, and no generation."""
        key = api_key_get_by_raw_key(raw_key=token)
        if key is None:
            self.forget(token)
            return None, None
        generation = answer_cache.keys_generation(key.store)
        if generation is None:
            return key, None
        return self._remember(token, digest, generation), generation

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


def remembered_key(environ: dict[str, Any], scope: str) -> tuple[ApiKey, bytes] | None:
    """For the WSGI fast path: the request's bearer key as this process remembers it, when it has the
    scope and its use was recorded lately (else Django takes the request and records it); with the keys
    generation it was remembered at, which the caller checks in its own Redis round trip (the answer's
    lookup, ingestion's gate) before it uses the key. None: let Django authenticate."""
    token = bearer_token(environ)
    if token is None:
        return None
    entry = recent_keys.get(token)
    if entry is None:
        return None
    key = entry[0]
    if scope not in key.scopes:
        return None
    used = key.last_used_at
    if used is None or time.time() - used.timestamp() > TOUCH_EVERY_SECONDS:
        return None
    tenancy.set_store(key.store_id)  # from here on the database shows this store's rows only
    return entry


def check_body_size(meta: dict[str, Any]) -> None:
    """A body larger than DATA_UPLOAD_MAX_MEMORY_SIZE is refused from its Content-Length, before a byte of
    it is read or parsed."""
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError("invalid_content_length", "the Content-Length header is not a number") from None
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and length > limit:
        REFUSED_BY_LIMIT.labels("body_too_large").inc()
        raise ApiError(
            "body_too_large",
            f"the body is {length} bytes; at most {limit} are taken (send fewer rows a request)",
            details={"limit": limit},
            status_code=413,
        )


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


MAX_ID_LENGTH = 256


def _plain_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and not value.isspace() and not CONTROL_CHARACTERS.search(value)


def plain_request_text(url_kwargs: dict[str, Any], query_string: str) -> bool:
    """For the fast path: nothing check_request_text would refuse (a raw query string with an escaped
    control character is left to Django, which decodes and refuses it)."""
    for value in url_kwargs.values():
        if isinstance(value, str) and not _plain_id(value):
            return False
    if CONTROL_CHARACTERS.search(query_string):
        return False
    lowered = query_string.lower()
    return "%0" not in lowered and "%1" not in lowered and "%7f" not in lowered


def check_request_text(url_kwargs: dict[str, Any], query: Any) -> None:
    """Ids in the URL and query values with control characters (NUL above all, which PostgreSQL refuses)
    are a 400, before any view reads them."""
    for name, value in url_kwargs.items():
        if isinstance(value, str) and not _plain_id(value):
            raise ApiError(
                "invalid_id",
                f"{name} must be 1 to {MAX_ID_LENGTH} characters, not blank, without control characters",
                details={"parameter": name},
            )
    for name, values in query.lists():
        if CONTROL_CHARACTERS.search(name) or any(CONTROL_CHARACTERS.search(value) for value in values):
            raise ApiError(
                "invalid_parameter",
                f"{name!r} must not contain control characters",
                details={"parameter": name},
            )


_SEALED = (
    "authentication_classes",
    "permission_classes",
    "initial",
    "finalize_response",
    "store",
    "get_store",
    "dispatch",
)


class StoreScopedAPIView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    admin_methods: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [name for name in _SEALED if name in cls.__dict__]
        if overridden:
            raise TypeError(f"{cls.__name__} may not override tenant scoping ({', '.join(overridden)})")

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self._bound_store: Store | None = None
        super().initial(request, *args, **kwargs)  # authentication and permissions run here
        self._bound_store = request.auth.store  # type: ignore[union-attr]  # HasScope made it an ApiKey
        actor_var.set(f"api key {request.auth.prefix}")  # type: ignore[union-attr]  # for the audit log
        # the fast path may have taken this request's token already (and then handed it over)
        bucket = request.META.get(rate_limit.ENVIRON_KEY) or rate_limit.take(request.auth)
        request.rate_limit = bucket  # type: ignore[attr-defined]  # its headers go on the answer
        if bucket is not None and not bucket.allowed:
            raise rate_limit.over_limit(bucket)
        check_body_size(request.META)
        check_request_text(self.kwargs, request.query_params)
        store_var.set(self._bound_store.slug)  # every log line of this request names the store

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        bucket = getattr(request, "rate_limit", None)
        if bucket is not None:
            for name, value in bucket.headers():
                response[name] = value
        return response

    @property
    def store(self) -> Store:
        store = getattr(self, "_bound_store", None)
        if store is None:
            raise exceptions.NotAuthenticated("no store is bound to this request")
        return store
