from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    name = "exchange"
    verbose_name = "Exchange"

    def ready(self) -> None:
        from exchange import signals  # noqa: F401  (queues admin changes to the matching worker)
