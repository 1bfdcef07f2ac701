from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Teams and API keys"

    def ready(self) -> None:
        from accounts import signals  # noqa: F401  (connects the key directory's receivers)
