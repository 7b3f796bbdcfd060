"""Serializers that only describe recommendation shapes for the OpenAPI schema."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers


class RecommendedItemSerializer(serializers.Serializer):
    id = serializers.CharField()
    score = serializers.FloatField()
    reason = serializers.CharField()


class RecommendationsSerializer(serializers.Serializer):
    recommendation_id = serializers.CharField(help_text="cite it as recommendation_id in later events")
    source = serializers.CharField(  # type: ignore[assignment]  # a field named like Field.source
        help_text="the model version or fallback that served the answer"
    )
    items = RecommendedItemSerializer(many=True)


class RankedSerializer(RecommendationsSerializer):
    unknown_ids = serializers.ListField(child=serializers.CharField())


class RankRequestSerializer(serializers.Serializer):
    product_ids = serializers.ListField(child=serializers.CharField(), max_length=1000)


class TrainingRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=["queued", "running", "succeeded", "failed"])
    progress = serializers.FloatField()
    message = serializers.CharField()
    trigger = serializers.CharField()
    metrics = serializers.DictField()
    parameters = serializers.DictField()
    model_version = serializers.IntegerField(allow_null=True)
    model_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class TrainedModelSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    kind = serializers.CharField()
    is_active = serializers.BooleanField()
    metrics = serializers.DictField()
    parameters = serializers.DictField()
    n_items = serializers.IntegerField()
    n_users = serializers.IntegerField()
    n_events = serializers.IntegerField()
    artifact_bytes = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    activated_at = serializers.DateTimeField(allow_null=True)


FILTER_PARAMETERS = [
    OpenApiParameter("limit", int, description="1 to 100, default 10"),
    OpenApiParameter("category", str, description="only products with this level in their category path"),
    OpenApiParameter("brand", str),
    OpenApiParameter("min_price", float),
    OpenApiParameter("max_price", float),
    OpenApiParameter("in_stock", bool),
    OpenApiParameter("exclude", str, description="comma-separated product ids to leave out"),
    OpenApiParameter("max_per_category", int, description="diversity: at most this many per top category"),
    OpenApiParameter("diversity", float, description="maximal marginal relevance, 0 (off) to 1"),
]
