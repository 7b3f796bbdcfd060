"""POST /api/v1/events."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core import erasure, rate_limit
from core.errors import ApiError, raise_all_rows_rejected
from core.json import json_body
from core.observability import EVENTS_INGESTED
from events import schemas
from events.selectors import user_identities
from events.services import IngestResult, event_ingest, user_alias_link
from tenants.authentication import StoreScopedAPIView
from tenants.schemas import ErrorSerializer


def ingest_counted(result: IngestResult) -> None:
    """The batch's rows in recsys_events_ingested_total, by outcome (this view and the fast path)."""
    for outcome, count in (
        ("accepted", result.accepted),
        ("duplicate", result.duplicate),
        ("rejected", result.rejected),
    ):
        if count:
            EVENTS_INGESTED.labels(outcome).inc(count)


class EventIngestApi(StoreScopedAPIView):
    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="EventOrEvents",
            serializers=[schemas.EventInSerializer, schemas.EventInSerializer(many=True)],
            resource_type_field_name=None,
            many=False,
        ),
        responses=schemas.IngestResultSerializer,
        summary="One event or up to 10,000; a resent event_id is counted as duplicate, stored once",
    )
    def post(self, request: Request) -> Response:
        reserved = bool(request.META.get(rate_limit.QUOTA_ENVIRON_KEY))  # by the fast path, which declined
        result = event_ingest(store=self.store, payload=json_body(request), quota_reserved=reserved)
        ingest_counted(result)
        if result.errors and not (result.accepted or result.duplicate):
            raise_all_rows_rejected(result.as_dict(), result.errors)
        return Response(result.as_dict(), status=200)


class UserAliasApi(StoreScopedAPIView):
    @extend_schema(
        request=schemas.AliasInSerializer,
        responses={200: schemas.AliasOutSerializer, 201: schemas.AliasOutSerializer, 409: ErrorSerializer},
        summary="Link an anonymous session, device or loyalty-card id to this user (idempotent)",
    )
    def post(self, request: Request, user_id: str) -> Response:
        body = json_body(request)
        if not isinstance(body, dict):
            raise ApiError("invalid", 'the body must be {"alias_id": "..."}')
        result = user_alias_link(store=self.store, user_id=user_id, alias_id=body.get("alias_id"))
        return Response(result, status=201 if result["created"] else 200)


class UserApi(StoreScopedAPIView):
    @extend_schema(
        request=None,
        responses={200: schemas.UserErasedSerializer},
        summary="Erase a shopper: their events, aliases, profile and cached answers (Shopify's "
        "customers/redact)",
        description="Every id of the shopper's profile is erased: theirs and their aliases'. Aggregates "
        "(trained models, trending) stay; they hold no shopper id. Erasing an unknown shopper erases nothing "
        "and succeeds.",
    )
    def delete(self, request: Request, user_id: str) -> Response:
        identities = user_identities(store=self.store, user_id=user_id)  # (the id was checked in initial)
        deleted = erasure.shopper_erase(self.store, identities)
        return Response({"user_id": user_id, "identities": identities, "deleted": deleted})


class UserDataApi(StoreScopedAPIView):
    @extend_schema(
        responses=schemas.UserDataSerializer,
        summary="Everything stored about a shopper (Shopify's customers/data_request)",
    )
    def get(self, request: Request, user_id: str) -> Response:
        identities = user_identities(store=self.store, user_id=user_id)  # (the id was checked in initial)
        exported = erasure.shopper_export(self.store, identities)
        return Response(
            {"user_id": user_id, "identities": identities, "exported_at": timezone.now(), **exported}
        )
