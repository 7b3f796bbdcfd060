"""Reads of impressions, attributions and the daily figures."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from outcomes.models import Attribution, DailyMetric, Impression
from tenants.models import Store

COUNTS = ("impressions", "shown", "clicks", "add_to_carts", "purchases", "view_through_purchases")
AMOUNTS = ("revenue", "view_through_revenue")


def shopper_export(store: Store, identities: list[str]) -> dict[str, Any]:
    """The answers shown to a shopper (every id of their profile), oldest first, and what of theirs was
    credited to them."""
    rows = Impression.objects.filter(store=store, user_id__in=identities).order_by("served_at")
    credited = Attribution.objects.filter(store=store, user_id__in=identities).order_by("event_id")
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
        ],
        "attributions": [
            {
                "recommendation_id": row.recommendation_id,
                "kind": row.kind,
                "surface": row.surface,
                "product_id": row.product_id,
                "position": row.position,
                "revenue": float(row.revenue),
                "date": row.date,
            }
            for row in credited
        ],
    }


def _figures(counts: dict[str, Any]) -> dict[str, Any]:
    """The rates of a set of counts: null where there were no impressions to divide by."""
    impressions = counts["impressions"]
    revenue = Decimal(counts["revenue"])
    figures: dict[str, Any] = {name: int(counts[name]) for name in COUNTS}
    figures.update(
        ctr=counts["clicks"] / impressions if impressions else None,
        # of the answers reported really shown (`impression` events), the clicks (on any answer) per one
        shown_ctr=counts["clicks"] / counts["shown"] if counts["shown"] else None,
        conversion_rate=counts["purchases"] / impressions if impressions else None,
        revenue=float(round(revenue, 2)),
        revenue_per_mille=float(round(revenue * 1000 / impressions, 4)) if impressions else None,
        view_through_revenue=float(round(Decimal(counts["view_through_revenue"]), 2)),
    )
    return figures


def analytics(
    *, store: Store, start: date, end: date, surface: str | None = None, variant: str | None = None
) -> dict[str, Any]:
    """The store's figures per day (UTC), surface and variant from `start` to `end` (both included), and
    their totals."""
    rows = DailyMetric.objects.filter(store=store, date__gte=start, date__lte=end)
    if surface:
        rows = rows.filter(surface=surface)
    if variant is not None:
        rows = rows.filter(variant=variant)
    totals: dict[str, Any] = dict.fromkeys(COUNTS, 0) | dict.fromkeys(AMOUNTS, Decimal(0))
    series = []
    for row in rows.order_by("date", "surface", "variant"):
        counts = {name: getattr(row, name) for name in (*COUNTS, *AMOUNTS)}
        for name, value in counts.items():
            totals[name] += value
        series.append({"date": row.date, "surface": row.surface, "variant": row.variant, **_figures(counts)})
    return {"start": start, "end": end, "series": series, "totals": _figures(totals)}
