"""Reads of impressions."""

from __future__ import annotations

from typing import Any

from outcomes.models import Impression
from tenants.models import Store


def shopper_export(store: Store, identities: list[str]) -> dict[str, Any]:
    """The answers shown to a shopper (every id of their profile), oldest first."""
    rows = Impression.objects.filter(store=store, user_id__in=identities).order_by("served_at")
    return {
        "impressions": [
            {
                "recommendation_id": row.recommendation_id,
                "surface": row.surface,
                "user_id": row.user_id,
                "items": row.items,
                "served_at": row.served_at,
            }
            for row in rows
        ]
    }
