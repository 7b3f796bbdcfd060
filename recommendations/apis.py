"""Thin views: recommendation surfaces, training runs and model versions."""

from __future__ import annotations

from typing import Any, ClassVar

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import ApiError
from core.json import json_body, json_body_or_empty
from core.observability import answer_cache_counter
from recommendations import schemas, selectors
from recommendations.network import related_network
from recommendations.replay import replay_request
from recommendations.schemas import FILTER_PARAMETERS, SHOPPER_PARAMETER
from recommendations.services import (
    trained_model_activate,
    training_options_clean,
    training_run_create,
)
from recommendations.serving.answers import SURFACES, Surface, assigned, recorded, recorded_dict, serve
from recommendations.serving.options import options_from_query
from recommendations.serving.rank import rank
from recommendations.serving.request import serving_request
from tenants.authentication import StoreScopedAPIView
from tenants.schemas import ErrorSerializer
from tenants.selectors import store_settings_get


class _SurfaceApi(StoreScopedAPIView):
    """A cached surface. Its GETs are mostly answered by the WSGI fast path (serving/wsgi.py) with the
    same `serve`; this path answers what that one hands over (and errors)."""

    surface: ClassVar[Surface]

    def served(self, request: Request, **kwargs: Any) -> HttpResponse:
        served = serve(self.surface, self.store, request.META, request.query_params, kwargs)
        response = HttpResponse(served.body, content_type="application/json")
        outcome = "hit" if served.cached else "miss"
        response["X-Answer-Cache"] = outcome
        match = request.resolver_match
        answer_cache_counter((match.url_name if match else None) or "other", outcome).inc()
        return response


