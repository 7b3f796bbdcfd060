from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"

    def ready(self) -> None:
        from catalog import services
        from core import erasure

        # after events and models, which point at products
        erasure.register("catalog", order=30, erase_store=services.store_erase)
