"""Writes for stores, API keys and settings."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core import answer_cache, erasure, rate_limit
from core.errors import ApiError
from core.observability import actor_var, request_id_var
from core.validation import RowError, without_nul
from tenants.models import ApiKey, ApiKeyScope, AuditEntry, Store, StoreSettings

KEY_PREFIX = "rk_"


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


def hash_secret(secret: str) -> str:
    # The secret is 32 random bytes, so a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(secret.encode()).hexdigest()


def split_raw_key(raw_key: str) -> tuple[str, str] | None:
    """`rk_<prefix>_<secret>` -> (prefix, secret), or None when it is not shaped like a key."""
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    prefix, _, secret = raw_key[len(KEY_PREFIX) :].partition("_")
    if len(prefix) != 12 or not secret:
        return None
    return prefix, secret


def audit_record(*, store: Store | None, action: str, target: str = "", changes: dict | None = None) -> None:
    """An entry of the audit log, naming the actor of this request or task (core.observability.actor_var)."""
    AuditEntry.objects.create(
        store=store,
        store_slug=store.slug if store is not None else "",
        actor=actor_var.get()[:200],
        action=action,
        target=target[:200],
        changes=changes or {},
        request_id=request_id_var.get()[:64] if request_id_var.get() != "-" else "",
    )


def api_key_issue(
    *,
    store: Store,
    name: str = "default",
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey:
    scopes = scopes or [ApiKeyScope.READ, ApiKeyScope.WRITE, ApiKeyScope.ADMIN]
    unknown = set(scopes) - set(ApiKeyScope.values)
    if unknown:
        raise ApiError("invalid_scope", f"unknown scopes: {sorted(unknown)}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        key = ApiKey.objects.create(
            store=store,
            name=name,
            prefix=prefix,
            hashed_secret=hash_secret(secret),
            scopes=list(scopes),
            expires_at=expires_at,
        )
        audit_record(
            store=store,
            action="key_issued",
            target=prefix,
            changes={"name": name, "scopes": list(scopes), "expires_at": _iso(expires_at)},
        )
    return IssuedKey(api_key=key, raw_key=f"{KEY_PREFIX}{prefix}_{secret}")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def api_key_revoke(*, store: Store, api_key: ApiKey) -> ApiKey:
    if api_key.store_id != store.id:
        raise ApiError("not_found", "not found", status_code=404)
    if api_key.revoked_at is None:
        with transaction.atomic():
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at", "updated_at"])
            audit_record(store=store, action="key_revoked", target=api_key.prefix)
    return api_key


MAX_ROTATION_OVERLAP_HOURS = 24 * 30


def api_key_rotate(*, store: Store, api_key: ApiKey, overlap_hours: float = 24) -> IssuedKey:
    """A new key with the same name and scopes; the old one keeps working for `overlap_hours` (0: stops
    now), so that every client can move to the new one before it ends."""
    if api_key.store_id != store.id or not api_key.is_live():
        raise ApiError("not_found", "no live key with this prefix", status_code=404)
    if isinstance(overlap_hours, bool) or not isinstance(overlap_hours, int | float):
        raise ApiError("invalid", "overlap_hours must be a number")
    if not 0 <= overlap_hours <= MAX_ROTATION_OVERLAP_HOURS:
        raise ApiError("invalid", f"overlap_hours must be between 0 and {MAX_ROTATION_OVERLAP_HOURS}")
    with transaction.atomic():
        issued = api_key_issue(store=store, name=api_key.name, scopes=list(api_key.scopes))
        ends = timezone.now() + timedelta(hours=overlap_hours)
        if api_key.expires_at is None or api_key.expires_at > ends:
            api_key.expires_at = ends
            api_key.save(update_fields=["expires_at", "updated_at"])
        audit_record(
            store=store,
            action="key_rotated",
            target=api_key.prefix,
            changes={"replaced_by": issued.api_key.prefix, "expires_at": _iso(api_key.expires_at)},
        )
    return issued


TOUCH_EVERY_SECONDS = 60  # a key's use is recorded at most this often


def api_key_touch(*, api_key: ApiKey) -> None:
    """Record use at most once a minute, so that reads do not turn into writes."""
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > TOUCH_EVERY_SECONDS:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


@transaction.atomic
def store_create(*, slug: str, name: str | None = None, currency: str = "USD") -> tuple[Store, IssuedKey]:
    """A store, its settings and its first (admin-scoped) API key."""
    try:
        with transaction.atomic():
            store = Store.objects.create(slug=slug, name=name or slug, currency=currency)
    except IntegrityError as exc:
        raise ApiError("store_exists", f"a store with slug {slug!r} already exists") from exc
    StoreSettings.objects.create(store=store)
    return store, api_key_issue(store=store, name="initial")


CURRENCY = re.compile(r"[A-Za-z]{3}")  # ISO 4217 (stored upper-cased: only ASCII keeps three letters)
SETTINGS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "share_network": bool,
    "include_purchased": bool,
    "default_filters": dict,
    "diversity": dict,
    "blend_weights": dict,
    "pins": dict,
    "boosts": dict,
    "event_weights": dict,
    "retrain_interval_hours": int,
    "attribution_window_hours": int,
    "compatibility": dict,
    "retention_days": (int, type(None)),
    "training_window_days": (int, type(None)),
}
HOURS_FIELDS = ("retrain_interval_hours", "attribution_window_hours")
DAYS_FIELDS = ("retention_days", "training_window_days")  # null: none
MAX_DAYS = 36_500


def _pins_problem(pins: dict[str, Any]) -> str | None:
    """Serving reads pins as {"<surface>" or "*": [{"id": "<product id>", "position": <int >= 0>}]}."""
    for surface, entries in pins.items():
        if not isinstance(entries, list):
            return f"pins[{surface!r}] must be a list of {{'id', 'position'}} objects"
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                return f"each pin of {surface!r} needs a string id"
            position = entry.get("position", 0)
            if isinstance(position, bool) or not isinstance(position, int) or position < 0:
                return f"the position of pin {entry['id']!r} must be an integer >= 0"
    return None


def _boosts_problem(boosts: dict[str, Any]) -> str | None:
    """Serving multiplies scores by {"brand" | "category" | "product": {"<value>": <number > 0>}}."""
    for kind, factors in boosts.items():
        if kind not in {"brand", "category", "product"}:
            return f"boosts may be by brand, category or product, not {kind!r}"
        if not isinstance(factors, dict):
            return f"boosts[{kind!r}] must map values to factors"
        for value, factor in factors.items():
            if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor <= 1e6:
                return f"the boost of {kind} {value!r} must be a number above 0"
    return None


def _event_weights_problem(weights: dict[str, Any]) -> str | None:
    """Training and serving read {"<event type>": <number >= 0>}."""
    from events.models import EVENT_TYPE_BY_NAME

    for name, weight in weights.items():
        if name not in EVENT_TYPE_BY_NAME:
            return f"unknown event type {name!r}; known: {', '.join(EVENT_TYPE_BY_NAME)}"
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1e6:
            return f"the weight of {name!r} must be a number >= 0"
    return None


def _blend_weights_problem(weights: dict[str, Any]) -> str | None:
    """Training reads {"global": <share of the global model, 0 to 1>}; without it the share is chosen on
    the store's validation split."""
    for name, share in weights.items():
        if name != "global":
            return f"blend_weights takes only 'global' (the share of the global model), not {name!r}"
        if share is not None and (
            isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1
        ):
            return "blend_weights.global must be a number from 0 to 1, or null to choose it on validation"
    return None


