"""Events in the operator console: read-only, filtered by store."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from events.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("timestamp", "store", "type", "user_id", "product", "quantity", "price", "channel")
    list_filter = ("store", "type", "channel")
    search_fields = ("user_id", "event_id")
    list_select_related = ("store", "product")
    show_full_result_count = False
    date_hierarchy = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
