"""Serving processes keep recently used API keys in memory (tenants/authentication.py). Any change to a
key, a store or its settings, from the API, the admin or a shell, bumps the store's keys generation once
committed, so no process trusts what it remembered of the store's keys before the change. A change to a
store or its settings also bumps the store's generation: its answers, and what serving processes loaded
for it, are stale."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from core import answer_cache
from tenants.models import ApiKey, Store, StoreSettings


def _keys_changed(sender: Any, **kwargs: Any) -> None:
    instance = kwargs.get("instance")
    try:
        store = instance if isinstance(instance, Store) else getattr(instance, "store", None)
    except Store.DoesNotExist:  # a key deleted after its store: the store's own deletion bumped it
        return
    if isinstance(store, Store):
        # a store's row going (its erasure): its keys generation goes too, rather than moving on (a lookup
        # would start it again at the time in µs, which no remembered generation equals)
        gone = sender is Store and kwargs.get("signal") is post_delete
        answer_cache.changed(answer_cache.keys_forget if gone else answer_cache.keys_changed, store)
    # (a deleted store's rows going has no answers to make stale: its Redis keys are erased with it)
    if sender is not ApiKey and isinstance(store, Store) and store.deleted_at is None:
        answer_cache.changed(answer_cache.store_changed, store)


def connect() -> None:
    for model in (ApiKey, Store, StoreSettings):
        post_save.connect(_keys_changed, sender=model, dispatch_uid=f"keys-changed-save-{model.__name__}")
        post_delete.connect(_keys_changed, sender=model, dispatch_uid=f"keys-changed-delete-{model.__name__}")
