"""Replay before traffic: a candidate model version evaluated on the store's last days of events, replayed
in order, against the active version, before any shopper sees it.

Each view, click, add-to-cart or purchase of the window is a target: the version is given the shopper's
events before it (at most a profile's worth, PROFILE_EVENTS, as serving reads them), answers for-user the
way serving does (the same scoring, purchased items left out unless the store includes them; popularity
for a shopper it cannot score), and scores a hit when the product the shopper went to is in its top 10.
A shopper's answer depends only on their own earlier events and a fixed model, so replaying each
shopper's events in order is replaying the window in order. Targets that repeat the event just before
them (a page reloaded) are skipped. Above `max_events` targets, a fixed-seed sample is replayed.

A version trained after some of the window's events has seen them: each version's `seen_in_training`
says what share of the replayed events is older than the version, and comparing two versions is fairest
where both shares are alike (a candidate trained today has seen the whole window)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from core import answer_cache
from core.errors import ApiError, NotFound
from events.models import EventType
from events.profiles import History
from events.selectors import ShopperEvents, events_of_recent_shoppers
from recommendations.models import ModelKind, TrainedModel
from recommendations.selectors import ActiveModelRow, trained_model_active, trained_model_version
from recommendations.serving.for_user import personal_ranked, personal_scores
from recommendations.serving.state import ServingModel, serving_state
from tenants.models import Store, StoreSettings
from tenants.selectors import store_settings_get

logger = logging.getLogger(__name__)
K = 10
MAX_DAYS = 90
DEFAULT_DAYS = 7
DEFAULT_MAX_EVENTS = 5000
MAX_EVENTS = 50_000
TARGET_TYPES = (EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE)
STALE_AFTER = timedelta(hours=2)  # a replay queued or running longer than this is taken as lost


def replay_request(*, store: Store, version: int, body: Any) -> TrainedModel:
    """Queue a replay of `version` (body: {"days": 1..90, "max_events": 100..50,000}, both optional); the
    task is sent once the request commits. A replay of the version still queued or running is a 409."""
    from recommendations.tasks import model_replay_task

    if not isinstance(body, dict) or set(body) - {"days", "max_events"}:
        raise ApiError("invalid", 'the body may hold {"days": 1..90, "max_events": 100..50000}')
    days = _whole(body.get("days", DEFAULT_DAYS), "days", 1, MAX_DAYS)
    max_events = _whole(body.get("max_events", DEFAULT_MAX_EVENTS), "max_events", 100, MAX_EVENTS)
    with transaction.atomic():
        model = (
            TrainedModel.objects.select_for_update()
            .filter(store=store, kind=ModelKind.STORE, version=version)
            .first()
        )
        if model is None:
            raise NotFound("no such model version")
        replay = model.replay or {}
        requested = replay.get("requested_at")
        if (
            replay.get("status") in ("queued", "running")
            and requested
            and timezone.now() - datetime.fromisoformat(requested) < STALE_AFTER
        ):
            raise ApiError(
                "replay_in_progress", f"a replay of version {version} is {replay['status']}", status_code=409
            )
        model.replay = {
            "status": "queued",
            "days": days,
            "max_events": max_events,
            "requested_at": timezone.now().isoformat(),
        }
        model.save(update_fields=["replay", "updated_at"])
        transaction.on_commit(lambda: model_replay_task.delay(model.pk))
    return model


def _whole(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError("invalid", f"{name} must be a whole number from {low} to {high}")
    return value


def replay_execute(*, model_id: int) -> dict[str, Any] | None:
    """Run the queued replay of a version and store its figures on it; None when there is none to run
    (delivered twice: the first delivery ran it)."""
    with transaction.atomic():
        model = TrainedModel.objects.select_for_update().filter(pk=model_id).select_related("store").first()
        if model is None or (model.replay or {}).get("status") != "queued":
            return None
        model.replay = {**model.replay, "status": "running", "started_at": timezone.now().isoformat()}
        model.save(update_fields=["replay", "updated_at"])
    request = dict(model.replay)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        TrainedModel.objects.filter(pk=model_id).update(
            replay={**request, "progress": round(done / max(total, 1), 3)}
        )

    try:
        figures = replay_versions(
            store=model.store,
            version=model.version,
            days=int(request["days"]),
            max_events=int(request["max_events"]),
            progress=progress,
        )
        result = {**request, **figures, "status": "succeeded"}
    except Exception as error:  # the replay fails, not the worker: its row says why
        logger.exception("replay of model %s failed", model_id)
        result = {**request, "status": "failed", "message": f"{type(error).__name__}: {error}"[:500]}
    result.pop("progress", None)
    result["seconds"] = round(time.monotonic() - started, 2)
    result["finished_at"] = timezone.now().isoformat()
    TrainedModel.objects.filter(pk=model_id).update(replay=result)
    answer_cache.changed(answer_cache.store_changed, model.store)  # (the dashboard shows it)
    return result


def replay_versions(
    *,
    store: Store,
    version: int,
    days: int,
    max_events: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The candidate `version` and the active version replayed on the last `days` of events."""
    candidate_row = trained_model_version(store_id=store.id, version=version)
    if candidate_row is None:
        raise NotFound(f"no trained model version {version}")
    active_row = trained_model_active(store=store)
    rows: dict[str, ActiveModelRow] = {"candidate": candidate_row}
    if active_row is not None and active_row.version != version:
        rows["active"] = active_row
    models: dict[str, ServingModel] = {}
    for name, row in rows.items():
        model = serving_state().residency.get(row)
        if model is None:
            raise ValueError(f"version {row.version}'s artifact cannot be read")
        models[name] = model
    since = datetime.now(tz=UTC) - timedelta(days=days)
    events = events_of_recent_shoppers(store=store, since=since, history=answer_cache.PROFILE_EVENTS)
    targets, total = _targets(events, since.timestamp(), max_events)
    settings = store_settings_get(store=store)
    figures = replay_models(models, settings, events, targets, progress=progress)
    out: dict[str, Any] = {
        "since": since.isoformat(),
        "events": int(targets.size),
        "events_in_window": total,
        "shoppers": int(np.unique(events.users[targets]).size) if targets.size else 0,
        "k": K,
    }
    for name, row in rows.items():
        created = row.created_at_us / 1_000_000
        seen = float(np.mean(events.timestamps[targets] <= created)) if targets.size else 0.0
        out[name] = {"version": row.version, **figures[name], "seen_in_training": round(seen, 4)}
    active = out.get("active")
    if active and active["ndcg@10"]:
        out["ndcg_lift_vs_active"] = round(out["candidate"]["ndcg@10"] / active["ndcg@10"] - 1, 4)
    return out


