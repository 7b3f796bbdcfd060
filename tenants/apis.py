"""GET/PATCH /api/v1/store."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.json import json_body
from tenants import schemas
from tenants.authentication import StoreScopedAPIView
from tenants.selectors import store_to_dict
from tenants.services import store_update


class StoreApi(StoreScopedAPIView):
    admin_methods = frozenset({"PATCH"})

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
