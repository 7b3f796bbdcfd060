"""Products of a store's catalog."""

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from pgvector.django import HalfVectorField, HnswIndex

from core.models import BaseModel
from tenants.models import Store

CONTENT_DIMENSIONS = 64


class Product(BaseModel):
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    external_id = models.CharField(max_length=256)
    title = models.CharField(max_length=1000)
    description = models.TextField(blank=True, default="")
    category_path = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    brand = models.CharField(max_length=200, blank=True, default="")
    gtin = models.CharField(max_length=14, blank=True, default="")
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    in_stock = models.BooleanField(default=True)
    attributes = models.JSONField(default=dict, blank=True)
    image_url = models.CharField(max_length=2048, blank=True, default="")
    is_active = models.BooleanField(default=True)
    # The merchant's own vector of the product (its style, from their images or their model): one
    # dimension per store; complete-the-look picks by it within a category when the anchor has one.
    embedding = ArrayField(models.FloatField(), null=True, blank=True)
    # Written by training (TF-IDF + SVD over the product's text); unit length; cosine distance.
    content_embedding = HalfVectorField(dimensions=CONTENT_DIMENSIONS, null=True, blank=True, editable=False)
    # Written by global training for stores that share (one vocabulary across them); HNSW, cosine.
    network_embedding = HalfVectorField(dimensions=CONTENT_DIMENSIONS, null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "external_id"], name="product_store_external_id_uniq"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="product_price_non_negative"),
        ]
        indexes = [
            models.Index(fields=["store", "updated_at"], name="product_store_updated_idx"),
            GinIndex(fields=["category_path"], name="product_category_gin"),
            # m and ef_construction at pgvector's defaults; ef_search is set per query (network.py)
            HnswIndex(
                name="product_network_hnsw",
                fields=["network_embedding"],
                m=16,
                ef_construction=64,
                opclasses=["halfvec_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_id}: {self.title[:60]}"
