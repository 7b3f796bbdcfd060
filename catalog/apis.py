"""Thin views for /api/v1/products."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from catalog import schemas
from catalog.selectors import (
    product_get,
    product_list,
    product_to_dict,
)
from catalog.services import product_bulk_upsert, product_deactivate, product_patch, product_put
from core.errors import raise_all_rows_rejected
from core.json import json_body, json_body_or_empty
from core.pagination import encode_cursor, page_request_from_query
from core.params import query_bool, query_time
from tenants.authentication import StoreScopedAPIView
from tenants.schemas import ErrorSerializer


class ProductBulkApi(StoreScopedAPIView):
    @extend_schema(
        request=schemas.ProductInSerializer(many=True, max_length=10_000),  # type: ignore[call-arg]
        responses=schemas.ProductBulkResultSerializer,
        summary="Upsert up to 10,000 products; valid rows are stored, invalid rows come back per index",
    )
    def post(self, request: Request) -> Response:
        rows = json_body(request)
        if isinstance(rows, dict) and set(rows) == {"products"}:
            rows = rows["products"]
        result = product_bulk_upsert(store=self.store, rows=rows)
        if result.errors and not (result.created or result.updated):
            raise_all_rows_rejected(result.as_dict(), result.errors)
        return Response(result.as_dict(), status=200)


class ProductListApi(StoreScopedAPIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("category", str, description="products whose category path has this level"),
            OpenApiParameter("in_stock", bool),
            OpenApiParameter("active", bool),
            OpenApiParameter(
                "updated_since", {"type": "string", "format": "date-time"}, description="ISO 8601 time"
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                description="1 to 1000, default 100",
            ),
            OpenApiParameter(
                "cursor",
                {"type": "string", "pattern": "^[0-9]{1,18}$"},
                description="next_cursor of the previous page",
            ),
        ],
        responses=schemas.ProductPageSerializer,
        operation_id="products_list",
        summary="A page of the store's products",
    )
    def get(self, request: Request) -> Response:
        query = request.query_params
        page = page_request_from_query(query)
        products = product_list(
            store=self.store,
            page=page,
            category=query.get("category"),
            in_stock=query_bool(query.get("in_stock"), "in_stock"),
            active=query_bool(query.get("active"), "active"),
            updated_since=query_time(query.get("updated_since"), "updated_since", iso_only=True),
        )
        next_cursor = encode_cursor(products[-1].id) if len(products) == page.limit else None
        return Response({"items": [product_to_dict(p) for p in products], "next_cursor": next_cursor})


class ProductDetailApi(StoreScopedAPIView):
    @extend_schema(responses=schemas.ProductOutSerializer, summary="One product")
    def get(self, request: Request, product_id: str) -> Response:
        return Response(product_to_dict(product_get(store=self.store, external_id=product_id)))

    @extend_schema(
        request=schemas.ProductPutSerializer,
        responses={
            200: schemas.ProductOutSerializer,
            201: schemas.ProductOutSerializer,
            409: ErrorSerializer,
        },
        summary="Create or replace one product (fields left out take their defaults; 409 "
        "embedding_dimensions for an embedding of another dimension than the store's)",
    )
    def put(self, request: Request, product_id: str) -> Response:
        product, created = product_put(store=self.store, external_id=product_id, data=json_body(request))
        return Response(product_to_dict(product), status=201 if created else 200)

    @extend_schema(
        request=schemas.ProductPatchSerializer(partial=True),
        responses={200: schemas.ProductOutSerializer, 409: ErrorSerializer},
        summary="Change some fields of one product (409 embedding_dimensions as for PUT)",
    )
    def patch(self, request: Request, product_id: str) -> Response:
        # an empty body changes nothing (and answers the product)
        body = json_body_or_empty(request)
        product = product_patch(store=self.store, external_id=product_id, data=body)
        return Response(product_to_dict(product))

    @extend_schema(responses={204: None}, summary="Deactivate a product: it is never recommended again")
    def delete(self, request: Request, product_id: str) -> Response:
        product_deactivate(store=self.store, external_id=product_id)
        return Response(status=204)
