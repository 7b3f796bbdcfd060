"""Request options of every surface: limit, filters, diversity; merged over the store's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.params import query_bool, query_float, query_int, query_text
from tenants.models import StoreSettings

MAX_LIMIT = 100


@dataclass
class Options:
    limit: int = 10
    category: str | None = None
    brand: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None
    exclude: set[str] = field(default_factory=set)
    include_purchased: bool | None = None
    max_per_category: int | None = None
    diversity: float = 0.0  # maximal marginal relevance: 0 is off, 1 is all diversity
    settings: StoreSettings | None = None  # the store's, read once per request
    exclude_product_ids: set[int] = field(default_factory=set)  # internal ids (purchased items)


def options_from_query(query: Any, settings: StoreSettings) -> Options:
    merged = {**(settings.default_filters or {}), **(settings.diversity or {})}
    merged.update({key: query.get(key) for key in query})
    options = Options(settings=settings)
    options.limit = query_int(merged.get("limit"), "limit", low=1, high=MAX_LIMIT, default=10) or 10
    options.category = query_text(merged.get("category"), "category")
    options.brand = query_text(merged.get("brand"), "brand")
    options.min_price = _price(merged.get("min_price"), "min_price")
    options.max_price = _price(merged.get("max_price"), "max_price")
    options.in_stock = query_bool(merged.get("in_stock"), "in_stock")
    options.include_purchased = query_bool(merged.get("include_purchased"), "include_purchased")
    exclude = merged.get("exclude") or ""
    if isinstance(exclude, list):
        exclude = ",".join(str(item) for item in exclude)
    options.exclude = {item for item in str(exclude).split(",") if item}
    options.max_per_category = query_int(
        merged.get("max_per_category"), "max_per_category", low=1, high=MAX_LIMIT, default=None
    )
    options.diversity = (
        query_float(merged.get("diversity"), "diversity", low=0.0, high=1.0, default=0.0) or 0.0
    )
    return options


def _price(raw: Any, name: str) -> Decimal | None:
    value = query_float(raw, name, low=0.0, high=1e10, default=None)
    return None if value is None else Decimal(str(value))


def catalog_filters(options: Options, table: str = "") -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for the request's catalog filters, on `table.` columns: for
    the searches that run in the database (network answers over pgvector)."""
    prefix = f"{table}." if table else ""
    clauses: list[str] = []
    params: list[Any] = []
    for wanted, condition in (
        (options.category, f"{prefix}category_path @> ARRAY[%s]::varchar[]"),
        (options.brand, f"{prefix}brand = %s"),
        (options.min_price, f"{prefix}price >= %s"),
        (options.max_price, f"{prefix}price <= %s"),
        (options.in_stock, f"{prefix}in_stock = %s"),
    ):
        if wanted is not None and wanted != "":
            clauses.append(condition)
            params.append(wanted)
    return clauses, params
