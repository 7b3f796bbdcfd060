"""A/B experiments as serving sees them: which strategy a shopper gets on a surface.

The experiments themselves (their rows, API and results) belong to outcomes/; serving may not import it,
so outcomes registers here the function that finds a store's plan for a surface, and serving asks here.
A plan is either a running experiment (each shopper assigned a variant by a deterministic hash of the
experiment and the shopper's canonical id, so every alias of a shopper gets the same variant) or, after
an experiment was promoted, the winning variant's config as the surface's default (no variant named)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Variant:
    name: str
    traffic: float  # its share of the shoppers; a plan's shares add up to 1
    # {"strategy": "model" | "popularity", "model_version": N, "ranker": bool, "diversity": 0..1,
    # "max_per_category": N}
    config: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    experiment_id: int
    surface: str
    variants: tuple[Variant, ...]
    running: bool  # False: a promoted variant, the surface's default now (its only variant)


def assign(plan: Plan, shopper: str) -> Variant:
    """The shopper's variant: where the hash of (experiment, shopper) falls among the traffic shares."""
    if len(plan.variants) == 1:
        return plan.variants[0]
    digest = hashlib.sha256(f"{plan.experiment_id}:{shopper}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for variant in plan.variants:
        edge += variant.traffic
        if point < edge:
            return variant
    return plan.variants[-1]  # (shares that add up to a hair under 1)


# (store id, surface, the store's cache generation or None) -> the plan, or None
Provider = Callable[[int, str, bytes | None], Plan | None]
_provider: list[Provider] = []


def register(provider: Provider) -> None:
    _provider[:] = [provider]


def plan_for(store_id: int, surface: str, generation: bytes | None = None) -> Plan | None:
    return _provider[0](store_id, surface, generation) if _provider else None


# (store id, model version) -> None when the store can serve that version, else why it cannot. Registered
# by the app that owns the models, so that creating an experiment checks a variant's `model_version`.
VersionCheck = Callable[[int, int], str | None]
_version_check: list[VersionCheck] = []


def register_version_check(check: VersionCheck) -> None:
    _version_check[:] = [check]


def version_problem(store_id: int, version: int) -> str | None:
    return _version_check[0](store_id, version) if _version_check else "no models are known here"
