"""API-key authentication and the one place where tenant scoping happens.

Every merchant endpoint subclasses `StoreScopedAPIView`: it authenticates the bearer key, checks the
key's scope for the method, and binds `self.store` from the key. Subclasses cannot replace any of that
(`__init_subclass__` refuses), and `self.store` fails closed when no store was bound.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from core.observability import store_var
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


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise exceptions.AuthenticationFailed("expected the header 'Authorization: Bearer <api key>'")
        key = api_key_get_by_raw_key(raw_key=token)
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


_SEALED = ("authentication_classes", "permission_classes", "initial", "store", "get_store")


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
        self._bound_store = request.auth.store
        store_var.set(self._bound_store.slug)  # every log line of this request names the store

    @property
    def store(self) -> Store:
        store = getattr(self, "_bound_store", None)
        if store is None:
            raise exceptions.NotAuthenticated("no store is bound to this request")
        return store
