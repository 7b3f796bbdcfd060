"""Writes to the catalog: set-based bulk upsert (COPY into a temporary table, then one UPDATE and one
INSERT), single-product replace/patch, and soft delete."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from django.db import connection, transaction
from django.utils import timezone

from catalog.models import CONTENT_DIMENSIONS, Product
from core import answer_cache, rate_limit
from core.db import TEXT_IDS, text_ids
from core.errors import ApiError, NotFound
from core.observability import REFUSED_BY_LIMIT
from core.validation import RowError, clean_bool, clean_money, clean_string, without_nul
from tenants.models import Store

MAX_ATTRIBUTES_BYTES = 64 * 1024

# API field -> column. Order matters: bit i of a row's mask says "field i was sent".
FIELDS: tuple[str, ...] = (
    "title",
    "description",
    "category_path",
    "brand",
    "gtin",
    "price",
    "currency",
    "in_stock",
    "attributes",
    "image_url",
    "active",
    "embedding",
)
COLUMNS = {name: ("is_active" if name == "active" else name) for name in FIELDS}
DEFAULTS: dict[str, Any] = {
    "title": "",
    "description": "",
    "category_path": [],
    "brand": "",
    "gtin": "",
    "price": None,
    "currency": "",
    "in_stock": True,
    "attributes": {},
    "image_url": "",
    "active": True,
    "embedding": None,
}
MAX_EMBEDDING_DIMENSIONS = 1024
ALL_FIELDS_MASK = (1 << len(FIELDS)) - 1


@dataclass
class BulkResult:
    created: int = 0
    updated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len({error["index"] for error in self.errors})

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "rejected": self.rejected,
            "errors": self.errors,
        }


def _clean_category_path(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(">") if part.strip()]
    if not isinstance(value, list) or len(value) > 10:
        raise RowError("category_path", "invalid_type", "category_path must be a list of at most 10 strings")
    return [clean_string(part, "category_path", max_length=200) for part in value]


def _clean_attributes(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RowError("attributes", "invalid_type", "attributes must be a JSON object")
    value = without_nul(value, "attributes")
    if len(orjson.dumps(value)) > MAX_ATTRIBUTES_BYTES:
        raise RowError("attributes", "too_large", f"attributes exceed {MAX_ATTRIBUTES_BYTES} bytes")
    return value


def _clean_currency(value: Any) -> str:
    currency = clean_string(value, "currency", max_length=3, required=False, empty_ok=True)
    if currency and (len(currency) != 3 or not currency.isascii() or not currency.isalpha()):
        raise RowError("currency", "invalid_currency", "currency must be a three-letter ISO 4217 code")
    return currency.upper()


def _clean_gtin(value: Any) -> str:
    gtin = clean_string(value, "gtin", max_length=14, required=False, empty_ok=True)
    if gtin and not (gtin.isascii() and gtin.isdigit()):
        raise RowError("gtin", "invalid_gtin", "gtin must be 8 to 14 digits")
    return gtin


def _clean_image_url(value: Any) -> str:
    url = clean_string(value, "image_url", max_length=2048, required=False, empty_ok=True)
    # (square brackets only belong to IPv6 hosts, and an unmatched one makes the URL unreadable: refused)
    if url and (not url.startswith(("http://", "https://")) or "[" in url or "]" in url):
        raise RowError("image_url", "invalid_url", "image_url must be an http(s) URL, without [ or ]")
    return url


def _clean_embedding(value: Any) -> list[float] | None:
    """null (none), or 1 to MAX_EMBEDDING_DIMENSIONS numbers of at most 1e30 in size (all zero: no style
    to compare, as null)."""
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_EMBEDDING_DIMENSIONS:
        raise RowError(
            "embedding",
            "invalid_type",
            f"embedding must be a list of 1 to {MAX_EMBEDDING_DIMENSIONS} numbers",
        )
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise RowError("embedding", "invalid_type", "embedding must hold numbers only")
    vector = np.asarray(value, dtype=np.float64)
    if not np.isfinite(vector).all() or np.abs(vector).max() > 1e30:
        raise RowError("embedding", "invalid_value", "embedding numbers must be at most 1e30 in size")
    return [float(x) for x in value]


CLEANERS = {
    "title": lambda v: clean_string(v, "title", max_length=1000),
    "description": lambda v: clean_string(
        v, "description", max_length=100_000, required=False, empty_ok=True
    ),
    "category_path": _clean_category_path,
    "brand": lambda v: clean_string(v, "brand", max_length=200, required=False, empty_ok=True),
    "gtin": _clean_gtin,
    "price": lambda v: clean_money(v, "price"),
    "currency": _clean_currency,
    "in_stock": lambda v: clean_bool(v, "in_stock"),
    "attributes": _clean_attributes,
    "image_url": _clean_image_url,
    "active": lambda v: clean_bool(v, "active"),
    "embedding": _clean_embedding,
}


@dataclass(frozen=True)
class CleanRow:
    index: int
    external_id: str
    values: dict[str, Any]  # only the fields that were sent
    mask: int


def product_row_clean(row: Any, index: int | None, *, replace: bool) -> CleanRow:
    """Validate one product object. With `replace`, absent fields take their defaults."""
    if not isinstance(row, dict):
        raise RowError("", "invalid_type", "each product must be a JSON object")
    unknown = set(row) - {"id", *FIELDS}
    if unknown:
        name = sorted(unknown)[0]
        raise RowError(name[:100], "unknown_field", f"unknown field {name[:100]!r}")
    external_id = clean_string(row.get("id"), "id", max_length=256)
    values: dict[str, Any] = {}
    mask = 0
    for bit, name in enumerate(FIELDS):
        if name in row:
            values[name] = CLEANERS[name](row[name])
            mask |= 1 << bit
        elif replace:
            values[name] = DEFAULTS[name]
            mask |= 1 << bit
    if replace and "title" not in row:
        raise RowError("title", "required", "title is required")
    return CleanRow(index=index or 0, external_id=external_id, values=values, mask=mask)


def product_bulk_upsert(*, store: Store, rows: Any, replace: bool = False) -> BulkResult:
    """Upsert up to MAX_BATCH_ROWS products. Valid rows are stored; invalid rows are reported with
    their index. Fields a row leaves out keep their stored value (new products take defaults)."""
    from django.conf import settings

    if not isinstance(rows, list):
        raise ApiError("invalid", 'the body must be a JSON list of products (or {"products": [...]})')
    if len(rows) > settings.MAX_BATCH_ROWS:
        raise ApiError(
            "batch_too_large", f"at most {settings.MAX_BATCH_ROWS} products a request; got {len(rows)}"
        )
    result = BulkResult()
    cleaned: list[CleanRow] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        try:
            clean = product_row_clean(row, index, replace=replace)
        except RowError as error:
            result.errors.append(error.as_dict(index))
            continue
        if clean.external_id in seen:
            result.errors.append(
                RowError("id", "duplicate_id", "this id appears earlier in the same batch").as_dict(index)
            )
            continue
        seen.add(clean.external_id)
        cleaned.append(clean)
    if not cleaned:
        return result

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id FROM catalog_product WHERE store_id = %s AND external_id = ANY({TEXT_IDS})",
            [store.id, text_ids(row.external_id for row in cleaned)],
        )
        existing = {external_id for (external_id,) in cursor.fetchall()}
        to_write: list[CleanRow] = []
        dimensions = _embedding_dimensions(cursor, store, cleaned)
        for row in cleaned:
            embedding = row.values.get("embedding")
            if row.external_id not in existing and "title" not in row.values:
                result.errors.append(
                    RowError("title", "required", "title is required for a new product").as_dict(row.index)
                )
            elif embedding is not None and len(embedding) != dimensions:
                message = (
                    f"this store's embeddings have {dimensions} dimensions; this one has {len(embedding)}"
                )
                result.errors.append(
                    RowError("embedding", "embedding_dimensions", message).as_dict(row.index)
                )
            else:
                to_write.append(row)
        if not to_write:
            return result
        new = sum(1 for row in to_write if row.external_id not in existing)
        _check_product_quota(cursor, store, new)
        _copy_to_staging(cursor, to_write)
        result.updated = _update_existing(cursor, store)
        result.created = _insert_new(cursor, store)
        answer_cache.changed(answer_cache.store_changed, store)
    result.errors.sort(key=lambda error: error["index"])
    return result


def _embedding_dimensions(cursor: Any, store: Store, rows: list[CleanRow]) -> int | None:
    """The store's one embedding dimension: that of the products it holds with one (other than those
    these rows clear or replace), else that of the first row giving one. A store changes it by sending
    its products with embeddings of the new dimension once none keeps the old one (or null first)."""
    given = [row for row in rows if row.values.get("embedding") is not None]
    if not given:
        return None
    rewritten = [row.external_id for row in rows if "embedding" in row.values]
    cursor.execute(
        "SELECT cardinality(embedding) FROM catalog_product WHERE store_id = %s AND embedding IS NOT NULL "
        "AND NOT (external_id = ANY(%s)) LIMIT 1",
        [store.id, rewritten],
    )
    held = cursor.fetchone()
    return int(held[0]) if held else len(given[0].values["embedding"])


def _check_product_quota(cursor: Any, store: Store, new: int) -> None:
    """A batch that would take the catalog past the store's max_products is refused whole (403
    `quota_exceeded`); updates of products it holds always pass. Counted only when there are new ones."""
    limit = rate_limit.quota(store, "max_products")
    if limit <= 0 or new <= 0:
        return
    cursor.execute(
        "SELECT count(*) FROM (SELECT 1 FROM catalog_product WHERE store_id = %s LIMIT %s) AS held",
        [store.id, limit],
    )
    held = int(cursor.fetchone()[0])
    if held + new > limit:
        REFUSED_BY_LIMIT.labels("max_products").inc()
        raise ApiError(
            "quota_exceeded",
            f"this store's catalog may hold {limit} products; it holds {held}, and this request adds {new}",
            details={"quota": "max_products", "limit": limit, "used": held, "new": new},
            status_code=403,
        )


_STAGING_COLUMNS = (
    "external_id text, mask int, title text, description text, category_path text[], brand text, gtin text, "
    "price numeric, currency text, in_stock bool, attributes jsonb, image_url text, is_active bool, "
    "embedding float8[]"
)


def _copy_to_staging(cursor: Any, rows: list[CleanRow]) -> None:
    # Kept per connection; emptied on commit, and here too when called inside an outer transaction.
    cursor.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS product_staging ({_STAGING_COLUMNS}) ON COMMIT DELETE ROWS"
    )
    cursor.execute("TRUNCATE product_staging")
    with cursor.cursor.copy("COPY product_staging FROM STDIN") as copy:
        for row in rows:
            values = row.values
            attributes = values.get("attributes")
            copy.write_row(
                (
                    row.external_id,
                    row.mask,
                    *(values.get(name) for name in FIELDS[:8]),
                    orjson.dumps(attributes).decode() if attributes is not None else None,
                    values.get("image_url"),
                    values.get("active"),
                    values.get("embedding"),
                )
            )


def _update_existing(cursor: Any, store: Store) -> int:
    assignments = ", ".join(_assignment(bit, name) for bit, name in enumerate(FIELDS))
    cursor.execute(
        f"""
        UPDATE catalog_product AS p SET {assignments}, updated_at = now()
        FROM product_staging AS s
        WHERE p.store_id = %s AND p.external_id = s.external_id
        """,
        [store.id],
    )
    return cursor.rowcount


def _assignment(bit: int, name: str) -> str:
    column = COLUMNS[name]
    # An upsert of a deleted product brings it back unless the row says `active: false`.
    otherwise = "true" if name == "active" else f"p.{column}"
    return f"{column} = CASE WHEN s.mask & {1 << bit} <> 0 THEN s.{column} ELSE {otherwise} END"


def _insert_new(cursor: Any, store: Store) -> int:
    columns = ", ".join(COLUMNS[name] for name in FIELDS)
    defaults = {
        "category_path": "'{}'::text[]",
        "attributes": "'{}'::jsonb",
        "in_stock": "true",
        "is_active": "true",
        "price": "NULL",
        "embedding": "NULL",
    }
    selected = ", ".join(
        f"COALESCE(s.{COLUMNS[name]}, {defaults.get(COLUMNS[name], chr(39) * 2)})" for name in FIELDS
    )
    all_columns = ", ".join(f"{COLUMNS[name]} = EXCLUDED.{COLUMNS[name]}" for name in FIELDS)
    cursor.execute(
        f"""
        INSERT INTO catalog_product (store_id, external_id, {columns}, created_at, updated_at)
        SELECT %s, s.external_id, {selected}, now(), now()
        FROM product_staging AS s
        WHERE NOT EXISTS (
            SELECT 1 FROM catalog_product AS p WHERE p.store_id = %s AND p.external_id = s.external_id
        )
        ON CONFLICT (store_id, external_id) DO UPDATE SET {all_columns}, updated_at = now()
        """,
        [store.id, store.id],
    )
    return cursor.rowcount


def product_put(*, store: Store, external_id: str, data: Any) -> tuple[Product, bool]:
    """Create or fully replace one product; answers (product, created)."""
    row = _single_row(external_id, data)
    result = product_bulk_upsert(store=store, rows=[row], replace=True)
    _raise_single_row_error(result)
    return Product.objects.get(store=store, external_id=external_id), result.created == 1


def product_patch(*, store: Store, external_id: str, data: Any) -> Product:
    if not Product.objects.filter(store=store, external_id=external_id, is_active=True).exists():
        raise NotFound("no such product (or it was deleted: PUT brings it back)")
    result = product_bulk_upsert(store=store, rows=[_single_row(external_id, data)])
    _raise_single_row_error(result)
    return Product.objects.get(store=store, external_id=external_id)


def product_deactivate(*, store: Store, external_id: str) -> None:
    """DELETE makes a product inactive: it stays for history and is never recommended."""
    changed = Product.objects.filter(store=store, external_id=external_id, is_active=True).update(
        is_active=False, updated_at=timezone.now()
    )
    if not changed:
        raise NotFound("no such product (or it was deleted already)")
    answer_cache.changed(answer_cache.store_changed, store)


def _single_row(external_id: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError("invalid", "the body must be a JSON object")
    if "id" in data and data["id"] != external_id:
        raise ApiError("id_mismatch", "the id in the body differs from the id in the URL")
    return {**data, "id": external_id}


def _raise_single_row_error(result: BulkResult) -> None:
    if result.errors:
        first = result.errors[0]
        # a valid embedding of another dimension than the store's conflicts with what it holds
        status = 409 if first["code"] == "embedding_dimensions" else 400
        raise ApiError(first["code"], first["message"], details=result.errors, status_code=status)


def product_content_vectors_write(*, store: Store, product_ids: np.ndarray, vectors: np.ndarray) -> None:
    """The store's products' content vectors (half precision; zero vectors left as they are)."""
    _vectors_write("content_embedding", product_ids, vectors, store=store)


def unscoped_product_network_vectors_write(*, product_ids: np.ndarray, vectors: np.ndarray) -> None:
    """Network vectors of products of every sharing store (global training spans stores)."""
    _vectors_write("network_embedding", product_ids, vectors, store=None)


def _vectors_write(column: str, product_ids: np.ndarray, vectors: np.ndarray, *, store: Store | None) -> None:
    """One COPY into a staging table and one UPDATE: the one place vectors are written."""
    present = np.linalg.norm(vectors, axis=1) > 0 if len(vectors) else np.zeros(0, bool)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS vector_staging "
            f"(id bigint, v halfvec({CONTENT_DIMENSIONS})) ON COMMIT DELETE ROWS"
        )
        cursor.execute("TRUNCATE vector_staging")
        with cursor.cursor.copy("COPY vector_staging (id, v) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_binary_copy_of_vectors(product_ids[present], vectors[present]))
        scoped = "AND p.store_id = %s" if store is not None else ""
        cursor.execute(
            f"UPDATE catalog_product AS p SET {column} = s.v FROM vector_staging AS s "
            f"WHERE p.id = s.id {scoped}",
            [store.id] if store is not None else [],
        )


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2  # no flags, no header extension
_COPY_TRAILER = b"\xff\xff"


def _binary_copy_of_vectors(product_ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """(id bigint, v halfvec) rows in PostgreSQL's binary COPY format, built by numpy at once: a halfvec
    is its dimension, a reserved int16 and the half floats, big-endian (pgvector's halfvec_recv). The
    values are exactly the artifact's half-precision vectors; formatting them as text took seconds of
    Python for a large catalog."""
    dimensions = vectors.shape[1] if vectors.ndim == 2 else 0
    row = np.dtype(
        [("fields", ">i2"), ("id_size", ">i4"), ("id", ">i8"), ("v_size", ">i4"), ("dimensions", ">i2"),
         ("reserved", ">i2"), ("v", ">f2", (dimensions,))]
    )  # fmt: skip
    rows = np.zeros(len(product_ids), dtype=row)
    rows["fields"], rows["id_size"], rows["id"] = 2, 8, product_ids
    rows["v_size"], rows["dimensions"] = 4 + 2 * dimensions, dimensions
    rows["v"] = vectors.astype(np.float16)
    return _COPY_SIGNATURE + rows.tobytes() + _COPY_TRAILER


def store_erase(store_id: int) -> dict[str, int]:
    """Every product of a store, with its content and network vectors (they are columns of its row)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM catalog_product WHERE store_id = %s", [store_id])
        return {"products": cursor.rowcount}