MAX_RULES = 1000


def _compatibility_problem(rules: dict[str, Any]) -> str | None:
    """Complete-the-look reads {"<category>": ["<category>", ...] (added) or {"add": [...], "forbid":
    [...]}}: category names as products' category paths hold them."""
    if len(rules) > MAX_RULES:
        return f"at most {MAX_RULES} categories"

    def names_problem(names: Any, where: str) -> str | None:
        if not isinstance(names, list) or len(names) > 100:
            return f"{where} must be a list of at most 100 category names"
        if not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names):
            return f"{where} must hold category names of 1 to 200 characters"
        return None

    for category, rule in rules.items():
        if len(category) > 200:  # (NUL became U+FFFD, as in every free-form setting)
            return "category names are at most 200 characters"
        if isinstance(rule, dict):
            if set(rule) - {"add", "forbid"}:
                return f"compatibility[{category!r}] may hold 'add' and 'forbid'"
            for part in ("add", "forbid"):
                if part in rule and (
                    problem := names_problem(rule[part], f"compatibility[{category!r}].{part}")
                ):
                    return problem
        elif problem := names_problem(rule, f"compatibility[{category!r}]"):
            return problem
    return None


SHAPE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "compatibility": _compatibility_problem,
    "pins": _pins_problem,
    "boosts": _boosts_problem,
    "event_weights": _event_weights_problem,
    "blend_weights": _blend_weights_problem,
}


def _integral(settings_data: dict[str, Any]) -> dict[str, Any]:
    """Numbers JSON calls integers (5.0 is one) as Python ints: the hours, and pins' positions."""
    for field in (*HOURS_FIELDS, *DAYS_FIELDS):
        hours = settings_data.get(field)
        if isinstance(hours, float) and hours.is_integer():
            settings_data[field] = int(hours)
    pins = settings_data.get("pins")
    if isinstance(pins, dict):
        for entries in pins.values():
            for entry in entries if isinstance(entries, list) else []:
                position = entry.get("position") if isinstance(entry, dict) else None
                if isinstance(position, float) and position.is_integer():
                    entry["position"] = int(position)
    return settings_data


