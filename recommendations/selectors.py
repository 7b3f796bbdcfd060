"""Reads of the recommendations app's own tables: training runs and model versions (serving reads the
active version through `trained_model_active`), and the event-type weights every scorer shares."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from core.db.binary import binary_first
from core.errors import NotFound
from events.models import EventType
from recommendations.engine.interactions import DEFAULT_EVENT_WEIGHTS
from recommendations.models import ModelKind, TrainedModel, TrainingRun
from tenants.models import Store


def event_type_weights(overrides: dict[str, Any] | None) -> np.ndarray:
    """The weight of each event type, indexed by its stored value: the defaults with the store's
    overrides (StoreSettings.event_weights). Training, global training and serving all read it."""
    return _event_type_weights(tuple(sorted((overrides or {}).items()))).copy()


@lru_cache(maxsize=1024)
def _event_type_weights(overrides: tuple[tuple[str, Any], ...]) -> np.ndarray:
    merged = {**DEFAULT_EVENT_WEIGHTS, **dict(overrides)}
    weights = np.ones(max(EventType.values) + 1, dtype=np.float32)
    for value, label in EventType.choices:
        weights[value] = float(merged.get(label, 1.0))
    return weights


@dataclass(frozen=True)
class ActiveModelRow:
    """The store's active model version, without its artifact."""

    store_id: int
    model_id: int
    version: int
    parameters: dict[str, Any]
    created_at_us: int

    @property
    def cache_name(self) -> str:
        """Its folder in the local file cache: the id and creation time name one version of one database."""
        return f"{self.model_id}-{self.created_at_us}"


def _model_row(store_id: int, rows: Any) -> ActiveModelRow | None:
    """The first of these TrainedModel rows, without its artifact."""
    row = rows.values_list("id", "version", "parameters", "created_at").first()
    if row is None:
        return None
    model_id, version, parameters, created_at = row
    return ActiveModelRow(
        store_id, model_id, version, parameters or {}, int(created_at.timestamp() * 1_000_000)
    )


def trained_model_active(*, store: Store, kind: str = ModelKind.STORE) -> ActiveModelRow | None:
    return _model_row(store.id, TrainedModel.objects.filter(store=store, kind=kind, is_active=True))


def trained_model_version(*, store_id: int, version: int) -> ActiveModelRow | None:
    """A version of the store's own model, active or not (an experiment's variant may serve one)."""
    rows = TrainedModel.objects.filter(store_id=store_id, kind=ModelKind.STORE, version=version)
    return _model_row(store_id, rows.exclude(artifact_bytes=0))


def model_version_problem(store_id: int, version: int) -> str | None:
    """Why an experiment's variant cannot serve this version of the store's model (None: it can)."""
    if trained_model_version(store_id=store_id, version=version) is None:
        return f"the store has no trained model version {version}"
    return None


def trained_model_artifact(*, row: ActiveModelRow) -> bytes | None:
    """The artifact of the version `row` names, read within its store."""
    return binary_first(TrainedModel.objects.filter(store_id=row.store_id, pk=row.model_id), "artifact")


def training_run_get(*, store: Store, run_id: int) -> TrainingRun:
    run = (
        TrainingRun.objects.filter(store=store, pk=run_id)
        .select_related("model")
        .defer(*(f"model__{name}" for name in TrainedModel.LARGE_FIELDS))
        .first()
    )
    if run is None:
        raise NotFound("no such training run")
    return run


def training_run_to_dict(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "progress": round(run.progress, 3),
        "message": run.message,
        "trigger": run.trigger,
        "options": run.options or {},
        "metrics": run.metrics,
        "parameters": run.parameters,
        "model_version": run.model.version if run.model else None,
        "model_active": bool(run.model and run.model.is_active),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def trained_model_list(*, store: Store) -> list[dict[str, Any]]:
    rows = TrainedModel.objects.filter(store=store).order_by("-version").values(
        "version", "kind", "is_active", "metrics", "parameters", "n_items", "n_users", "n_events",
        "artifact_bytes", "created_at", "activated_at", "replay",
    )  # fmt: skip
    return [dict(row) for row in rows]


def training_run_list(*, store: Store, limit: int = 20) -> list[TrainingRun]:
    return list(TrainingRun.objects.filter(store=store).order_by("-created_at")[:limit])
