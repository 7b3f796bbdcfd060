"""Stores (tenants), their API keys and settings."""

from datetime import datetime

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from core.models import BaseModel


class Store(BaseModel):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="USD")
    is_active = models.BooleanField(default=True)
    # set when the store was deleted: it is inactive at once, and a worker erases all of its data
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Limits, set by the operator (the admin), never by the store's own keys. Empty: the deployment's
    # default (settings.RATE_LIMIT_PER_SECOND and the rest); 0: no limit.
    rate_limit_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="requests per second per API key (token bucket); empty: default"
    )
    rate_limit_burst = models.PositiveIntegerField(
        null=True, blank=True, help_text="requests a key may make at once (the bucket's size); empty: default"
    )
    max_products = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="products the catalog may hold; empty: default; 0: no limit"
    )
    max_events_per_day = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="events stored per UTC day; empty: default; 0: no limit"
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ApiKeyScope(models.TextChoices):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class ApiKey(BaseModel):
    """Only a SHA-256 of the secret is stored; `prefix` is the visible, indexed part of the key."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, unique=True)
    hashed_secret = models.CharField(max_length=64)
    scopes = ArrayField(models.CharField(max_length=16, choices=ApiKeyScope.choices), default=list)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # the key stops working at this time (a rotation sets it on the key it replaces); empty: never
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["store", "created_at"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_live(self, now: datetime | None = None) -> bool:
        """Neither revoked nor expired (nor its store inactive)."""
        if self.revoked_at is not None or not self.store.is_active:
            return False
        return self.expires_at is None or self.expires_at > (now or timezone.now())


class StoreSettings(BaseModel):
    """Per-store knobs read by ingestion, training and serving."""

    store = models.OneToOneField(Store, on_delete=models.CASCADE, primary_key=True, related_name="settings")
    share_network = models.BooleanField(default=False, help_text="contribute to and receive from the network")
    include_purchased = models.BooleanField(
        default=False, help_text="for-user answers may include items bought before (groceries)"
    )
    default_filters = models.JSONField(default=dict, blank=True)
    diversity = models.JSONField(default=dict, blank=True)
    blend_weights = models.JSONField(default=dict, blank=True)
    pins = models.JSONField(default=dict, blank=True)
    boosts = models.JSONField(default=dict, blank=True)
    event_weights = models.JSONField(default=dict, blank=True)
    retrain_interval_hours = models.PositiveIntegerField(default=24)
    # a purchase without a recommendation id, of an item shown to the shopper this recently, is view-through
    attribution_window_hours = models.PositiveIntegerField(default=24)
    # complete-the-look rules of the merchant's, over those learned from co-purchase: {"<category>":
    # ["<category that goes with it>", ...] or {"add": [...], "forbid": [...]}}
    compatibility = models.JSONField(default=dict, blank=True)
    # events older than this many days leave PostgreSQL for the Parquet archive (events/archive.py);
    # None: kept in PostgreSQL for good
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    # training reads the events of this many last days, archived ones included; None: all of them
    training_window_days = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "store settings"

    def __str__(self) -> str:
        return f"settings of {self.store_id}"


class AuditEntry(models.Model):
    """Who changed what, when: keys issued, rotated and revoked; settings and limits; model activations;
    store deletion; experiments. Kept when the store is erased (its slug stays, the link goes): the
    entries name keys by their visible prefix and settings by name, never a shopper."""

    store = models.ForeignKey(Store, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    store_slug = models.CharField(max_length=64)
    actor = models.CharField(max_length=200, help_text="the API key's prefix, or the admin user")
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["store", "-created_at"], name="audit_store_recent")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.target}"
