"""The shopper's latest events for a computed answer: the real-time profile that the request's cache
lookup brought along, else the events table (and the profile kept in Redis for the next answer)."""

from __future__ import annotations

from core import answer_cache
from events.profiles import History, profile_entry
from events.selectors import user_history
from tenants.models import Store


def history_get(*, store: Store, user_id: str, lookup: answer_cache.Lookup | None) -> History:
    if lookup is not None and lookup.profile is not None:
        return History.from_records(lookup.profile)
    rows = user_history(store=store, user_id=user_id, limit=answer_cache.PROFILE_EVENTS)
    entries = [profile_entry(r.id, r.product_id, r.type, r.session_id, r.timestamp) for r in rows]
    if lookup is not None and lookup.shopper_generation is not None:
        answer_cache.profile_store(store, user_id, lookup.shopper_generation, entries)
    return History.from_entries(entries)
