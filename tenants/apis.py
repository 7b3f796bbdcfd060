"""GET/PATCH /api/v1/store."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.json import json_body
from tenants import schemas
from tenants.authentication import StoreScopedAPIView
from tenants.selectors import store_to_dict
from tenants.services import store_delete, store_update


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
        store = store_update(store=self.store, data=json_body(request))
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
