"""Answering a surface: its cache lookup (one Redis round trip, which also brings the shopper's profile
when the answer is not cached), then the cached body, or the answer computed from memory and kept for the
next request. The same function serves the WSGI fast path and the DRF views, so both answer alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

from core import answer_cache, experiments
from core.ids import time_ordered_id
from core.json import render_json
from core.params import query_int, query_text
from events.selectors import user_identities
from recommendations.serving.complementary import complementary
from recommendations.serving.complete_the_look import complete_the_look
from recommendations.serving.for_user import for_user
from recommendations.serving.history import buy_again_answer, recently_viewed_answer
from recommendations.serving.options import Options, options_from_query
from recommendations.serving.pipeline import Answer, answer_body, rendered
from recommendations.serving.related import related
from recommendations.serving.request import ServingRequest, serving_request
from recommendations.serving.trending import trending
from tenants.models import Store

Compute = Callable[[ServingRequest, Mapping[str, Any], dict[str, Any]], Answer]


@dataclass(frozen=True)
class Surface:
    """A cached surface: how its answer is computed, and what makes it stale."""

    name: str  # as analytics, experiments and pins name it
    compute: Compute  # (the request's state, the query, the URL's arguments) -> the answer
    per_shopper: bool = False  # keyed also by the shopper in the URL, whose new events make it stale
    with_profile: bool = False  # computed from the shopper's profile: the lookup brings it along
    ttl: int = answer_cache.TTL_SECONDS  # kept this long since last read ...
    slides: bool = True  # ... or, when False, since computed (answers that move with the clock)
    # query parameters the view handles itself (related's `scope`): a request with one is not served here
    view_parameters: frozenset[str] = frozenset()
    # the shopper may be named in the `user_id` query parameter (product surfaces and trending): the
    # answer is then theirs for experiments (their variant) and for impressions
    shopper_in_query: bool = False


def _limit(query: Mapping[str, Any]) -> int:
    return query_int(query.get("limit"), "limit", low=1, high=100, default=10) or 10


def _options(request: ServingRequest, query: Mapping[str, Any]) -> Options:
    options = options_from_query(query, request.settings)
    # an experiment's variant may set the diversity it is testing (over the request's and the store's)
    if "diversity" in request.variant_config:
        options.diversity = float(request.variant_config["diversity"])
    if "max_per_category" in request.variant_config:
        options.max_per_category = int(request.variant_config["max_per_category"])
    return options


SURFACES = {
    surface.name: surface
    for surface in (
        Surface(
            "for_user",
            lambda r, q, k: for_user(r, k["user_id"], _options(r, q)),
            per_shopper=True,
            with_profile=True,
        ),
        Surface(
            "related",
            lambda r, q, k: related(r, k["product_id"], _options(r, q)),
            view_parameters=frozenset({"scope"}),
            shopper_in_query=True,
        ),
        Surface(
            "complementary",
            lambda r, q, k: complementary(r, k["product_id"], _options(r, q)),
            shopper_in_query=True,
        ),
        Surface("trending", lambda r, q, k: trending(r, _options(r, q)), shopper_in_query=True),
        Surface(
            "complete_the_look",
            lambda r, q, k: complete_the_look(r, k["product_id"], _options(r, q)),
            shopper_in_query=True,
        ),
        Surface(
            "recently_viewed",
            lambda r, q, k: recently_viewed_answer(store=r.store, user_id=k["user_id"], limit=_limit(q)),
            per_shopper=True,
        ),
        # "due now" moves with the clock: kept a minute from when it was computed
        Surface(
            "buy_again",
            lambda r, q, k: buy_again_answer(store=r.store, user_id=k["user_id"], limit=_limit(q)),
            per_shopper=True,
            ttl=60,
            slides=False,
        ),
    )
}


@dataclass(frozen=True)
class Served:
    body: bytes  # the JSON answer, with its own recommendation id
    cached: bool


def answer_lookup(
    surface: Surface,
    store: Store,
    meta: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    bucket: tuple[str, int, int] | None = None,
    trusted_keys_generation: bytes | None = None,
) -> answer_cache.Lookup:
    """The cache's round trip for this request; `bucket`: a rate limit's token taken in it too. A cached
    answer's impression is appended in it as well (unless the keys generation is no longer
    `trusted_keys_generation`: the caller will not serve it)."""
    shopper = kwargs.get("user_id") if surface.per_shopper else None
    impression = answer_cache.Impression(
        time_ordered_id(), store.id, surface.name, shopper_of(surface, meta, kwargs), b""
    )
    return answer_cache.lookup(
        store,
        answer_cache.request_key(meta),
        user_id=shopper,
        slide=surface.ttl if surface.slides else 0,
        with_profile=surface.with_profile,
        bucket=bucket,
        impression=impression,
        trusted_keys_generation=trusted_keys_generation,
    )


def shopper_of(surface: Surface, meta: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str:
    """The shopper an answer is for: the URL's `user_id`, or (surfaces that take one) the query's; ""."""
    if "user_id" in kwargs:
        return str(kwargs["user_id"] or "")
    query_string = str(meta.get("QUERY_STRING", "")) if surface.shopper_in_query else ""
    if "user_id=" not in query_string:
        return ""
    values = parse_qs(query_string, keep_blank_values=True).get("user_id")
    return values[-1] if values else ""  # (the last, as Django's QueryDict reads it)


@dataclass(frozen=True)
class Assigned:
    """The experiment plan of a surface (None: none) and the shopper's variant in it (None: no shopper)."""

    plan: experiments.Plan | None = None
    variant: experiments.Variant | None = None

    @property
    def config(self) -> dict[str, Any] | None:
        return self.variant.config if self.variant is not None else None

    def named(self, answer: Answer) -> Answer:
        """Under a running experiment, the answer names its variant and experiment."""
        if self.variant is None or self.plan is None or not self.plan.running:
            return answer
        extra = {**(answer.extra or {}), "variant": self.variant.name, "experiment": self.plan.experiment_id}
        return replace(answer, extra=extra)