class UserRecommendationsApi(_SurfaceApi):
    surface = SURFACES["for_user"]

    @extend_schema(
        parameters=[*FILTER_PARAMETERS, OpenApiParameter("include_purchased", bool)],
        responses=schemas.RecommendationsSerializer,
        summary="Recommended for this user, from their latest events (an event posted a moment ago counts)",
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return self.served(request, user_id=user_id)


class RelatedApi(_SurfaceApi):
    surface = SURFACES["related"]

    @extend_schema(
        parameters=[
            *FILTER_PARAMETERS,
            SHOPPER_PARAMETER,
            OpenApiParameter(
                "scope",
                str,
                enum=["store", "network"],
                description="network: similar products of stores that share (each item names its store)",
            ),
        ],
        responses=schemas.RecommendationsSerializer,
        summary="Similar items: collaborative neighbours blended with content similarity",
    )
    def get(self, request: Request, product_id: str) -> HttpResponse:
        scope = request.query_params.get("scope", "store")
        if scope not in ("store", "network"):
            raise ApiError("unsupported_scope", "scope must be 'store' or 'network'")
        if scope == "network":  # not cached: other stores' sharing settings apply at once
            options = options_from_query(request.query_params, store_settings_get(store=self.store))
            answer = related_network(store=self.store, external_id=product_id, options=options)
            return Response(recorded_dict(self.store, "related", None, answer))
        return self.served(request, product_id=product_id)


class ComplementaryApi(_SurfaceApi):
    surface = SURFACES["complementary"]

    @extend_schema(
        parameters=[*FILTER_PARAMETERS, SHOPPER_PARAMETER],
        responses=schemas.RecommendationsSerializer,
        summary="Frequently bought together (by lift), then what shoppers choose next",
    )
    def get(self, request: Request, product_id: str) -> HttpResponse:
        return self.served(request, product_id=product_id)


class CompleteTheLookApi(_SurfaceApi):
    surface = SURFACES["complete_the_look"]

    @extend_schema(
        parameters=[*FILTER_PARAMETERS, SHOPPER_PARAMETER],
        responses=schemas.RecommendationsSerializer,
        summary="One product from each category that goes with this one (rules learned from co-purchase "
        "and set by the merchant); each reason names the rule",
    )
    def get(self, request: Request, product_id: str) -> HttpResponse:
        return self.served(request, product_id=product_id)


class TrendingApi(_SurfaceApi):
    surface = SURFACES["trending"]

    @extend_schema(
        parameters=[*FILTER_PARAMETERS, SHOPPER_PARAMETER],
        responses=schemas.RecommendationsSerializer,
        summary="Trending now (time-decayed), optionally in a category",
    )
    def get(self, request: Request) -> HttpResponse:
        return self.served(request)


class RankApi(StoreScopedAPIView):
    @extend_schema(
        request=schemas.RankRequestSerializer,
        responses=schemas.RankedSerializer,
        summary="A personal order of the given products",
    )
    def post(self, request: Request, user_id: str) -> HttpResponse:
        body = json_body(request)
        if not isinstance(body, dict):
            raise ApiError("invalid", 'the body must be {"product_ids": [...]}')
        chosen = assigned(self.store, "rank", user_id)
        answer = rank(serving_request(self.store, None, chosen.config), user_id, body.get("product_ids"))
        answer = chosen.named(answer)
        return HttpResponse(recorded(self.store, "rank", user_id, answer), content_type="application/json")


class TrainingRunListApi(StoreScopedAPIView):
    @extend_schema(
        request=schemas.TrainingOptionsSerializer,
        responses={202: schemas.TrainingRunSerializer, 409: ErrorSerializer},
        summary="Start training (409 training_in_progress while a run of the store is queued or running)",
    )
    def post(self, request: Request) -> Response:
        options = training_options_clean(json_body_or_empty(request))
        run = training_run_create(store=self.store, options=options)
        return Response(selectors.training_run_to_dict(run), status=202)


class TrainingRunDetailApi(StoreScopedAPIView):
    @extend_schema(
        responses=schemas.TrainingRunSerializer, summary="A training run's status, progress, metrics"
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = selectors.training_run_get(store=self.store, run_id=run_id)
        return Response(selectors.training_run_to_dict(run))


class ModelListApi(StoreScopedAPIView):
    @extend_schema(responses=schemas.TrainedModelListSerializer, summary="The store's model versions")
    def get(self, request: Request) -> Response:
        return Response({"items": selectors.trained_model_list(store=self.store)})


class ModelActivateApi(StoreScopedAPIView):
    admin_methods = frozenset({"POST"})

    @extend_schema(
        request=None,
        responses=schemas.TrainedModelSerializer,
        summary="Activate or roll back to a version (admin)",
    )
    def post(self, request: Request, version: int) -> Response:
        trained_model_activate(store=self.store, version=version)
        models = {row["version"]: row for row in selectors.trained_model_list(store=self.store)}
        return Response(models[version])


class ModelReplayApi(StoreScopedAPIView):
    admin_methods = frozenset({"POST"})

    @extend_schema(
        request=schemas.ReplayRequestSerializer,
        responses={202: schemas.TrainedModelSerializer, 409: ErrorSerializer},
        summary="Replay a version on the last days of events against the active one (admin); the figures "
        "show as the version's `replay`",
    )
    def post(self, request: Request, version: int) -> Response:
        replay_request(store=self.store, version=version, body=json_body_or_empty(request))
        models = {row["version"]: row for row in selectors.trained_model_list(store=self.store)}
        return Response(models[version], status=202)


class RecentlyViewedApi(_SurfaceApi):
    surface = SURFACES["recently_viewed"]  # stale on the shopper's next event, or a catalog change

    @extend_schema(
        parameters=[schemas.limit_parameter()],
        responses=schemas.RecommendationsSerializer,
        summary="Products the user viewed, latest first (across their aliases)",
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return self.served(request, user_id=user_id)


class BuyAgainApi(_SurfaceApi):
    surface = SURFACES["buy_again"]  # stale on the shopper's next event; and a minute after computed

    @extend_schema(
        parameters=[schemas.limit_parameter()],
        responses=schemas.RecommendationsSerializer,
        summary="Products the user buys on a cycle that are due now, most overdue first",
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return self.served(request, user_id=user_id)
