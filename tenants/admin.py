"""Operator console: stores, their settings and keys. Creating a key shows it once; keys are revoked,
never edited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from tenants.models import ApiKey, AuditEntry, Store, StoreSettings
from tenants.services import (
    api_key_issue,
    api_key_revoke,
    api_key_rotate,
    audit_record,
    store_delete,
    store_update,
)


class StoreSettingsInline(admin.StackedInline):
    model = StoreSettings
    can_delete = False


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ("prefix", "name", "scopes", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    """Stores, their settings and keys. The recommendations admin extends it with the store's dashboard
    (charts, runs, versions) and "train now": this app knows nothing of models."""

    list_display: tuple[str, ...] = ("slug", "name", "currency", "is_active", "created_at")
    search_fields = ("slug", "name")
    inlines = [StoreSettingsInline, ApiKeyInline]
    actions: list[Any] = ["issue_api_key", "toggle_network_sharing", "delete_and_erase"]
    readonly_fields = ("deleted_at",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Django's delete would gather every event of the store in memory first: "Delete and erase" instead
        return False

    @admin.action(description="Delete and erase: all products, events, models and cached answers")
    def delete_and_erase(self, request: HttpRequest, queryset: QuerySet[Store]) -> None:
        for store in queryset:
            store_delete(store=store)
            messages.warning(request, f"{store.slug}: deleted; a worker is erasing its data.")

    @admin.action(description="Turn network sharing on or off")
    def toggle_network_sharing(self, request: HttpRequest, queryset: QuerySet[Store]) -> None:
        for store in queryset:
            current = StoreSettings.objects.get_or_create(store=store)[0].share_network
            store_update(store=store, data={"share_network": not current})
            messages.success(request, f"{store.slug}: network sharing {'off' if current else 'on'}.")

    def save_model(self, request: HttpRequest, obj: Store, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        StoreSettings.objects.get_or_create(store=obj)
        changed = {name: str(form.cleaned_data.get(name)) for name in form.changed_data}
        if changed:
            audit_record(store=obj, action="store_changed" if change else "store_created", changes=changed)

    @admin.action(description="Issue a new API key (read, write, admin)")
    def issue_api_key(self, request: HttpRequest, queryset: QuerySet[Store]) -> None:
        for store in queryset:
            issued = api_key_issue(store=store, name="admin-issued")
            messages.warning(request, f"{store.slug}: new API key (shown once): {issued.raw_key}")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "prefix", "store", "name", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"
    )  # fmt: skip
    list_filter = ("store", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "store__slug")
    fields = ("store", "name", "scopes", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    actions = ["rotate", "revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        base = ("prefix", "created_at", "last_used_at", "revoked_at")
        return base + ("store", "name", "scopes", "expires_at") if obj else base

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = api_key_issue(
            store=obj.store, name=obj.name, scopes=list(obj.scopes) or None, expires_at=obj.expires_at
        )
        obj.pk = issued.api_key.pk
        obj.prefix = issued.api_key.prefix
        messages.warning(request, f"The new API key, shown this once: {issued.raw_key}")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.select_related("store"):
            api_key_revoke(store=key.store, api_key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")

    @admin.action(description="Rotate: a new key each; the old ones keep working 24 hours")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.select_related("store"):
            issued = api_key_rotate(store=key.store, api_key=key, overlap_hours=24)
            messages.warning(
                request, f"{key.prefix} ends in 24 h; its replacement, shown this once: {issued.raw_key}"
            )


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only: who changed keys, settings, limits, models and experiments, and when."""

    list_display = ("created_at", "store_slug", "actor", "action", "target", "changes", "request_id")
    list_filter = ("action", "store_slug")
    search_fields = ("store_slug", "actor", "target", "request_id")
    date_hierarchy = "created_at"
