"""Reads for stores and keys."""

from __future__ import annotations

import hmac
from typing import Any

from core import rate_limit, tenancy
from core.errors import NotFound
from tenants.models import ApiKey, Store, StoreSettings
from tenants.services import hash_secret, split_raw_key


def api_key_get_by_raw_key(*, raw_key: str) -> ApiKey | None:
    """The live key for a raw bearer token, with its store loaded; None when unknown or revoked."""
    parts = split_raw_key(raw_key)
    if parts is None:
        return None
    prefix, secret = parts
    # the store's settings ride along: every recommendation request reads them. Which store the key is
    # of is what this lookup finds out: the one query of a request made across the stores.
    with tenancy.all_stores():
        key = ApiKey.objects.select_related("store", "store__settings").filter(prefix=prefix).first()
    if key is None or not key.is_live():
        return None
    if not hmac.compare_digest(key.hashed_secret, hash_secret(secret)):
        return None
    return key


def store_settings_get(*, store: Store) -> StoreSettings:
    """The store's settings; no query when they were loaded with the store (authentication does)."""
    try:
        return store.settings
    except StoreSettings.DoesNotExist:
        settings, _ = StoreSettings.objects.get_or_create(store=store)
        return settings


def store_to_dict(*, store: Store) -> dict:
    settings = store_settings_get(store=store)
    return {
        "id": store.slug,
        "name": store.name,
        "currency": store.currency,
        "created_at": store.created_at,
        "settings": {
            "share_network": settings.share_network,
            "include_purchased": settings.include_purchased,
            "default_filters": settings.default_filters,
            "diversity": settings.diversity,
            "blend_weights": settings.blend_weights,
            "pins": settings.pins,
            "boosts": settings.boosts,
            "event_weights": settings.event_weights,
            "retrain_interval_hours": settings.retrain_interval_hours,
            "attribution_window_hours": settings.attribution_window_hours,
            "compatibility": settings.compatibility or {},
            "retention_days": settings.retention_days,
            "training_window_days": settings.training_window_days,
        },
        "limits": store_limits(store=store),
    }


def store_limits(*, store: Store) -> dict[str, int]:
    """The limits that apply to the store (set by the operator, else the deployment's); 0: none."""
    rate, burst = rate_limit.limits(store)
    return {
        "rate_limit_per_second": rate,
        "rate_limit_burst": burst if rate else 0,
        "max_products": rate_limit.quota(store, "max_products"),
        "max_events_per_day": rate_limit.quota(store, "max_events_per_day"),
    }


def api_key_to_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "prefix": key.prefix,
        "name": key.name,
        "scopes": list(key.scopes),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "live": key.is_live(),
    }


def api_key_list(*, store: Store) -> list[ApiKey]:
    return list(ApiKey.objects.filter(store=store).select_related("store").order_by("-created_at", "-id"))


def api_key_get(*, store: Store, prefix: str) -> ApiKey:
    key = ApiKey.objects.filter(store=store, prefix=prefix).select_related("store").first()
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    return key


def retention_days(*, store_ids: list[int]) -> dict[int, int | None]:
    """Each store's retention in days (None: kept for good), for the events' archiving."""
    return dict(
        StoreSettings.objects.filter(store_id__in=store_ids).values_list("store_id", "retention_days")
    )
