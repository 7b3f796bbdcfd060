"""A generated demo store: a catalog with categories and brands, and shoppers whose tastes follow
hidden category preferences, so that recommendations on the demo have structure to find.
Everything goes through the same services as the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from catalog.services import product_bulk_upsert
from events.services import event_ingest
from tenants.models import Store
from tenants.services import IssuedKey, store_create

CATEGORIES = {
    "Skin care": ["Moisturiser", "Serum", "Cleanser", "Sunscreen"],
    "Hair": ["Shampoo", "Conditioner", "Hair oil", "Hair mask"],
    "Make-up": ["Lipstick", "Mascara", "Foundation", "Eyeliner"],
    "Fragrance": ["Eau de parfum", "Body mist", "Cologne"],
    "Bath": ["Shower gel", "Bath salts", "Soap bar"],
    "Tools": ["Brush set", "Hair dryer", "Razor", "Mirror"],
}
BRANDS = ["Aurora", "Bloom", "Cedar", "Dune", "Ember", "Fjord", "Glow", "Haven"]
ADJECTIVES = ["Gentle", "Daily", "Intense", "Fresh", "Rich", "Light", "Pure", "Velvet", "Classic", "Bright"]


def demo_catalog(*, products: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    categories = list(CATEGORIES.items())
    rows = []
    for index in range(products):
        top, subs = categories[index % len(categories)]
        sub = subs[int(rng.integers(len(subs)))]
        brand = BRANDS[int(rng.integers(len(BRANDS)))]
        adjective = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
        rows.append(
            {
                "id": f"SKU-{index:05d}",
                "title": f"{brand} {adjective} {sub}",
                "description": f"A {adjective.lower()} {sub.lower()} by {brand} for everyday {top.lower()}.",
                "category_path": [top, sub],
                "brand": brand,
                "price": round(float(rng.lognormal(3.0, 0.6)), 2),
                "currency": "USD",
                "in_stock": bool(rng.random() > 0.05),
                "attributes": {"size": ["S", "M", "L"][int(rng.integers(3))]},
            }
        )
    return rows


def demo_events(
    *,
    catalog: list[dict[str, Any]],
    users: int,
    events_per_user: int,
    seed: int = 7,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Each user prefers one or two top categories and a couple of brands; sessions of views lead to
    carts and purchases; some items are bought together (the same brand's line in one category)."""
    rng = np.random.default_rng(seed)
    now = now or datetime.now(tz=UTC)
    by_category: dict[str, list[int]] = {}
    for index, row in enumerate(catalog):
        by_category.setdefault(row["category_path"][0], []).append(index)
    top_names = list(by_category)
    # popularity within a category follows a power law, as in real shops
    weights = {name: 1.0 / np.arange(1, len(items) + 1) ** 0.8 for name, items in by_category.items()}
    events: list[dict[str, Any]] = []
    for user in range(users):
        liked = rng.choice(len(top_names), size=int(rng.integers(1, 3)), replace=False)
        start = now - timedelta(days=float(rng.uniform(1, 60)))
        for step in range(events_per_user):
            name = (
                top_names[int(rng.choice(liked))] if rng.random() < 0.85 else top_names[int(rng.integers(6))]
            )
            items = by_category[name]
            p = weights[name] / weights[name].sum()
            item = items[int(rng.choice(len(items), p=p))]
            moment = start + timedelta(minutes=step * float(rng.uniform(1, 90)))
            if moment > now:
                moment = now - timedelta(seconds=float(rng.uniform(1, 3600)))
            kind = "view"
            roll = rng.random()
            if roll < 0.08:
                kind = "purchase"
            elif roll < 0.2:
                kind = "add_to_cart"
            events.append(
                {
                    "event_id": f"demo-{user}-{step}",
                    "user_id": f"user-{user:04d}",
                    "session_id": f"s-{user}-{step // 8}",
                    "product_id": catalog[item]["id"],
                    "type": kind,
                    "quantity": 1,
                    "price": catalog[item]["price"],
                    "channel": ["web", "app", "in_store"][int(rng.choice(3, p=[0.6, 0.3, 0.1]))],
                    "timestamp": moment.isoformat(),
                }
            )
    return events


def demo_store_create(
    *, slug: str = "demo", products: int = 1500, users: int = 800, events_per_user: int = 40
) -> tuple[Store, IssuedKey]:
    store, issued = store_create(slug=slug, name="Demo beauty shop")
    catalog = demo_catalog(products=products)
    for start in range(0, len(catalog), 5000):
        product_bulk_upsert(store=store, rows=catalog[start : start + 5000])
    events = demo_events(catalog=catalog, users=users, events_per_user=events_per_user)
    for start in range(0, len(events), 10_000):
        event_ingest(store=store, payload=events[start : start + 10_000])
    return store, issued
