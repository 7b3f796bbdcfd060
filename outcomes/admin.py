"""Impressions, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from outcomes.models import Impression


@admin.register(Impression)
class ImpressionAdmin(admin.ModelAdmin):
    list_display = ("served_at", "store", "surface", "user_id", "source", "recommendation_id")
    list_filter = ("surface", "store")
    search_fields = ("recommendation_id", "user_id")
    date_hierarchy = "served_at"
    list_select_related = ("store",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
