"""Shopper events. The hottest table: narrow rows, small-integer enums, product by internal id."""

from django.contrib.postgres.indexes import BrinIndex
from django.db import models

from catalog.models import Product
from tenants.models import Store


class EventType(models.IntegerChoices):
    VIEW = 1, "view"
    CLICK = 2, "click"
    ADD_TO_CART = 3, "add_to_cart"
    REMOVE_FROM_CART = 4, "remove_from_cart"
    ADD_TO_WISHLIST = 5, "add_to_wishlist"
    PURCHASE = 6, "purchase"
    RATING = 7, "rating"
    RETURN = 8, "return"


class Channel(models.IntegerChoices):
    WEB = 1, "web"
    APP = 2, "app"
    IN_STORE = 3, "in_store"


EVENT_TYPE_BY_NAME = {label: value for value, label in EventType.choices}
CHANNEL_BY_NAME = {label: value for value, label in Channel.choices}


class Event(models.Model):
    """Partitioned by `timestamp`, a partition a month (events/partitions.py, migration 0006). Primary key
    (store_id, id, timestamp) at the database level, so the table can be distributed by store_id;
    `product` is the internal product id, checked at ingestion. Idempotency by `event_id` is EventKey's."""

    id = models.BigAutoField(primary_key=True)
    # No database-level foreign keys on the hottest table: a per-row RI trigger cost a fifth of the
    # ingest time, the store comes from the authenticated key, and the product is checked at ingestion.
    # Indexes that lead with store_id (the primary key) serve store lookups.
    store = models.ForeignKey(
        Store, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    # shopper and event ids compare bytewise ("C"): their indexes take every ingested row, and a locale's
    # comparisons cost PostgreSQL a quarter of a key's insert (the same order for UTF-8 as C.UTF-8's)
    user_id = models.CharField(max_length=256, db_collation="C")
    session_id = models.CharField(max_length=256, blank=True, default="")
    product = models.ForeignKey(
        Product, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    type = models.PositiveSmallIntegerField(choices=EventType.choices)
    quantity = models.IntegerField(default=1)
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    rating = models.FloatField(null=True, blank=True)
    channel = models.PositiveSmallIntegerField(choices=Channel.choices, default=Channel.WEB)
    timestamp = models.DateTimeField()
    # NULL, not "", for "no id": only events that carry one have an EventKey.
    event_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    recommendation_id = models.CharField(max_length=64, blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # per-user recent history (serving); training scans a store by the (store_id, id) primary key
            models.Index(fields=["store", "user_id", "-timestamp"], name="event_store_user_time_idx"),
            BrinIndex(fields=["timestamp"], name="event_time_brin"),
            # the attribution rollup reads the events received since it last looked (outcomes/)
            BrinIndex(fields=["received_at"], name="event_received_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.get_type_display()} {self.user_id} -> {self.product_id}"


class EventKey(models.Model):
    """An event_id stored (events_eventkey): ingest inserts the keys of a batch first and stores only the
    events whose key was new, so a resend is a duplicate whichever partition holds the first. Keys older
    than settings.EVENT_ID_WINDOW_DAYS are pruned by the maintenance task (a resend after that is stored
    again)."""

    pk = models.CompositePrimaryKey("store_id", "event_id")
    store_id = models.BigIntegerField()
    event_id = models.CharField(max_length=128, db_collation="C")
    received_at = models.DateTimeField()

    class Meta:
        indexes = [BrinIndex(fields=["received_at"], name="event_key_received_brin")]

    def __str__(self) -> str:
        return f"{self.store_id}:{self.event_id}"


class UserAlias(models.Model):
    """An anonymous session, device or loyalty-card id that belongs to a user of the store: events sent
    under the alias are stored under the user, so their histories are one."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    alias_id = models.CharField(max_length=256, db_collation="C")
    user_id = models.CharField(max_length=256, db_collation="C")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "alias_id"], name="user_alias_store_alias_uniq")
        ]
        indexes = [models.Index(fields=["store", "user_id"], name="user_alias_store_user_idx")]

    def __str__(self) -> str:
        return f"{self.alias_id} -> {self.user_id}"


class ShownItem(models.Model):
    """A merchant's `impression` event: a product of an answer (its recommendation id) really shown to the
    shopper. Kept apart from the events, so that it can never reach training, trending or the shopper's
    profile; the outcomes rollup counts the answers reported shown."""

    id = models.BigAutoField(primary_key=True)
    store = models.ForeignKey(
        Store, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    user_id = models.CharField(max_length=256, db_collation="C")  # as on Event
    session_id = models.CharField(max_length=256, blank=True, default="")
    product = models.ForeignKey(
        Product, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    recommendation_id = models.CharField(max_length=64)
    channel = models.PositiveSmallIntegerField(choices=Channel.choices, default=Channel.WEB)
    timestamp = models.DateTimeField()
    event_id = models.CharField(max_length=128, null=True, blank=True, db_collation="C")  # noqa: DJ001 - as on Event
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["store", "event_id"],
                condition=models.Q(event_id__isnull=False),
                name="shown_item_store_event_id_uniq",
            )
        ]
        indexes = [
            models.Index(fields=["store", "user_id"], name="shown_item_store_user_idx"),
            BrinIndex(fields=["received_at"], name="shown_item_received_brin"),
        ]

    def __str__(self) -> str:
        return f"shown {self.product_id} of {self.recommendation_id}"


class EventArchive(models.Model):
    """One Parquet file of archived events (events/archive.py): a store's events of one month, past its
    retention, removed from PostgreSQL in the transaction that wrote this row. The manifest: a file that
    no row names is an orphan, removed by the next archiving run."""

    store = models.ForeignKey(
        Store, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    month = models.DateField(help_text="the first day of the month (UTC) the events fall in")
    path = models.CharField(max_length=1000, help_text="where the file is, under EVENT_ARCHIVE_URL")
    rows = models.BigIntegerField()
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "path"], name="event_archive_store_path_uniq")
        ]
        indexes = [models.Index(fields=["store", "month"], name="event_archive_store_month_idx")]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} of {self.store_id}: {self.rows} events"
