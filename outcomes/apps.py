from django.apps import AppConfig


class OutcomesConfig(AppConfig):
    name = "outcomes"

    def ready(self) -> None:
        from core import erasure, experiments
        from outcomes import selectors, services
        from outcomes.experiments import plan_for

        experiments.register(plan_for)  # serving asks core which strategy a shopper gets

        erasure.register(
            "outcomes",
            order=5,
            erase_shopper=services.shopper_erase,
            export_shopper=selectors.shopper_export,
            erase_store=services.store_erase,
        )