def _targets(events: ShopperEvents, since: float, max_events: int) -> tuple[np.ndarray, int]:
    """Indices of the window's target events (not a repeat of the shopper's event just before), and how
    many there were before sampling."""
    n = len(events.users)
    if n == 0:
        return np.zeros(0, np.int64), 0
    same_user = np.zeros(n, bool)
    same_user[1:] = events.users[1:] == events.users[:-1]
    repeat = np.zeros(n, bool)
    repeat[1:] = same_user[1:] & (events.product_ids[1:] == events.product_ids[:-1])
    wanted = (events.timestamps >= since) & np.isin(events.types, TARGET_TYPES) & ~repeat
    targets = np.flatnonzero(wanted)
    total = int(targets.size)
    if total > max_events:
        targets = np.sort(np.random.default_rng(0).choice(targets, size=max_events, replace=False))
    return targets, total


def replay_models(
    models: dict[str, ServingModel],
    settings: StoreSettings,
    events: ShopperEvents,
    targets: np.ndarray,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """HR@10, NDCG@10 and MRR@10 of each model's for-user answer before each target event."""
    n = len(events.users)
    starts = np.zeros(n, np.int64)  # the index of each event's shopper's first event
    if n:
        first = np.flatnonzero(np.r_[True, events.users[1:] != events.users[:-1]])
        starts = first[np.searchsorted(first, np.arange(n), side="right") - 1]
    sums = {name: np.zeros(3) for name in models}
    last_report = time.monotonic()
    for done, index in enumerate(targets.tolist()):
        begin = max(int(starts[index]), index - answer_cache.PROFILE_EVENTS)
        history = History(
            events.product_ids[begin:index], events.types[begin:index], events.sessions[begin:index]
        )
        wanted = int(events.product_ids[index])
        for name, model in models.items():
            answered = top_for_user(model, settings, history, K)
            hits = np.flatnonzero(answered == wanted)
            if hits.size:
                rank = int(hits[0])
                sums[name] += (1.0, 1.0 / math.log2(rank + 2), 1.0 / (rank + 1))
        if progress is not None and time.monotonic() - last_report > 2.0:
            progress(done, targets.size)
            last_report = time.monotonic()
    count = max(int(targets.size), 1)
    return {
        name: {
            "hit@10": round(float(total[0] / count), 5),
            "ndcg@10": round(float(total[1] / count), 5),
            "mrr@10": round(float(total[2] / count), 5),
        }
        for name, total in sums.items()
    }


def top_for_user(model: ServingModel, settings: StoreSettings, history: History, k: int) -> np.ndarray:
    """The internal ids of the model's top `k` for-user answer to this history, as serving orders it
    before filters and merchant rules: its personal scores (ordered by its ranking stage when it has one),
    else its trending."""
    include_purchased = settings.include_purchased
    excluded = (
        np.zeros(0, np.int64)
        if include_purchased
        else np.unique(history.product_ids[history.types == EventType.PURCHASE])
    )
    wanted = k + excluded.size
    personal = personal_scores(
        settings, model, history, include_purchased=include_purchased, boosts=model.ranker is None
    )
    if personal is None:
        ids = model.products.ids[model.popularity_order[:wanted]]
    else:
        ranked = personal_ranked(model, personal, "", ranker=True, include_purchased=include_purchased)
        ids, _ = ranked.window(0, wanted)
    if excluded.size:
        ids = ids[~np.isin(ids, excluded)]
    return ids[:k]
