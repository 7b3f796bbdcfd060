"""Products in the operator console, filtered by store."""

from django.contrib import admin

from catalog.models import Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("external_id", "store", "title", "brand", "price", "in_stock", "is_active", "updated_at")
    list_filter = ("store", "is_active", "in_stock")
    search_fields = ("external_id", "title", "brand")
    list_select_related = ("store",)
    show_full_result_count = False
    readonly_fields = ("store", "external_id", "created_at", "updated_at")
