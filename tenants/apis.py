"""GET/PATCH /api/v1/store."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import ApiError
from core.json import json_body_or_empty
from core.validation import RowError, clean_timestamp
from tenants import schemas
from tenants.authentication import CONTROL_CHARACTERS, StoreScopedAPIView
from tenants.selectors import api_key_get, api_key_list, api_key_to_dict, store_to_dict
from tenants.services import api_key_issue, api_key_revoke, api_key_rotate, store_delete, store_update


class StoreApi(StoreScopedAPIView):
    admin_methods = frozenset({"PATCH", "DELETE"})

    @extend_schema(responses=schemas.StoreSerializer, summary="The API key's store and its settings")
    def get(self, request: Request) -> Response:
        return Response(store_to_dict(store=self.store))

    @extend_schema(
        request=schemas.StorePatchSerializer,
        responses=schemas.StoreSerializer,
        summary="Change the store's name or settings (admin-scoped key)",
    )
    def patch(self, request: Request) -> Response:
        body = json_body_or_empty(request)
        store = store_update(store=self.store, data=body)
        return Response(store_to_dict(store=store))

    @extend_schema(
        request=None,
        responses={202: schemas.StoreDeletedSerializer},
        summary="Delete the store and erase all of its data (admin-scoped key; Shopify's shop/redact)",
        description="The store is inactive at once: its keys stop working. A worker then erases every "
        "product, event, alias, model version, vector and cached answer of it, and the store itself.",
    )
    def delete(self, request: Request) -> Response:
        store = store_delete(store=self.store)
        return Response({"id": store.slug, "status": "erasing", "deleted_at": store.deleted_at}, status=202)


class ApiKeyListApi(StoreScopedAPIView):
    admin_methods = frozenset({"GET", "POST"})

    @extend_schema(responses=schemas.ApiKeySerializer(many=True), summary="The store's API keys (admin key)")
    def get(self, request: Request) -> Response:
        return Response([api_key_to_dict(key) for key in api_key_list(store=self.store)])

    @extend_schema(
        request=schemas.ApiKeyInSerializer,
        responses={201: schemas.IssuedKeySerializer},
        summary="Issue an API key (admin key); its secret is in this answer only",
    )
    def post(self, request: Request) -> Response:
        body = json_body_or_empty(request)
        if not isinstance(body, dict):
            raise ApiError("invalid", 'the body must be {"name", "scopes", "expires_at"}')
        unknown = set(body) - {"name", "scopes", "expires_at"}
        if unknown:
            raise ApiError("unknown_field", f"unknown fields: {sorted(unknown)}", details=sorted(unknown))
        name = body.get("name", "default")
        if not isinstance(name, str) or not 0 < len(name) <= 100 or CONTROL_CHARACTERS.search(name):
            raise ApiError("invalid", "name must be a string of 1 to 100 characters")
        scopes = body.get("scopes")
        if scopes is not None and (
            not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes)
        ):
            raise ApiError("invalid_scope", "scopes must be a non-empty list of read, write and admin")
        expires_at = None
        if body.get("expires_at") is not None:
            if not isinstance(body["expires_at"], str):
                raise ApiError("invalid_expiry", "expires_at must be an ISO 8601 time")
            try:
                expires_at = clean_timestamp(body["expires_at"], "expires_at")
            except RowError as error:
                raise ApiError("invalid_expiry", error.message) from error
        issued = api_key_issue(store=self.store, name=name, scopes=scopes, expires_at=expires_at)
        return Response({**api_key_to_dict(issued.api_key), "key": issued.raw_key}, status=201)


class ApiKeyDetailApi(StoreScopedAPIView):
    admin_methods = frozenset({"DELETE"})

    @extend_schema(
        request=None, responses={200: schemas.ApiKeySerializer}, summary="Revoke an API key (admin key)"
    )
    def delete(self, request: Request, prefix: str) -> Response:
        key = api_key_revoke(store=self.store, api_key=api_key_get(store=self.store, prefix=prefix))
        return Response(api_key_to_dict(key))


class ApiKeyRotateApi(StoreScopedAPIView):
    admin_methods = frozenset({"POST"})

    @extend_schema(
        request=schemas.ApiKeyRotateSerializer,
        responses={201: schemas.IssuedKeySerializer},
        summary="Rotate an API key (admin key): a new key with its name and scopes; the old one keeps "
        "working for overlap_hours (default 24)",
    )
    def post(self, request: Request, prefix: str) -> Response:
        body = json_body_or_empty(request)
        if not isinstance(body, dict) or set(body) - {"overlap_hours"}:
            raise ApiError("invalid", 'the body may be {"overlap_hours": <hours>}')
        old = api_key_get(store=self.store, prefix=prefix)
        issued = api_key_rotate(store=self.store, api_key=old, overlap_hours=body.get("overlap_hours", 24))
        return Response(
            {**api_key_to_dict(issued.api_key), "key": issued.raw_key, "replaces": old.prefix}, status=201
        )
