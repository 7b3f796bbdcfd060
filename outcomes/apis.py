"""Business figures (GET /api/v1/analytics) and A/B experiments (/api/v1/experiments)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import ApiError
from core.json import json_body
from core.params import bad_parameter, query_text
from outcomes import schemas, selectors
from outcomes.experiments import (
    experiment_create,
    experiment_dict,
    experiment_get,
    experiment_promote,
    experiment_results,
    experiment_stop,
)
from outcomes.models import Experiment
from tenants.authentication import StoreScopedAPIView
from tenants.schemas import ErrorSerializer

DEFAULT_DAYS = 30


def _query_date(raw: str | None, name: str) -> date | None:
    if raw is None:
        return None
    try:
        return date.fromisoformat(str(raw))
    except ValueError as error:
        raise bad_parameter(name, "must be an ISO 8601 date (YYYY-MM-DD)") from error


def _days_before(day: date, days: int) -> date:
    try:
        return day - timedelta(days=days)
    except OverflowError:  # near the first day there is
        return date.min


class AnalyticsApi(StoreScopedAPIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "surface", str, enum=list(schemas.SURFACE_NAMES), description="only this surface"
            ),
            OpenApiParameter(
                "variant",
                {"type": "string", "maxLength": 64},
                description="only this experiment variant (empty: outside one)",
            ),
            OpenApiParameter(
                "start",
                OpenApiTypes.DATE,
                description=f"first day (UTC); default {DEFAULT_DAYS - 1} days before end",
            ),
            OpenApiParameter("end", OpenApiTypes.DATE, description="last day (UTC), included; default today"),
        ],
        responses=schemas.AnalyticsSerializer,
        summary="Impressions, clicks, CTR, add-to-carts, purchases, conversion and revenue per day",
    )
    def get(self, request: Request) -> Response:
        query = request.query_params
        surface = query.get("surface")
        if surface is not None and surface not in schemas.SURFACE_NAMES:
            raise bad_parameter("surface", f"must be one of {', '.join(schemas.SURFACE_NAMES)}")
        variant = query.get("variant")
        if variant is not None:
            variant = query_text(variant, "variant", max_length=64) or ""
        end = _query_date(query.get("end"), "end") or datetime.now(tz=UTC).date()
        start = _query_date(query.get("start"), "start") or _days_before(end, DEFAULT_DAYS - 1)
        # (a start after the end is an empty range: no day in it)
        figures = selectors.analytics(
            store=self.store, start=start, end=end, surface=surface, variant=variant
        )
        return Response(figures)


class ExperimentListApi(StoreScopedAPIView):
    @extend_schema(
        responses=schemas.ExperimentSerializer(many=True), summary="The store's experiments, newest first"
    )
    def get(self, request: Request) -> Response:
        rows = Experiment.objects.filter(store=self.store).order_by("-started_at", "-id")
        return Response([experiment_dict(row) for row in rows])

    @extend_schema(
        request=schemas.ExperimentInSerializer,
        responses={201: schemas.ExperimentSerializer, 409: ErrorSerializer},
        summary="Start an A/B test of a surface (409 experiment_running while one runs on it)",
    )
    def post(self, request: Request) -> Response:
        experiment = experiment_create(store=self.store, body=json_body(request))
        return Response(experiment_dict(experiment), status=201)


class ExperimentDetailApi(StoreScopedAPIView):
    @extend_schema(
        responses=schemas.ExperimentResultsSerializer,
        summary="An experiment with each variant's counts, rates and 95% intervals, lift and verdict",
    )
    def get(self, request: Request, experiment_id: int) -> Response:
        experiment = experiment_get(store=self.store, experiment_id=experiment_id)
        return Response(
            {**experiment_dict(experiment), **experiment_results(store=self.store, experiment=experiment)}
        )


class ExperimentStopApi(StoreScopedAPIView):
    admin_methods = frozenset({"POST"})

    @extend_schema(
        request=None,
        responses={200: schemas.ExperimentSerializer, 409: ErrorSerializer},
        summary="End an experiment (admin key; 409 experiment_not_running when it has ended)",
    )
    def post(self, request: Request, experiment_id: int) -> Response:
        experiment = experiment_get(store=self.store, experiment_id=experiment_id)
        return Response(experiment_dict(experiment_stop(store=self.store, experiment=experiment)))


class ExperimentPromoteApi(StoreScopedAPIView):
    admin_methods = frozenset({"POST"})

    @extend_schema(
        request=schemas.PromoteInSerializer,
        responses={200: schemas.ExperimentSerializer, 409: ErrorSerializer},
        summary="Make a variant the surface's default, ending the experiment (admin key; 409 if promoted)",
    )
    def post(self, request: Request, experiment_id: int) -> Response:
        experiment = experiment_get(store=self.store, experiment_id=experiment_id)
        body = json_body(request)
        if not isinstance(body, dict) or set(body) != {"variant"}:
            raise ApiError("invalid", 'the body must be {"variant": "<name>"}')
        promoted = experiment_promote(store=self.store, experiment=experiment, variant=body["variant"])
        return Response(experiment_dict(promoted))
