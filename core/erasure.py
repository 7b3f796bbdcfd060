"""Erasure and export (GDPR; a Shopify app must answer `customers/redact`, `customers/data_request` and
`shop/redact`), across apps without one app reading another's tables: each app registers, in its
AppConfig.ready, what it erases of a shopper or a store and what it exports of a shopper. The endpoints
(events/apis.py for shoppers, tenants/apis.py for the store) run every registered part.

A shopper is erased by the ids of their profile (their own id and every alias): their events, aliases,
real-time profile and cached answers. Aggregates (trained models, trending, metrics) stay: they hold no
shopper id. A store is erased whole: every row of every app, its vectors and artifacts, and its Redis keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ShopperEraser = Callable[[Any, list[str]], dict[str, int]]  # (store, identities) -> rows deleted by kind
ShopperExporter = Callable[[Any, list[str]], dict[str, Any]]  # (store, identities) -> parts of the export
StoreEraser = Callable[[int], dict[str, int]]  # (store id) -> rows deleted by kind


@dataclass(frozen=True)
class _Part:
    app: str
    order: int
    erase_shopper: ShopperEraser | None
    export_shopper: ShopperExporter | None
    erase_store: StoreEraser | None


_parts: dict[str, _Part] = {}


def register(
    app: str,
    *,
    order: int = 50,
    erase_shopper: ShopperEraser | None = None,
    export_shopper: ShopperExporter | None = None,
    erase_store: StoreEraser | None = None,
) -> None:
    """`order`: store erasers run from low to high (rows that point at others go first)."""
    _parts[app] = _Part(app, order, erase_shopper, export_shopper, erase_store)


def _ordered() -> list[_Part]:
    return sorted(_parts.values(), key=lambda part: (part.order, part.app))


def _gathered(part_function: str, *args: Any) -> dict[str, Any]:
    """What every registered part's function of that name answers, merged, in the parts' order."""
    gathered: dict[str, Any] = {}
    for part in _ordered():
        function = getattr(part, part_function)
        if function is not None:
            gathered.update(function(*args))
    return gathered


def shopper_erase(store: Any, identities: list[str]) -> dict[str, int]:
    return _gathered("erase_shopper", store, identities)


def shopper_export(store: Any, identities: list[str]) -> dict[str, Any]:
    return _gathered("export_shopper", store, identities)


def store_erase(store_id: int) -> dict[str, int]:
    return _gathered("erase_store", store_id)


def store_rows_delete(store_id: int, tables: dict[str, str]) -> dict[str, int]:
    """What an app's `erase_store` usually is: every row of the store in each of its tables ({kind: table
    name}, in order), in one transaction; answers the rows deleted by kind."""
    from django.db import connection, transaction

    deleted = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for kind, table in tables.items():
            cursor.execute(f"DELETE FROM {table} WHERE store_id = %s", [store_id])  # noqa: S608 - fixed names
            deleted[kind] = cursor.rowcount
    return deleted
