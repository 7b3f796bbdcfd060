"""The shopper's own events: recently viewed, and what they buy on a cycle that is due again."""

from __future__ import annotations

from django.utils import timezone

from events.selectors import buy_again, recently_viewed, user_identities
from recommendations.serving.pipeline import Answer
from tenants.models import Store


def recently_viewed_answer(*, store: Store, user_id: str, limit: int) -> Answer:
    identities = user_identities(store=store, user_id=user_id)
    viewed = recently_viewed(store=store, identities=identities, limit=limit)
    items = [
        {
            "id": item["id"],
            "score": round(1.0 / (rank + 1), 6),
            "reason": f"viewed {item['last_seen']:%Y-%m-%d %H:%M}",
        }
        for rank, item in enumerate(viewed)
    ]
    return Answer("history:recently-viewed", items)


def buy_again_answer(*, store: Store, user_id: str, limit: int) -> Answer:
    identities = user_identities(store=store, user_id=user_id)
    due = buy_again(store=store, identities=identities, limit=limit, now=timezone.now())
    items = [
        {
            "id": item["id"],
            "score": item["score"],
            "reason": f"you buy it about every {item['cycle_days']:g} days",
        }
        for item in due
    ]
    return Answer("history:buy-again", items)
