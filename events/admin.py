"""Events in the operator console: read-only, filtered by store."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from events.models import Event


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("timestamp", "store", "type", "user_id", "product", "quantity", "price", "channel")
    list_filter = ("store", "type", "channel")
    search_fields = ("user_id", "event_id")
    list_select_related = ("store", "product")
    show_full_result_count = False
    date_hierarchy = None
