"""What one request serves from: the store, its settings, its loaded model and catalog, and the cache
lookup made for it (which may have brought the shopper's profile). Passed to every surface as an
argument; nothing carries it implicitly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core import answer_cache
from recommendations.serving.state import CatalogSource, Loaded, ServingModel, serving_state
from tenants.models import Store, StoreSettings
from tenants.selectors import store_settings_get


@dataclass(frozen=True)
class ServingRequest:
    store: Store
    settings: StoreSettings
    loaded: Loaded
    lookup: answer_cache.Lookup | None = None
    # an experiment's variant (core/experiments.py): {"strategy", "model_version", "diversity",
    # "max_per_category"}
    variant_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        return str(self.variant_config.get("strategy", "model"))

    @property
    def model(self) -> ServingModel | None:
        return self.loaded.model

    @property
    def catalog(self) -> CatalogSource:
        return self.loaded.catalog


def serving_request(
    store: Store, lookup: answer_cache.Lookup | None = None, variant_config: Mapping[str, Any] | None = None
) -> ServingRequest:
    """The request's state at the store generation its lookup read (none: read from SQL)."""
    generation = lookup.store_generation if lookup is not None else None
    config = dict(variant_config or {})
    version = config.get("model_version")
    return ServingRequest(
        store,
        store_settings_get(store=store),
        serving_state().loaded(store, generation, int(version) if version is not None else None),
        lookup,
        config,
    )
