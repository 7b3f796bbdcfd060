"""Serializers that only describe event request and response shapes for the OpenAPI schema."""

from rest_framework import serializers

from catalog.schemas import RowErrorSerializer
from events.models import Channel, EventType


class EventInSerializer(serializers.Serializer):
    event_id = serializers.CharField(max_length=128, required=False, help_text="makes a resend idempotent")
    user_id = serializers.CharField(max_length=256)
    session_id = serializers.CharField(max_length=256, required=False)
    product_id = serializers.CharField(max_length=256)
    type = serializers.ChoiceField(choices=[label for _, label in EventType.choices])
    quantity = serializers.IntegerField(required=False, min_value=1, default=1)
    price = serializers.DecimalField(max_digits=14, decimal_places=4, required=False, min_value=0)
    rating = serializers.FloatField(required=False)
    channel = serializers.ChoiceField(choices=[label for _, label in Channel.choices], required=False)
    timestamp = serializers.DateTimeField(required=False, help_text="ISO 8601 or epoch seconds; default now")
    recommendation_id = serializers.CharField(
        max_length=64, required=False, help_text="the recommendation_id of the answer this event follows"
    )


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    rejected = serializers.IntegerField()
    errors = RowErrorSerializer(many=True)  # type: ignore[assignment]  # a field named like the property


class AliasInSerializer(serializers.Serializer):
    alias_id = serializers.CharField(max_length=256)


class AliasOutSerializer(serializers.Serializer):
    user_id = serializers.CharField(help_text="the user the alias now belongs to")
    alias_id = serializers.CharField()
    created = serializers.BooleanField()


class UserErasedSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    identities = serializers.ListField(child=serializers.CharField(), help_text="every id erased")
    deleted = serializers.DictField(child=serializers.IntegerField(), help_text="rows deleted by kind")


class ExportedAliasSerializer(serializers.Serializer):
    alias_id = serializers.CharField()
    user_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class ExportedEventSerializer(serializers.Serializer):
    event_id = serializers.CharField(allow_null=True)
    user_id = serializers.CharField()
    session_id = serializers.CharField(allow_blank=True)
    product_id = serializers.CharField(allow_null=True, help_text="null when the product is gone")
    type = serializers.CharField()
    quantity = serializers.IntegerField()
    price = serializers.DecimalField(max_digits=14, decimal_places=4, allow_null=True)
    rating = serializers.FloatField(allow_null=True)
    channel = serializers.CharField()
    timestamp = serializers.DateTimeField()
    recommendation_id = serializers.CharField(allow_null=True)
    received_at = serializers.DateTimeField()


class UserDataSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    identities = serializers.ListField(child=serializers.CharField())
    exported_at = serializers.DateTimeField()
    aliases = ExportedAliasSerializer(many=True)
    events = ExportedEventSerializer(many=True)
