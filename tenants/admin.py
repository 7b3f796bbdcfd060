"""Operator console: stores, their settings and keys. Creating a key shows it once; keys are revoked,
never edited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from tenants.models import ApiKey, Store, StoreSettings
from tenants.services import api_key_issue, api_key_revoke, store_update


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
    list_display = ("slug", "name", "currency", "is_active", "created_at", "dashboard_link")
    search_fields = ("slug", "name")
    inlines = [StoreSettingsInline, ApiKeyInline]
    actions = ["issue_api_key", "train_now", "toggle_network_sharing"]

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Store) -> str:
        return format_html(
            '<a href="{}">charts and runs</a>', reverse("admin:tenants_store_dashboard", args=[obj.pk])
        )

    def get_urls(self) -> list:
        own = [
            path("<int:store_id>/dashboard/", self.admin_site.admin_view(self.dashboard_view),
                 name="tenants_store_dashboard"),
            path("<int:store_id>/train/", self.admin_site.admin_view(self.train_view),
                 name="tenants_store_train"),
        ]  # fmt: skip
        return own + super().get_urls()

    def dashboard_view(self, request: HttpRequest, store_id: int) -> HttpResponse:
        from core.svg import bar_chart, line_chart
        from events.selectors import events_per_day
        from recommendations.selectors import trained_model_list, training_run_list

        store = get_object_or_404(Store, pk=store_id)
        versions = sorted(trained_model_list(store=store), key=lambda row: row["version"])
        quality = {
            "NDCG@10": [(f"v{r['version']}", float(r["metrics"].get("ndcg@10", 0))) for r in versions],
            "coverage": [(f"v{r['version']}", float(r["metrics"].get("coverage", 0))) for r in versions],
        }
        active = next((row for row in versions if row["is_active"]), None)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{store.slug}: dashboard",
            "store": store,
            "settings": StoreSettings.objects.get_or_create(store=store)[0],
            "events_chart": bar_chart(events_per_day(store=store), title="events per day (last 60 days)"),
            "quality_chart": line_chart(quality, title="hold-out quality per model version"),
            "runs": training_run_list(store=store),
            "versions": [
                {
                    **row,
                    "ndcg": row["metrics"].get("ndcg@10"),
                    "recall": row["metrics"].get("recall@10"),
                    "coverage": row["metrics"].get("coverage"),
                }
                for row in reversed(versions)
            ],  # fmt: skip
            "active": active,
            "active_ndcg": active["metrics"].get("ndcg@10") if active else None,
        }
        return TemplateResponse(request, "admin/tenants/store/dashboard.html", context)

    def train_view(self, request: HttpRequest, store_id: int) -> HttpResponse:
        from recommendations.admin import train_now

        if request.method == "POST":
            train_now(self, request, Store.objects.filter(pk=store_id))
        return redirect("admin:tenants_store_dashboard", store_id)

    @admin.action(description="Turn network sharing on or off")
    def toggle_network_sharing(self, request: HttpRequest, queryset: QuerySet[Store]) -> None:
        for store in queryset:
            current = StoreSettings.objects.get_or_create(store=store)[0].share_network
            store_update(store=store, data={"share_network": not current})
            messages.success(request, f"{store.slug}: network sharing {'off' if current else 'on'}.")

    @admin.action(description="Train now")
    def train_now(self, request: HttpRequest, queryset: QuerySet[Store]) -> None:
        from recommendations.admin import train_now

        train_now(self, request, queryset)

    def save_model(self, request: HttpRequest, obj: Store, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        StoreSettings.objects.get_or_create(store=obj)

    @admin.action(description="Issue a new API key (read, write, admin)")
    def issue_api_key(self, request: HttpRequest, queryset: QuerySet[Store]) -> None:
        for store in queryset:
            issued = api_key_issue(store=store, name="admin-issued")
            messages.warning(request, f"{store.slug}: new API key (shown once): {issued.raw_key}")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "store", "name", "scopes", "created_at", "last_used_at", "revoked_at")
    list_filter = ("store", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "store__slug")
    fields = ("store", "name", "scopes", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        base = ("prefix", "created_at", "last_used_at", "revoked_at")
        return base + ("store", "name", "scopes") if obj else base

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = api_key_issue(store=obj.store, name=obj.name, scopes=list(obj.scopes) or None)
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
