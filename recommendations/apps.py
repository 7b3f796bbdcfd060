from django.apps import AppConfig


class RecommendationsConfig(AppConfig):
    name = "recommendations"

    def ready(self) -> None:
        from core import erasure, experiments
        from recommendations import selectors, services

        erasure.register("recommendations", order=20, erase_store=services.store_erase)
        experiments.register_version_check(selectors.model_version_problem)
