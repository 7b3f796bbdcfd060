"""Serializers that only describe catalog request and response shapes for the OpenAPI schema."""

from rest_framework import serializers

from core.schema import ID, ID_OR_EMPTY, TEXT_OR_EMPTY, register_request_schemas, text


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
    embedding = serializers.ListField(
        child=serializers.FloatField(),
        required=False,
        allow_null=True,
        max_length=1024,
        help_text="the product's own vector (its style): one dimension per store; null removes it",
    )


class ProductOutSerializer(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    category_path = serializers.ListField(child=serializers.CharField())
    brand = serializers.CharField(allow_blank=True)
    gtin = serializers.CharField(allow_blank=True)
    price = serializers.FloatField(allow_null=True)
    currency = serializers.CharField(allow_blank=True)
    in_stock = serializers.BooleanField()
    attributes = serializers.DictField()
    image_url = serializers.CharField(allow_blank=True)
    active = serializers.BooleanField()
    embedding = serializers.ListField(child=serializers.FloatField(), allow_null=True)
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


# (OpenAPI 3.0 has no "null" type: `nullable` says it)
MONEY = {
    "anyOf": [
        {
            "type": "number",
            "minimum": 0,
            "maximum": 9_999_999_999.9999,
            "nullable": True,
        },  # as stored: 4 places
        {"type": "string", "pattern": "^[0-9]{1,9}([.][0-9]{1,4})?$", "description": 'e.g. "12.50"'},
    ]
}
_PRODUCT_FIELDS = {
    "title": text(1000),
    "description": {**text(100_000, blank=True), "nullable": True},
    "category_path": {
        "anyOf": [
            {"type": "array", "maxItems": 10, "items": text(200)},
            {
                "type": "string",
                "maxLength": 200,
                "pattern": TEXT_OR_EMPTY,
                "description": 'levels split by ">"',
            },
        ]
    },
    "brand": {**text(200, blank=True), "nullable": True},
    "gtin": {"type": "string", "pattern": "^[0-9]{0,14}$", "nullable": True},
    "price": MONEY,
    "currency": {"type": "string", "pattern": "^([A-Za-z]{3})?$", "nullable": True},
    "in_stock": {"type": "boolean"},
    "attributes": {"type": "object"},
    "image_url": {
        "type": "string",
        "maxLength": 2048,
        "pattern": "^(https?://[^\\u0000\\[\\]]*)?$",
        "nullable": True,
    },
    "active": {"type": "boolean"},
    "embedding": {
        "type": "array",
        "items": {"type": "number", "minimum": -1e30, "maximum": 1e30},
        "minItems": 1,
        "maxItems": 1024,
        "nullable": True,
        "description": "the product's own vector (its style): one dimension per store; null removes it",
    },
}


def external_id(max_length: int = 256, description: str = "", *, blank: bool = False) -> dict:
    """An id of the merchant's: a string, or a number taken as its decimal string."""
    string = {"type": "string", "maxLength": max_length, "pattern": ID_OR_EMPTY if blank else ID}
    return {"anyOf": [string, {"type": "number"}], "description": description}


PRODUCT_ID = external_id(description="the merchant's own product id")

register_request_schemas(
    {
        # a row of POST /products/bulk: title is needed for a product the store does not hold yet
        "ProductInRequest": {
            "type": "object",
            "properties": {"id": PRODUCT_ID, **_PRODUCT_FIELDS},
            "required": ["id"],
            "additionalProperties": False,
        },
        # PUT /products/{id}: the whole product (the id is the URL's)
        "ProductPutRequest": {
            "type": "object",
            "properties": _PRODUCT_FIELDS,
            "required": ["title"],
            "additionalProperties": False,
        },
        # PATCH /products/{id}: any of the fields
        "PatchedProductPatchRequest": {
            "type": "object",
            "properties": _PRODUCT_FIELDS,
            "additionalProperties": False,
        },
    }
)


class ProductPutSerializer(serializers.Serializer):
    """PUT /products/{id} (the schema is core.schema's ProductPutRequest)."""

    title = serializers.CharField()


class ProductPatchSerializer(serializers.Serializer):
    """PATCH /products/{id} (the schema is core.schema's PatchedProductPatchRequest)."""

    title = serializers.CharField(required=False)