def _settings_problems(settings_data: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for field, value in settings_data.items():
        expected = SETTINGS_FIELDS.get(field)
        if expected is None:
            errors[field] = "unknown setting"
        elif field in DAYS_FIELDS:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS
            ):
                errors[field] = f"must be an integer from 1 to {MAX_DAYS}, or null for none"
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors[field] = f"must be of type {expected.__name__}"  # type: ignore[union-attr]
        elif field in HOURS_FIELDS and not 1 <= value <= 24 * 365:  # type: ignore[operator]
            errors[field] = "must be between 1 and 8760"
        elif field in SHAPE_CHECKS and (problem := SHAPE_CHECKS[field](value)):
            errors[field] = problem
    return errors


def store_update(*, store: Store, data: dict[str, Any]) -> Store:
    """PATCH semantics: `name`, `currency` and any key of `settings`; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ApiError("invalid", "the body must be a JSON object")
    unknown = set(data) - {"name", "currency", "settings", *SETTINGS_FIELDS}
    if unknown:
        raise ApiError("unknown_field", f"unknown fields: {sorted(unknown)}", details=sorted(unknown))
    if "settings" in data and not isinstance(data["settings"], dict):
        raise ApiError("invalid", "invalid store settings", details={"settings": "must be an object"})
    try:  # (jsonb holds no NUL: free-form settings keep U+FFFD instead, as product attributes do)
        nested = _integral(without_nul(dict(data.get("settings") or {}), "settings"))
        top_level = _integral(
            without_nul({k: v for k, v in data.items() if k in SETTINGS_FIELDS}, "settings")
        )
    except RowError as error:
        raise ApiError("invalid", "invalid store settings", details={"settings": error.message}) from error
    settings_data = {**nested, **top_level}
    errors: dict[str, str] = {}
    name, currency = data.get("name"), data.get("currency")
    if "name" in data and (not isinstance(name, str) or not 0 < len(name) <= 200 or "\x00" in name):
        errors["name"] = "must be a string of 1 to 200 characters, without NUL"
    if "currency" in data and (not isinstance(currency, str) or not CURRENCY.fullmatch(currency)):
        errors["currency"] = "must be a three-letter ISO 4217 code"
    for source in (nested, top_level):  # each checked (the top level's value wins)
        errors.update(_settings_problems(source))
    if errors:
        raise ApiError("invalid", "invalid store settings", details=errors)
    with transaction.atomic():
        changes: dict[str, Any] = {}
        if "name" in data and data["name"] != store.name:
            changes["name"] = [store.name, data["name"]]
            store.name = data["name"]
        if "currency" in data and data["currency"].upper() != store.currency:
            changes["currency"] = [store.currency, data["currency"].upper()]
            store.currency = data["currency"].upper()
        store.save()
        store_settings, _ = StoreSettings.objects.get_or_create(store=store)
        for field, value in settings_data.items():
            if getattr(store_settings, field) != value:
                changes[field] = [getattr(store_settings, field), value]
            setattr(store_settings, field, value)
        store_settings.save()
        if changes:
            audit_record(store=store, action="store_updated", changes=changes)
        store.settings = store_settings  # what was loaded with the store is stale now
        answer_cache.changed(answer_cache.store_changed, store)
    return store


def store_delete(*, store: Store) -> Store:
    """Delete a store: inactive at once (its keys stop working everywhere: the keys generation moves on
    commit), then a worker erases every row of every app, its vectors and artifacts, and its Redis keys
    (store_erase). Idempotent."""
    from tenants.tasks import store_erase_task

    with transaction.atomic():
        if store.deleted_at is None:
            store.deleted_at = timezone.now()
            audit_record(store=store, action="store_deleted", target=store.slug)
        store.is_active = False
        store.save(update_fields=["deleted_at", "is_active", "updated_at"])
        transaction.on_commit(lambda: store_erase_task.delay(store.id))
    return store


def store_erase(*, store_id: int) -> dict[str, int] | None:
    """Erase a deleted store for good: every app's rows (core/erasure.py), its Redis keys, then its keys,
    settings and row. Only a store that store_delete marked deleted; safe to run twice (None: gone)."""
    store = Store.objects.filter(pk=store_id).first()
    if store is None:
        return None
    if store.deleted_at is None:
        raise ApiError("store_not_deleted", f"store {store.slug!r} was not deleted; refusing to erase it")
    deleted = erasure.store_erase(store.id)
    bucket_keys = [rate_limit.bucket_key(key) for key in ApiKey.objects.filter(store=store)]
    answer_cache.store_forget(store, bucket_keys)
    deleted["api_keys"] = ApiKey.objects.filter(store=store).count()
    store.delete()  # its keys and settings go with it
    return deleted
