from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"

    def ready(self) -> None:
        from core import erasure
        from events import selectors, services

        # events point at products: they go before the catalog
        erasure.register(
            "events",
            order=10,
            erase_shopper=services.shopper_erase,
            export_shopper=selectors.shopper_export,
            erase_store=services.store_erase,
        )