def assigned(store: Store, surface: str, shopper: str, generation: bytes | None = None) -> Assigned:
    """The shopper's variant on the surface: assigned by their canonical id, so that every alias gets the
    same one. Without a shopper there is no variant (a promoted variant is everyone's)."""
    plan = experiments.plan_for(store.id, surface, generation)
    if plan is None:
        return Assigned()
    if not plan.running:
        return Assigned(plan, plan.variants[0])
    if not shopper:
        return Assigned(plan)
    return Assigned(plan, experiments.assign(plan, user_identities(store=store, user_id=shopper)[0]))


def serve(
    surface: Surface,
    store: Store,
    meta: Mapping[str, Any],
    query: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    lookup: answer_cache.Lookup | None = None,
) -> Served:
    """The surface's answer for this request: cached, or computed (and cached). Errors (a bad option, an
    unknown product) raise ApiError before anything is kept."""
    if lookup is None:
        lookup = answer_lookup(surface, store, meta, kwargs)
    recommendation_id = lookup.recommendation_id or time_ordered_id()
    if lookup.body is not None:  # (the lookup appended the cached answer's impression itself)
        return Served(rendered(lookup.body, recommendation_id), cached=True)
    shopper = shopper_of(surface, meta, kwargs)
    if surface.shopper_in_query:
        shopper = query_text(shopper, "user_id", max_length=256) or ""
    if lookup.store_generation is None:
        lookup = None  # the cache is off or down: nothing it said can be trusted
    chosen = assigned(store, surface.name, shopper, lookup.store_generation if lookup else None)
    answer = surface.compute(serving_request(store, lookup, chosen.config), query, dict(kwargs))
    answer = chosen.named(answer)
    body = answer_body(answer)
    impression = answer_cache.Impression(recommendation_id, store.id, surface.name, shopper, body)
    answer_cache.put(lookup.key if lookup is not None else None, body, ttl=surface.ttl, impression=impression)
    return Served(rendered(body, recommendation_id), cached=False)


def recorded(store: Store, surface: str, user_id: str | None, answer: Answer) -> bytes:
    """An answer served outside `serve` (rank), recorded as an impression, rendered."""
    body = answer_body(answer)
    recommendation_id = time_ordered_id()
    _record(store, surface, user_id, recommendation_id, body)
    return rendered(body, recommendation_id)


def recorded_dict(store: Store, surface: str, user_id: str | None, answer: dict[str, Any]) -> dict[str, Any]:
    """An answer built as a dict with its recommendation id (network related), recorded as an impression."""
    body = render_json({key: value for key, value in answer.items() if key != "recommendation_id"})
    _record(store, surface, user_id, answer["recommendation_id"], body)
    return answer


def _record(store: Store, surface: str, user_id: str | None, recommendation_id: str, body: bytes) -> None:
    impression = answer_cache.Impression(recommendation_id, store.id, surface, user_id or "", body)
    answer_cache.put(None, b"", impression=impression)
