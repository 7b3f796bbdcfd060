"""Serializers that only describe catalog request and response shapes for the OpenAPI schema."""

from rest_framework import serializers


class ProductInSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=256, help_text="the merchant's own product id")
    title = serializers.CharField(max_length=1000, help_text="required for a new product")
    description = serializers.CharField(required=False, allow_blank=True)
    category_path = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, help_text='e.g. ["Beauty", "Skin care"]'
    )
    brand = serializers.CharField(required=False, allow_blank=True)
    gtin = serializers.CharField(required=False, allow_blank=True, max_length=14)
    price = serializers.DecimalField(
        max_digits=14, decimal_places=4, required=False, allow_null=True, min_value=0
    )
    currency = serializers.CharField(required=False, max_length=3)
    in_stock = serializers.BooleanField(required=False)
    attributes = serializers.DictField(required=False)
    image_url = serializers.URLField(required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)


class ProductOutSerializer(ProductInSerializer):
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ProductPageSerializer(serializers.Serializer):
    items = ProductOutSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class RowErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    field = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class ProductBulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    rejected = serializers.IntegerField()
    errors = RowErrorSerializer(many=True)  # type: ignore[assignment]  # a field named like the property
