"""Reads of the catalog, always scoped by store."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from django.db import connection
from django.db.models import QuerySet

from catalog.models import Product
from core.db import TEXT_IDS, prepared_cursor, text_ids
from core.errors import NotFound
from core.pagination import PageRequest
from tenants.models import Store


def product_get(*, store: Store, external_id: str) -> Product:
    """An active product: a deleted one is gone from its URL (an upsert brings it back; the list shows it
    with `active=false`)."""
    product = Product.objects.filter(store=store, external_id=external_id, is_active=True).first()
    if product is None:
        raise NotFound("no such product (or it was deleted)")
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
        "embedding": product.embedding,
        "created_at": product.created_at,
        "updated_at": product.updated_at,
    }


@dataclass(frozen=True)
class CatalogColumns:
    """What serving needs of products, as columns in internal-id order: filters, boosts, diversity caps
    and rendering read these, never a row at a time."""

    ids: np.ndarray  # int64, ascending
    external_ids: list[str]
    active: np.ndarray  # bool
    in_stock: np.ndarray  # bool
    price: np.ndarray  # float64, NaN where the product has no price
    brands: list[str]
    category_paths: list[list[str]]


def product_columns(*, store: Store, product_ids: list[int] | None = None) -> CatalogColumns:
    """The store's products as columns (one query): all of them, or only `product_ids`."""
    sql = (
        "SELECT id, external_id, is_active, in_stock, price, brand, category_path FROM catalog_product "
        "WHERE store_id = %s"
    )
    params: list[Any] = [store.id]
    if product_ids is not None:
        sql += " AND id = ANY(%s)"
        params.append(list(product_ids))
    with connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY id", params)
        rows = cursor.fetchall()
    return CatalogColumns(
        ids=np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
        external_ids=[row[1] for row in rows],
        active=np.fromiter((row[2] for row in rows), dtype=bool, count=len(rows)),
        in_stock=np.fromiter((row[3] for row in rows), dtype=bool, count=len(rows)),
        price=np.fromiter(
            (math.nan if row[4] is None else float(row[4]) for row in rows), dtype=np.float64, count=len(rows)
        ),
        brands=[row[5] for row in rows],
        category_paths=[row[6] or [] for row in rows],
    )


def product_internal_ids(
    *, store: Store, external_ids: Iterable[str], active_only: bool = False
) -> dict[str, int]:
    """External id -> internal id of those of `external_ids` that are the store's products (one query, or
    none when this process has seen them all): the one place where the merchant's ids become the
    matrices' and tables' ids.

    A product's internal id never changes: its row is updated in place, deactivated rather than deleted,
    and removed only with its store (whose id is never used again). So the ids this process found are
    remembered (`_KNOWN_PRODUCTS`, by store); only the others are asked for, and an id not found is asked
    again every time (it may be created); `active_only` always asks."""
    wanted = list(dict.fromkeys(external_ids))
    if not wanted:
        return {}
    store_id = store.id
    known: dict[str, int] = {}
    unknown = wanted
    if not active_only:
        unknown = []
        for external in wanted:
            internal = _KNOWN_PRODUCTS.get((store_id, external))
            if internal is None:
                unknown.append(external)
            else:
                known[external] = internal
        if not unknown:
            return known
    with prepared_cursor() as cursor:  # (every event's ingestion)
        cursor.execute(
            "SELECT external_id, id FROM catalog_product "
            f"WHERE store_id = %s AND external_id = ANY({TEXT_IDS})"
            + (" AND is_active" if active_only else ""),
            [store_id, text_ids(unknown)],
        )
        found = dict(cursor.fetchall())
    if len(_KNOWN_PRODUCTS) + len(found) > KNOWN_PRODUCTS_MAX:
        _KNOWN_PRODUCTS.clear()  # (a bound, not an LRU: a storefront's products come back at once)
    _KNOWN_PRODUCTS.update(((store_id, external), internal) for external, internal in found.items())
    known.update(found)
    return known


# (store id, external id) -> internal id of products this process has looked up: about 150 bytes each
KNOWN_PRODUCTS_MAX = 100_000
_KNOWN_PRODUCTS: dict[tuple[int, str], int] = {}


def product_content_neighbours(*, store: Store, product_id: int, limit: int) -> list[tuple[int, float]]:
    """(internal id, cosine similarity) of the store's active products nearest to the product by content:
    an exact search within the product's top category (two queries: the category first, so that the GIN
    index on category_path bounds the scan)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT category_path[1], content_embedding IS NOT NULL FROM catalog_product "
            "WHERE store_id = %s AND id = %s",
            [store.id, product_id],
        )
        row = cursor.fetchone()
        if row is None or not row[1]:
            return []
        category = row[0]
        in_category = "AND p.category_path @> ARRAY[%s]::varchar[] " if category else ""
        cursor.execute(
            "WITH source AS "
            "(SELECT content_embedding AS v FROM catalog_product WHERE store_id = %s AND id = %s) "
            "SELECT p.id, 1 - (p.content_embedding <=> source.v) FROM catalog_product AS p, source "
            "WHERE p.store_id = %s AND p.is_active AND p.id <> %s AND p.content_embedding IS NOT NULL "
            + in_category
            + "ORDER BY p.content_embedding <=> source.v LIMIT %s",
            [store.id, product_id, store.id, product_id, *([category] if category else []), limit],
        )
        return [(pid, float(similarity)) for pid, similarity in cursor.fetchall() if similarity > 0]
