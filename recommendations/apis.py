"""Thin views: recommendation surfaces, training runs and model versions."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import ApiError
from core.json import json_body
from core.params import query_int
from recommendations import schemas, selectors
from recommendations.network import related_network
from recommendations.schemas import FILTER_PARAMETERS
from recommendations.services import trained_model_activate, training_run_create
from tenants.authentication import StoreScopedAPIView
from tenants.selectors import store_settings_get


class _SurfaceApi(StoreScopedAPIView):
    cache_answers = True  # served from the shared answer cache when nothing they depend on changed

    def options_from(self, request: Request) -> selectors.Options:
        return selectors.options_from_query(request.query_params, store_settings_get(store=self.store))


class UserRecommendationsApi(_SurfaceApi):
    cache_per_shopper = True  # the shopper's new events (and aliases) make the answer stale

    @extend_schema(
        parameters=[*FILTER_PARAMETERS, OpenApiParameter("include_purchased", bool)],
        responses=schemas.RecommendationsSerializer,
        summary="Recommended for this user, from their history as stored at request time",
    )
    def get(self, request: Request, user_id: str) -> Response:
        return self.answer(
            request, selectors.for_user(store=self.store, user_id=user_id, options=self.options_from(request))
        )


class RelatedApi(_SurfaceApi):
    @extend_schema(
        parameters=[
            *FILTER_PARAMETERS,
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
    def get(self, request: Request, product_id: str) -> Response:
        scope = request.query_params.get("scope", "store")
        if scope not in ("store", "network"):
            raise ApiError("unsupported_scope", "scope must be 'store' or 'network'")
        options = self.options_from(request)
        if scope == "network":  # not cached: other stores' sharing settings apply at once
            return Response(related_network(store=self.store, external_id=product_id, options=options))
        return self.answer(
            request, selectors.related(store=self.store, external_id=product_id, options=options)
        )


class ComplementaryApi(_SurfaceApi):
    @extend_schema(
        parameters=FILTER_PARAMETERS,
        responses=schemas.RecommendationsSerializer,
        summary="Frequently bought together (by lift), then what shoppers choose next",
    )
    def get(self, request: Request, product_id: str) -> Response:
        options = self.options_from(request)
        return self.answer(
            request, selectors.complementary(store=self.store, external_id=product_id, options=options)
        )


class TrendingApi(_SurfaceApi):
    @extend_schema(
        parameters=FILTER_PARAMETERS,
        responses=schemas.RecommendationsSerializer,
        summary="Trending now (time-decayed), optionally in a category",
    )
    def get(self, request: Request) -> Response:
        options = self.options_from(request)
        return self.answer(request, selectors.trending(store=self.store, options=options))


class RankApi(StoreScopedAPIView):
    @extend_schema(
        request=schemas.RankRequestSerializer,
        responses=schemas.RankedSerializer,
        summary="A personal order of the given products",
    )
    def post(self, request: Request, user_id: str) -> Response:
        body = json_body(request)
        if not isinstance(body, dict):
            raise ApiError("invalid", 'the body must be {"product_ids": [...]}')
        return Response(
            selectors.rank(store=self.store, user_id=user_id, product_ids=body.get("product_ids"))
        )


class TrainingRunListApi(StoreScopedAPIView):
    @extend_schema(request=None, responses={202: schemas.TrainingRunSerializer}, summary="Start training")
    def post(self, request: Request) -> Response:
        run = training_run_create(store=self.store)
        return Response(selectors.training_run_to_dict(run), status=202)


class TrainingRunDetailApi(StoreScopedAPIView):
    @extend_schema(
        responses=schemas.TrainingRunSerializer, summary="A training run's status, progress, metrics"
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = selectors.training_run_get(store=self.store, run_id=run_id)
        return Response(selectors.training_run_to_dict(run))


class ModelListApi(StoreScopedAPIView):
    @extend_schema(responses=schemas.TrainedModelSerializer(many=True), summary="The store's model versions")
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


class RecentlyViewedApi(StoreScopedAPIView):
    cache_answers = cache_per_shopper = True  # stale on the shopper's next event, or a catalog change

    @extend_schema(
        parameters=[OpenApiParameter("limit", int)],
        responses=schemas.RecommendationsSerializer,
        summary="Products the user viewed, latest first (across their aliases)",
    )
    def get(self, request: Request, user_id: str) -> Response:
        limit = query_int(request.query_params.get("limit"), "limit", low=1, high=100, default=10)
        return self.answer(
            request, selectors.recently_viewed_answer(store=self.store, user_id=user_id, limit=limit or 10)
        )


class BuyAgainApi(StoreScopedAPIView):
    # stale on the shopper's next event; and "due now" moves with the clock: kept 60 s from computed
    cache_answers = cache_per_shopper = True
    answer_ttl, answer_ttl_slides = 60, False

    @extend_schema(
        parameters=[OpenApiParameter("limit", int)],
        responses=schemas.RecommendationsSerializer,
        summary="Products the user buys on a cycle that are due now, most overdue first",
    )
    def get(self, request: Request, user_id: str) -> Response:
        limit = query_int(request.query_params.get("limit"), "limit", low=1, high=100, default=10)
        return self.answer(
            request, selectors.buy_again_answer(store=self.store, user_id=user_id, limit=limit or 10)
        )
