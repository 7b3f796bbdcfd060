"""Reads of the catalog, always scoped by store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from catalog.models import Product
from core.errors import NotFound
from core.pagination import PageRequest
from tenants.models import Store


def product_get(*, store: Store, external_id: str) -> Product:
    product = Product.objects.filter(store=store, external_id=external_id).first()
    if product is None:
        raise NotFound("no such product")
    return product


def product_list(
    *,
    store: Store,
    page: PageRequest,
    category: str | None = None,
    in_stock: bool | None = None,
    active: bool | None = None,
    updated_since: datetime | None = None,
) -> list[Product]:
    queryset: QuerySet[Product] = Product.objects.filter(store=store, id__gt=page.after)
    if category:
        queryset = queryset.filter(category_path__contains=[category])
    if in_stock is not None:
        queryset = queryset.filter(in_stock=in_stock)
    if active is not None:
        queryset = queryset.filter(is_active=active)
    if updated_since is not None:
        queryset = queryset.filter(updated_at__gte=updated_since)
    return list(queryset.order_by("id")[: page.limit])


def product_to_dict(product: Product) -> dict[str, Any]:
    return {
        "id": product.external_id,
        "title": product.title,
        "description": product.description,
        "category_path": product.category_path,
        "brand": product.brand,
        "gtin": product.gtin,
        "price": float(product.price) if product.price is not None else None,
        "currency": product.currency,
        "in_stock": product.in_stock,
        "attributes": product.attributes,
        "image_url": product.image_url,
        "active": product.is_active,
        "created_at": product.created_at,
        "updated_at": product.updated_at,
    }
