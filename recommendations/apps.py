from django.apps import AppConfig


class RecommendationsConfig(AppConfig):
    name = "recommendations"

    def ready(self) -> None:
        from core import erasure
        from recommendations import services

        erasure.register("recommendations", order=20, erase_store=services.store_erase)
